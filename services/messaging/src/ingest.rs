//! Group commit: concurrent `IngestWebhook` calls share transactions.
//!
//! Each call parses its body, then submits it to a [`Batcher`]: a few committers each take
//! everything waiting, up to `max_batch`, and store it in one transaction; every caller gets its
//! own outcome only after that transaction committed. If a batch fails, its webhooks are retried
//! one by one so a single bad one cannot fail the others.
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wamesh_runtime::batch::{BatchConfig, Batcher};

use crate::grpc::EventSignal;
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

type Outcome = Result<IngestOutcome, Arc<StoreError>>;

/// The queue in front of the committers. Dropping every clone lets them drain and stop.
#[derive(Clone)]
pub struct Ingestor {
    batcher: Batcher<IncomingWebhook, Outcome>,
}

impl Ingestor {
    /// Starts the committer tasks; `signal` is rung after each commit (it may append events).
    pub fn start(store: Arc<dyn Store>, config: IngestConfig, signal: EventSignal) -> Self {
        let batch = BatchConfig {
            workers: config.committers,
            max_batch: config.max_batch,
            queue_capacity: config.queue_capacity,
        };
        let batcher = Batcher::start(batch, move |webhooks: Vec<IncomingWebhook>| {
            let (store, signal) = (store.clone(), signal.clone());
            async move {
                let outcomes = commit(&*store, webhooks).await;
                signal.committed();
                outcomes
            }
        });
        Self { batcher }
    }

    /// Stores one webhook; returns once its transaction committed (or failed).
    pub async fn ingest(&self, webhook: IncomingWebhook) -> Outcome {
        self.batcher
            .submit(webhook)
            .await
            .unwrap_or_else(|_| Err(Arc::new(StoreError::Unavailable(sqlx::Error::PoolClosed))))
    }
}

/// Stores one batch in one transaction, or, when that fails, each webhook on its own.
async fn commit(store: &dyn Store, batch: Vec<IncomingWebhook>) -> Vec<Outcome> {
    let started = Instant::now();
    match store.ingest(&batch, now_ms()).await {
        Ok(outcomes) => {
            record_batch(batch.len(), started, "ok");
            outcomes.into_iter().map(Ok).collect()
        }
        Err(e) if batch.len() > 1 => {
            record_batch(batch.len(), started, "retried");
            tracing::warn!(error = %e, size = batch.len(), "batch failed; storing its webhooks one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for webhook in &batch {
                let result = store.ingest(std::slice::from_ref(webhook), now_ms()).await;
                outcomes.push(result.map(|mut o| o.remove(0)).map_err(Arc::new));
            }
            outcomes
        }
        Err(e) => {
            record_batch(1, started, "failed");
            tracing::warn!(error = %e, "webhook could not be stored");
            vec![Err(Arc::new(e))]
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
