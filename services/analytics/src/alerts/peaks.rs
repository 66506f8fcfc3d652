//! Recording rate-limit usage peaks from the usage the evaluator reads every second, without
//! slowing it: the highest usage seen per hour bucket and rate-limit bucket is kept in memory
//! and written at most every [`WRITE_EVERY_MS`], in a task of its own (one at a time), so a
//! slow or unreachable database never delays an evaluation. A failed write is logged, its
//! peaks go back to the pending ones, and the next write carries them. A usage no higher than
//! what this process already stored for the hour needs no write at all.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::BucketUsage;
use crate::rollup::{Buckets, Grain};
use crate::store::StoreError;
use crate::store::peaks::{PeakStore, UsagePeak};

/// At most one write per this long (each rate-limit bucket is written at most that often).
pub const WRITE_EVERY_MS: i64 = 10_000;

/// The most peaks kept waiting for a write (while the database is down); beyond, those of the
/// oldest hour buckets go first.
const MAX_PENDING: usize = 4_096;

/// How long the last write may take at shutdown.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// (hour bucket start, scope, key).
type PendingKey = (i64, String, String);

/// A write in flight: its peaks (to put back if it fails) and its task.
type Write = (Vec<UsagePeak>, JoinHandle<Result<(), StoreError>>);

pub struct PeakRecorder {
    store: Arc<dyn PeakStore>,
    buckets: Buckets,
    /// The highest usage seen per hour bucket and rate-limit bucket, not written yet.
    pending: BTreeMap<PendingKey, UsagePeak>,
    /// Per rate-limit bucket, the highest usage this process stored of the current hour
    /// bucket (and that hour): a usage no higher needs no write.
    stored: HashMap<(String, String), (i64, f64)>,
    writing: Option<Write>,
    last_write_ms: Option<i64>,
    /// Whether the last write failed, so an outage is logged when it begins and ends.
    failing: bool,
}

impl PeakRecorder {
    /// Records into `store`, with hour buckets as `buckets` says (the aggregation interval).
    pub fn new(store: Arc<dyn PeakStore>, buckets: Buckets) -> Self {
        Self {
            store,
            buckets,
            pending: BTreeMap::new(),
            stored: HashMap::new(),
            writing: None,
            last_write_ms: None,
            failing: false,
        }
    }

    /// Takes rate-limit's answer at `now_ms`: each bucket's usage, where it is a new high.
    pub fn observe(&mut self, now_ms: i64, usage: &[BucketUsage]) {
        let hour = self.buckets.start(Grain::Hour, now_ms);
        for bucket in usage {
            let seen = UsagePeak {
                scope: bucket.scope.clone(),
                key: bucket.key.clone(),
                usage_ratio: bucket.usage_ratio,
                at_ms: now_ms,
            };
            if !seen.is_usage() {
                continue;
            }
            let stored = self.stored.get(&(seen.scope.clone(), seen.key.clone()));
            if matches!(stored, Some((h, ratio)) if *h == hour && seen.usage_ratio <= *ratio) {
                continue;
            }
            self.keep((hour, seen.scope.clone(), seen.key.clone()), seen);
        }
    }

    /// Collects a finished write, and starts the next one when one is due (none in flight and
    /// [`WRITE_EVERY_MS`] since the last began). Never waits for the database.
    pub async fn poll(&mut self, now_ms: i64) {
        if self
            .writing
            .as_ref()
            .is_some_and(|(_, task)| task.is_finished())
        {
            self.settle().await;
        }
        let due = self
            .last_write_ms
            .is_none_or(|last| now_ms - last >= WRITE_EVERY_MS);
        if self.writing.is_some() || !due || self.pending.is_empty() {
            return;
        }
        let hour = self.buckets.start(Grain::Hour, now_ms);
        self.stored.retain(|_, (h, _)| *h == hour);
        let batch: Vec<UsagePeak> = std::mem::take(&mut self.pending).into_values().collect();
        let (store, buckets, written) = (self.store.clone(), self.buckets, batch.clone());
        let task = tokio::spawn(async move { store.record_peaks(buckets, &written).await });
        self.writing = Some((batch, task));
        self.last_write_ms = Some(now_ms);
    }

