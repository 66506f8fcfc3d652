//! Group commit: concurrent `IngestWebhook` calls share transactions.
//!
//! Each call parses its body, then queues it (a bounded queue: when full, callers wait, which is
//! back-pressure, not loss). A few committer tasks each take everything that is waiting, up to
//! `max_batch`, and store it in one transaction; every caller gets its own outcome only after
//! that transaction committed. Under load a batch fills while the previous one commits, so the
//! cost of a commit is shared; at rest a lone webhook commits at once, with no added wait.
//! If a batch fails, its webhooks are retried one by one so a single bad one cannot fail the
//! others.
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::{IncomingWebhook, IngestOutcome, Store, StoreError};

/// How group commit is sized.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Transactions that may be in flight at once (1 for SQLite: it has one writer).
    pub committers: usize,
    /// Webhooks in one transaction at most.
    pub max_batch: usize,
    /// Webhooks waiting for a committer at most; beyond it callers wait.
    pub queue_capacity: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            committers: 2,
            max_batch: 256,
            queue_capacity: 4096,
        }
    }
}

type Reply = oneshot::Sender<Result<IngestOutcome, Arc<StoreError>>>;

/// The queue in front of the committers. Dropping every clone lets them drain and stop.
#[derive(Clone)]
pub struct Ingestor {
    queue: mpsc::Sender<(IncomingWebhook, Reply)>,
}

impl Ingestor {
    /// Starts the committer tasks.
    pub fn start(store: Arc<dyn Store>, config: IngestConfig) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..config.committers.max(1) {
            tokio::spawn(commit_loop(
                store.clone(),
                receiver.clone(),
                config.max_batch.max(1),
            ));
        }
        Self { queue }
    }

    /// Stores one webhook; returns once its transaction committed (or failed).
    pub async fn ingest(&self, webhook: IncomingWebhook) -> Result<IngestOutcome, Arc<StoreError>> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((webhook, reply))
            .await
            .map_err(|_| Arc::new(StoreError::Unavailable(sqlx::Error::PoolClosed)))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Unavailable(sqlx::Error::PoolClosed))))
    }
}

async fn commit_loop(
    store: Arc<dyn Store>,
    receiver: Arc<Mutex<mpsc::Receiver<(IncomingWebhook, Reply)>>>,
    max_batch: usize,
) {
    loop {
        let mut waiting = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut waiting, max_batch).await == 0 {
                return; // every sender is gone and the queue is drained
            }
        }
        let (batch, replies): (Vec<_>, Vec<_>) = waiting.into_iter().unzip();
        let started = Instant::now();
        match store.ingest(&batch, now_ms()).await {
            Ok(outcomes) => {
                record_batch(batch.len(), started, "ok");
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if batch.len() > 1 => {
                record_batch(batch.len(), started, "retried");
                tracing::warn!(error = %e, size = batch.len(), "batch failed; storing its webhooks one by one");
                for (webhook, reply) in batch.into_iter().zip(replies) {
                    let result = store.ingest(std::slice::from_ref(&webhook), now_ms()).await;
                    let _ = reply.send(result.map(|mut o| o.remove(0)).map_err(Arc::new));
                }
            }
            Err(e) => {
                record_batch(1, started, "failed");
                tracing::warn!(error = %e, "webhook could not be stored");
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn record_batch(size: usize, started: Instant, result: &'static str) {
    metrics::histogram!("wamesh_ingest_batch_size").record(size as f64);
    metrics::histogram!("wamesh_ingest_commit_seconds", "result" => result)
        .record(started.elapsed().as_secs_f64());
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
