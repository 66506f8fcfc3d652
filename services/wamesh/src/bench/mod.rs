//! Benchmarks. Each one measures wamesh and a baseline in the same run, on the same machine,
//! at the same concurrency, prints both and their ratio, and ends with one JSON line holding at
//! least `name`, `throughput_per_s`, `baseline_per_s`, `ratio`, `p50_ms` and `p99_ms`.
pub mod analytics;
mod cpu;
pub mod ingest;
mod load;
pub mod ratelimit;
mod scratch;
pub mod send;

pub use load::{LoadArgs, Measured, drive, pace};

/// Rounds to two decimals, for the JSON summary.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The figures every bench reports: the measured path against its baseline.
pub struct Comparison {
    pub throughput: f64,
    pub baseline: f64,
    pub ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Comparison {
    pub fn of(measured: &Measured, baseline: &Measured) -> Self {
        let (throughput, baseline) = (measured.per_second(), baseline.per_second());
        Self {
            throughput,
            baseline,
            ratio: throughput / baseline.max(1e-9),
            p50_ms: measured.quantile_ms(0.5),
            p99_ms: measured.quantile_ms(0.99),
            max_ms: measured.quantile_ms(1.0),
        }
    }

    /// The JSON summary line: `name`, these figures, the load's shape and the bench's own
    /// `extra` fields (an object).
    pub fn json_line(&self, name: &str, load: &LoadArgs, extra: serde_json::Value) -> String {
        let mut line = serde_json::json!({
            "name": name,
            "throughput_per_s": round(self.throughput),
            "baseline_per_s": round(self.baseline),
            "ratio": round(self.ratio),
            "p50_ms": round(self.p50_ms),
            "p99_ms": round(self.p99_ms),
            "max_ms": round(self.max_ms),
            "concurrency": load.concurrency,
            "duration_s": load.duration.as_secs_f64(),
            "rounds": load.rounds.max(1),
        });
        if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
            line.extend(extra);
        }
        line.to_string()
    }
}