    /// Waits for the write in flight, if any, and takes its outcome.
    pub async fn settle(&mut self) {
        let Some((batch, task)) = self.writing.take() else {
            return;
        };
        let outcome = match task.await {
            Ok(outcome) => outcome.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the write task ended: {e}")),
        };
        match outcome {
            Ok(()) => {
                if self.failing {
                    tracing::info!("rate-limit usage peaks stored again");
                }
                self.failing = false;
                for peak in batch {
                    let hour = self.buckets.start(Grain::Hour, peak.at_ms);
                    let entry = self
                        .stored
                        .entry((peak.scope, peak.key))
                        .or_insert((hour, peak.usage_ratio));
                    if hour > entry.0 || (hour == entry.0 && peak.usage_ratio > entry.1) {
                        *entry = (hour, peak.usage_ratio);
                    }
                }
            }
            Err(error) => {
                if self.failing {
                    tracing::debug!(%error, "cannot store rate-limit usage peaks");
                } else {
                    tracing::warn!(%error, "cannot store rate-limit usage peaks; keeping them to try again");
                }
                self.failing = true;
                for peak in batch {
                    let hour = self.buckets.start(Grain::Hour, peak.at_ms);
                    self.keep((hour, peak.scope.clone(), peak.key.clone()), peak);
                }
            }
        }
    }

