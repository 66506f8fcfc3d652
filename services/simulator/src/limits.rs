//! Meta's sending limits as the simulator models them: a token bucket per business number
//! (throughput, 130429) and one per (business number, recipient) (pair rate, 131056). A send
//! takes one token of each, or, when either is short, none.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::GraphError;

/// Buckets kept at most before the full ones are forgotten (a full bucket is as good as none).
const MAX_BUCKETS: usize = 10_000;

/// How fast Meta lets a business send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendLimits {
    /// Messages per second per business number (Meta: 80 by default, 1,000 upgraded).
    pub throughput_per_s: f64,
    /// Messages a number may send at once (Meta: about a second's worth).
    pub throughput_burst: f64,
    /// Messages to one recipient in a burst (Meta: up to 45).
    pub pair_burst: f64,
    /// One more message to the same recipient every this long (Meta: about 6 s).
    pub pair_interval: Duration,
}

impl Default for SendLimits {
    fn default() -> Self {
        Self {
            throughput_per_s: 80.0,
            throughput_burst: 80.0,
            pair_burst: 45.0,
            pair_interval: Duration::from_secs(6),
        }
    }
}

impl SendLimits {
    /// Checks every value is positive; the error names the first that is not.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("throughput_per_s", self.throughput_per_s),
            ("throughput_burst", self.throughput_burst),
            ("pair_burst", self.pair_burst),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{name} must be a positive number, not {value}"));
            }
        }
        if self.pair_interval.is_zero() {
            return Err("pair_interval must be longer than 0".to_owned());
        }
        Ok(())
    }
}

/// One bucket, with its own capacity and refill rate (tokens per second).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    capacity: f64,
    rate: f64,
}

impl Bucket {
    fn full(capacity: f64, rate: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            at: now,
            capacity,
            rate,
        }
    }

    fn level(&self, now: Instant) -> f64 {
        (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.capacity)
    }
}

/// The buckets of every number and pair.
#[derive(Debug)]
pub struct Limiter {
    inner: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    limits: SendLimits,
    buckets: HashMap<String, Bucket>,
}

impl Limiter {
    pub fn new(limits: SendLimits) -> Self {
        Self {
            inner: Mutex::new(Buckets {
                limits,
                buckets: HashMap::new(),
            }),
        }
    }

    pub fn limits(&self) -> SendLimits {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).limits
    }

    /// New limits, and every bucket full again under them (a clean start, as after a restart).
    pub fn set_limits(&self, limits: SendLimits) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.limits != limits {
            inner.limits = limits;
            inner.buckets.clear();
        }
    }

    /// Takes one send of `phone_number_id` to `wa_id`, or answers Meta's error.
    pub fn take(&self, phone_number_id: &str, wa_id: &str) -> Result<(), GraphError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let limits = inner.limits;
        let buckets = &mut inner.buckets;
        let current = |key: String, capacity: f64, rate: f64| {
            let bucket = buckets
                .get(&key)
                .copied()
                .unwrap_or_else(|| Bucket::full(capacity, rate, now));
            (key, bucket)
        };
        let number = current(
            format!("n:{phone_number_id}"),
            limits.throughput_burst,
            limits.throughput_per_s,
        );
        let pair = current(
            format!("p:{phone_number_id}:{wa_id}"),
            limits.pair_burst,
            1.0 / limits.pair_interval.as_secs_f64().max(f64::MIN_POSITIVE),
        );
        if number.1.level(now) < 1.0 {
            return Err(GraphError::throughput());
        }
        if pair.1.level(now) < 1.0 {
            return Err(GraphError::pair_rate());
        }
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| b.level(now) < b.capacity);
        }
        for (key, bucket) in [number, pair] {
            let tokens = bucket.level(now) - 1.0;
            buckets.insert(
                key,
                Bucket {
                    tokens,
                    at: now,
                    ..bucket
                },
            );
        }
        Ok(())
    }
}
