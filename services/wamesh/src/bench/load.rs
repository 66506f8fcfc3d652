//! Load drivers: [`drive`], closed loop (N workers each run one operation after another for a
//! duration; what finishes during the warm-up is not counted), and [`pace`], open loop (one
//! operation started every 1/rate s, whatever the answers do).
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How every benchmark loads what it measures and its baseline.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Clients, each doing one operation after another.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration)]
    pub warmup: Duration,
    /// The duration is split into this many alternating rounds of the measured path and its
    /// baseline, so that the machine's drift (large on shared hardware) weighs on both alike.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
}

/// What a run measured (after the warm-up).
#[derive(Debug, Default)]
pub struct Measured {
    /// Operations started, the warm-up's included (what the CPU spent over a run paid for).
    pub started: u64,
    pub ok: u64,
    pub errors: u64,
    /// The first few distinct error messages, to print.
    pub error_samples: Vec<String>,
    /// Latency of every successful operation, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The q-quantile (0..=1) of the latencies, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index].as_secs_f64() * 1000.0
    }

    /// The share of successful operations slower than `limit`.
    pub fn share_over(&self, limit: Duration) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        self.latencies.iter().filter(|l| **l > limit).count() as f64 / self.latencies.len() as f64
    }

    /// Counts one operation that took `took`: its latency when it succeeded, its error (the
    /// first few distinct ones kept to print) when not.
    pub fn record(&mut self, took: Duration, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push(took);
            }
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < 5 && !self.error_samples.contains(&e) {
                    self.error_samples.push(e);
                }
            }
        }
    }

    /// Adds another run of the same operation (its time and its latencies).
    pub fn add_run(&mut self, other: Measured) {
        self.elapsed += other.elapsed;
        self.merge(other);
        self.latencies.sort_unstable();
    }

    fn merge(&mut self, other: Measured) {
        self.started += other.started;
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        for sample in other.error_samples {
            if self.error_samples.len() < 5 && !self.error_samples.contains(&sample) {
                self.error_samples.push(sample);
            }
        }
    }
}

/// Runs `op(sequence_number)` from `concurrency` workers for `warmup + duration`.
pub async fn drive<F, Fut>(
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Measured
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let sequence = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (op, sequence) = (op.clone(), sequence.clone());
            tokio::spawn(async move {
                let mut mine = Measured::default();
                while Instant::now() < end {
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let began = Instant::now();
                    let result = op(n).await;
                    if began >= measure_from {
                        mine.record(began.elapsed(), result);
                    }
                }
                mine
            })
        })
        .collect();
    let mut total = Measured::default();
    for worker in workers {
        if let Ok(measured) = worker.await {
            total.merge(measured);
        }
    }
    total.latencies.sort_unstable();
    total.started = sequence.load(Ordering::Relaxed);
    total.elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .max(Duration::from_millis(1));
    total
}

/// Starts `op(n)` for n = 0, 1, ... `total - 1`, one every 1/`rate` s (open loop: a slow
/// answer does not delay the next start), at most `max_in_flight` at once; answers each
/// operation's n, how long it took and its result, in the order started.
pub async fn pace<F, Fut, T>(
    rate: f64,
    total: u64,
    max_in_flight: usize,
    op: F,
) -> Vec<(u64, Duration, T)>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let limit = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let start = tokio::time::Instant::now();
    let mut started = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let operation = op(n);
        started.push(tokio::spawn(async move {
            let _permit = permit;
            let began = Instant::now();
            let result = operation.await;
            (n, began.elapsed(), result)
        }));
    }
    let mut done = Vec::with_capacity(started.len());
    for operation in started {
        if let Ok(finished) = operation.await {
            done.push(finished);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_successes_and_errors_after_the_warmup() {
        let m = drive(
            4,
            Duration::from_millis(20),
            Duration::from_millis(100),
            |n| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if n % 2 == 0 {
                    Ok(())
                } else {
                    Err("odd".to_owned())
                }
            },
        )
        .await;
        assert!(m.ok > 0 && m.errors > 0);
        assert_eq!(m.latencies.len() as u64, m.ok);
        assert_eq!(m.error_samples, vec!["odd".to_owned()]);
        assert!(m.quantile_ms(0.5) >= 1.0);
        assert!(m.elapsed >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn pace_starts_at_the_rate_without_waiting_for_answers() {
        let started = Instant::now();
        // 20 operations at 200/s, each taking 50 ms: open loop, so about 0.1 s + 50 ms in all,
        // never 20 × 50 ms.
        let done = pace(200.0, 20, 64, |n| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            n * 2
        })
        .await;
        let ns: Vec<u64> = done.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(ns, (0..20).collect::<Vec<_>>());
        assert!(
            done.iter()
                .all(|(n, took, doubled)| *doubled == n * 2 && *took >= Duration::from_millis(50))
        );
        assert!(
            started.elapsed() >= Duration::from_millis(95),
            "paced, not all at once"
        );
    }
}