    /// At shutdown: waits for the write in flight, then writes what is pending, each for at
    /// most [`FINAL_WRITE`].
    pub async fn finish(mut self) {
        if tokio::time::timeout(FINAL_WRITE, self.settle())
            .await
            .is_err()
        {
            tracing::warn!("rate-limit usage peaks: the last write did not finish in time");
            return;
        }
        let batch: Vec<UsagePeak> = std::mem::take(&mut self.pending).into_values().collect();
        if batch.is_empty() {
            return;
        }
        match tokio::time::timeout(FINAL_WRITE, self.store.record_peaks(self.buckets, &batch)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot store the last rate-limit usage peaks")
            }
            Err(_) => {
                tracing::warn!("rate-limit usage peaks: the last write did not finish in time")
            }
        }
    }

    /// Keeps `peak` pending under `key` where it beats what is pending there.
    fn keep(&mut self, key: PendingKey, peak: UsagePeak) {
        match self.pending.get_mut(&key) {
            Some(kept) if peak.beats(kept) => *kept = peak,
            Some(_) => {}
            None => {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_first();
                }
                self.pending.insert(key, peak);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::store::Selection;

    const T0: i64 = 1_800_000_000_000;
    const SECOND: i64 = 1_000;
    const HOUR: i64 = 3_600_000;

    /// Keeps every batch it is given; refuses them while `down`.
    #[derive(Default)]
    struct Recorded {
        batches: Mutex<Vec<Vec<UsagePeak>>>,
        down: AtomicBool,
    }

    #[async_trait]
    impl PeakStore for Recorded {
        async fn record_peaks(&self, _: Buckets, batch: &[UsagePeak]) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
            }
            self.batches.lock().unwrap().push(batch.to_vec());
            Ok(())
        }

        async fn peaks(&self, _: &Selection, _: usize) -> Result<Vec<UsagePeak>, StoreError> {
            Ok(Vec::new())
        }
    }

    impl Recorded {
        /// Each batch as (key, usage, at) sorted.
        fn batches(&self) -> Vec<Vec<(String, f64, i64)>> {
            let batches = self.batches.lock().unwrap();
            batches
                .iter()
                .map(|b| {
                    let mut b: Vec<_> = b
                        .iter()
                        .map(|p| (p.key.clone(), p.usage_ratio, p.at_ms))
                        .collect();
                    b.sort_by(|x, y| x.0.cmp(&y.0).then(x.2.cmp(&y.2)));
                    b
                })
                .collect()
        }
    }

    fn usage(key: &str, usage_ratio: f64) -> BucketUsage {
        BucketUsage {
            scope: "waba".into(),
            key: key.into(),
            usage_ratio,
        }
    }

    /// One evaluation's worth: observe, start a write if due, and let it finish.
    async fn step(recorder: &mut PeakRecorder, at: i64, seen: &[BucketUsage]) {
        recorder.observe(at, seen);
        recorder.poll(at).await;
        recorder.settle().await;
    }

    fn recorder() -> (Arc<Recorded>, PeakRecorder) {
        let store = Arc::new(Recorded::default());
        let recorder = PeakRecorder::new(store.clone(), Buckets { interval_ms: HOUR });
        (store, recorder)
    }

    #[tokio::test]
    async fn writes_at_most_every_ten_seconds_the_highest_seen_meanwhile() {
        let (store, mut recorder) = recorder();
        step(&mut recorder, T0, &[usage("a", 0.5)]).await;
        // Within the next 10 s: nothing written, the highest of each bucket remembered.
        let seen = [0.6, 0.9, 0.7, 0.8, 0.1, 0.9, 0.2, 0.3, 0.4];
        for (i, ratio) in seen.into_iter().enumerate() {
            let at = T0 + (i as i64 + 1) * SECOND;
            step(&mut recorder, at, &[usage("a", ratio), usage("b", 0.3)]).await;
        }
        assert_eq!(store.batches().len(), 1);
        step(&mut recorder, T0 + 10 * SECOND, &[usage("a", 0.2)]).await;
        assert_eq!(
            store.batches(),
            [
                vec![("a".to_owned(), 0.5, T0)],
                vec![
                    ("a".to_owned(), 0.9, T0 + 2 * SECOND),
                    ("b".to_owned(), 0.3, T0 + SECOND),
                ],
            ],
            "the first time a peak was reached is kept"
        );
        // Nothing higher than what was stored of this hour: no more writes.
        for t in 11..40 {
            step(
                &mut recorder,
                T0 + t * SECOND,
                &[usage("a", 0.9), usage("b", 0.0)],
            )
            .await;
        }
        assert_eq!(store.batches().len(), 2);
        // A new hour bucket starts from nothing: its first usage is written.
        let next_hour = (T0 / HOUR + 1) * HOUR;
        step(&mut recorder, next_hour, &[usage("a", 0.1)]).await;
        assert_eq!(store.batches()[2], [("a".to_owned(), 0.1, next_hour)]);
    }

    #[tokio::test]
    async fn a_failed_write_is_kept_and_tried_again_with_what_came_since() {
        let (store, mut recorder) = recorder();
        store.down.store(true, Ordering::SeqCst);
        step(&mut recorder, T0, &[usage("a", 0.7)]).await;
        step(
            &mut recorder,
            T0 + 5 * SECOND,
            &[usage("a", 0.6), usage("b", 0.4)],
        )
        .await;
        assert!(store.batches().is_empty());
        store.down.store(false, Ordering::SeqCst);
        // Not before 10 s after the failed attempt.
        step(&mut recorder, T0 + 9 * SECOND, &[]).await;
        assert!(store.batches().is_empty());
        step(&mut recorder, T0 + 10 * SECOND, &[]).await;
        assert_eq!(
            store.batches(),
            [vec![
                ("a".to_owned(), 0.7, T0),
                ("b".to_owned(), 0.4, T0 + 5 * SECOND)
            ]]
        );
    }

    #[tokio::test]
    async fn what_is_pending_is_written_at_shutdown() {
        let (store, mut recorder) = recorder();
        step(&mut recorder, T0, &[usage("a", 0.5)]).await;
        step(&mut recorder, T0 + SECOND, &[usage("a", 0.8)]).await;
        recorder.finish().await;
        assert_eq!(
            store.batches()[1],
            [("a".to_owned(), 0.8, T0 + SECOND)],
            "written although 10 s had not passed"
        );
    }
}
