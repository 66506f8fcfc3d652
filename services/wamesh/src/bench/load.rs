//! A closed-loop load driver: N workers each run one operation after another for a duration;
//! what finishes during the warm-up is not counted.
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

    /// Adds another run of the same operation (its time and its latencies).
    pub fn add_run(&mut self, other: Measured) {
        self.elapsed += other.elapsed;
        self.merge(other);
        self.latencies.sort_unstable();
    }

    fn merge(&mut self, other: Measured) {
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
                    if began < measure_from {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            mine.ok += 1;
                            mine.latencies.push(began.elapsed());
                        }
                        Err(e) => {
                            mine.errors += 1;
                            if mine.error_samples.len() < 5 && !mine.error_samples.contains(&e) {
                                mine.error_samples.push(e);
                            }
                        }
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
    total.elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .max(Duration::from_millis(1));
    total
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
}
