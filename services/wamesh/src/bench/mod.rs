//! Benchmarks. Each one measures wamesh and a baseline in the same run, on the same machine,
//! at the same concurrency, prints both and their ratio, and ends with one JSON line holding at
//! least `name`, `throughput_per_s`, `baseline_per_s`, `ratio`, `p50_ms` and `p99_ms`.
pub mod ingest;
mod load;
pub mod ratelimit;

pub use load::{LoadArgs, Measured, drive};

/// Rounds to two decimals, for the JSON summary.
pub fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
