//! Batching concurrent calls: group commit in messaging, forwarding in the gateway.
//!
//! Callers [`Batcher::submit`] one item each and wait for its own result. A few worker tasks
//! each take everything waiting (up to `max_batch`), let the ready tasks run once (so callers
//! about to submit join in), and hand it all to the handler in one go, so under load the cost of
//! a round trip or a commit is shared; at rest a lone item goes after that one scheduler pass,
//! with no timed wait. The queue is bounded: when it is full callers wait (back-pressure, not
//! loss). Dropping every clone of the batcher lets the workers finish what is queued and stop.
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// How a batcher is sized.
#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    /// Batches in flight at once.
    pub workers: usize,
    /// Items in one batch at most.
    pub max_batch: usize,
    /// Items waiting for a worker at most; beyond it callers wait.
    pub queue_capacity: usize,
}

type Job<T, R> = (T, oneshot::Sender<R>);

/// The queue in front of the workers.
pub struct Batcher<T, R> {
    queue: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// Why an item got no result: the batcher's workers are gone (shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct Stopped;

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the workers. `handle` gets each batch and must answer one result per item, in
    /// order.
    pub fn start<H, F>(config: BatchConfig, handle: H) -> Self
    where
        H: Fn(Vec<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..config.workers.max(1) {
            tokio::spawn(work(
                receiver.clone(),
                config.max_batch.max(1),
                handle.clone(),
            ));
        }
        Self { queue }
    }

    /// Queues one item and waits for its result.
    pub async fn submit(&self, item: T) -> Result<R, Stopped> {
        let (reply, result) = oneshot::channel();
        self.queue.send((item, reply)).await.map_err(|_| Stopped)?;
        result.await.map_err(|_| Stopped)
    }
}

async fn work<T, R, H, F>(
    receiver: Arc<Mutex<mpsc::Receiver<Job<T, R>>>>,
    max_batch: usize,
    handle: H,
) where
    H: Fn(Vec<T>) -> F,
    F: Future<Output = Vec<R>>,
{
    loop {
        let mut waiting = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut waiting, max_batch).await == 0 {
                return; // every sender is gone and the queue is drained
            }
            // Let the tasks that are ready run once first: callers about to submit join this
            // batch instead of the next one (fewer, fuller batches, for one scheduler pass).
            tokio::task::yield_now().await;
            while waiting.len() < max_batch {
                match receiver.try_recv() {
                    Ok(job) => waiting.push(job),
                    Err(_) => break,
                }
            }
        }
        let (items, replies): (Vec<T>, Vec<_>) = waiting.into_iter().unzip();
        for (reply, result) in replies.into_iter().zip(handle(items).await) {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_batches_and_each_gets_its_own_result() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let batcher = Batcher::start(
            BatchConfig {
                workers: 1,
                max_batch: 100,
                queue_capacity: 100,
            },
            move |items: Vec<u32>| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::task::yield_now().await;
                    items.into_iter().map(|n| n * 2).collect()
                }
            },
        );
        let results = futures::future::join_all((0..50).map(|n| {
            let batcher = batcher.clone();
            async move { batcher.submit(n).await.unwrap() }
        }))
        .await;
        assert_eq!(results, (0..50).map(|n| n * 2).collect::<Vec<_>>());
        assert!(batches.load(Ordering::SeqCst) < 50, "items were batched");
    }

    #[tokio::test]
    async fn a_lone_item_goes_at_once_and_a_stopped_batcher_says_so() {
        let batcher = Batcher::start(
            BatchConfig {
                workers: 2,
                max_batch: 8,
                queue_capacity: 8,
            },
            |items: Vec<&'static str>| async move { items },
        );
        assert_eq!(batcher.submit("one").await, Ok("one"));
        let (queue, receiver) = mpsc::channel::<Job<u8, u8>>(1);
        drop(receiver); // as when the workers are gone
        assert_eq!(Batcher { queue }.submit(1).await, Err(Stopped));
    }
}
