//! What a decision is about, independent of where buckets live: policies, the buckets of one
//! request with their policy resolved, and the answers. Both backends compute the same numbers
//! from these (the conformance suite holds them to it).
use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch: the one clock unit (Redis `TIME` gives microseconds).
pub type Micros = u64;

/// How a bucket limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Policy {
    /// Up to `capacity` tokens, refilled continuously at `refill_per_second`.
    TokenBucket {
        capacity: f64,
        refill_per_second: f64,
    },
    /// At most `limit` distinct members over a moving window; 0 is unlimited.
    DistinctWindow { limit: u64, window_ms: u64 },
}

impl Policy {
    /// Why a policy cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Self::TokenBucket {
                capacity,
                refill_per_second,
            } => {
                if !(capacity.is_finite() && capacity > 0.0) {
                    return Err(format!(
                        "capacity must be a positive number, not {capacity}"
                    ));
                }
                if !(refill_per_second.is_finite() && refill_per_second > 0.0) {
                    return Err(format!(
                        "refill_per_second must be a positive number, not {refill_per_second}"
                    ));
                }
            }
            Self::DistinctWindow { window_ms, .. } => {
                if window_ms == 0 {
                    return Err("window_ms must be above 0".into());
                }
            }
        }
        Ok(())
    }

    /// The capacity a response reports: tokens, or members (infinite when unlimited).
    pub fn capacity(&self) -> f64 {
        match *self {
            Self::TokenBucket { capacity, .. } => capacity,
            Self::DistinctWindow { limit: 0, .. } => f64::INFINITY,
            Self::DistinctWindow { limit, .. } => limit as f64,
        }
    }

    /// The same policy with its limits divided among `replicas` (the local fallback).
    pub fn share(&self, replicas: u32) -> Self {
        let n = f64::from(replicas.max(1));
        match *self {
            Self::TokenBucket {
                capacity,
                refill_per_second,
            } => Self::TokenBucket {
                capacity: capacity / n,
                refill_per_second: refill_per_second / n,
            },
            Self::DistinctWindow {
                limit: 0,
                window_ms,
            } => Self::DistinctWindow {
                limit: 0,
                window_ms,
            },
            Self::DistinctWindow { limit, window_ms } => Self::DistinctWindow {
                limit: (limit / u64::from(replicas.max(1))).max(1),
                window_ms,
            },
        }
    }
}

/// One bucket of a request, with the policy that applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub key: String,
    pub policy: Policy,
    /// Tokens to take (token buckets; 0 only checks).
    pub cost: f64,
    /// The member to count (distinct windows).
    pub member: String,
    /// Distinct windows: report without admitting the member.
    pub check_only: bool,
}

/// One bucket's state after a decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub key: String,
    /// Tokens left, or members that can still be added.
    pub remaining: f64,
    pub capacity: f64,
    /// This bucket alone would deny the request.
    pub limiting: bool,
    /// When this bucket alone would admit the request (0: now).
    pub retry_after_us: Micros,
    /// Closed by a penalty until then (0: not held).
    pub held_until_us: Micros,
}

/// The answer to one acquire: all buckets debited, or none.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// When denied: the wait until the whole request would succeed (the longest of its buckets).
    pub retry_after_us: Micros,
    pub levels: Vec<Level>,
}

impl Decision {
    /// Builds the decision from each bucket's level.
    pub fn from_levels(levels: Vec<Level>) -> Self {
        let allowed = levels.iter().all(|l| !l.limiting);
        let retry_after_us = if allowed {
            0
        } else {
            levels.iter().map(|l| l.retry_after_us).max().unwrap_or(0)
        };
        Self {
            allowed,
            retry_after_us,
            levels,
        }
    }
}

/// How full one bucket is, for usage reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    pub scope: String,
    pub key: String,
    /// In use: capacity - remaining.
    pub level: f64,
    pub capacity: f64,
    /// Until full again (token buckets) or empty (distinct windows).
    pub time_to_full_us: Micros,
    pub held_until_us: Micros,
}

impl Usage {
    /// level / capacity, 0..=1 (0 for unlimited windows).
    pub fn ratio(&self) -> f64 {
        if self.capacity.is_finite() && self.capacity > 0.0 {
            (self.level / self.capacity).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

/// A bucket that exists in the backend (seen by a scan for the most used).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId {
    pub scope: String,
    pub key: String,
}

/// The token bucket arithmetic both backends follow (the Redis script mirrors it line by line).
pub mod token_bucket {
    use super::Micros;

    /// The level at `now` of a bucket last left at `tokens` at `at` (`at` later than `now`
    /// means held by a penalty: no refill before `at`).
    pub fn level(tokens: f64, at: Micros, now: Micros, capacity: f64, rate: f64) -> f64 {
        if now <= at {
            return tokens.min(capacity);
        }
        (tokens + (now - at) as f64 * rate / 1e6).min(capacity)
    }

    /// Microseconds from `now` until `cost` tokens are there, rounded up (0 if they are).
    pub fn wait(
        tokens: f64,
        at: Micros,
        now: Micros,
        capacity: f64,
        rate: f64,
        cost: f64,
    ) -> Micros {
        let start = now.max(at);
        let from = level(tokens, at, start, capacity, rate);
        if from >= cost {
            return start - now;
        }
        // More than the bucket holds never comes (the limiter refuses such requests).
        if cost > capacity {
            return Micros::MAX;
        }
        let mut ready = start + ((cost - from) * 1e6 / rate).ceil() as Micros;
        // Rounding may leave the level a hair short at `ready`: then it is there 1 µs later.
        // The bound only matters where doubles stop counting single µs (as in bucket.lua).
        for _ in 0..1000 {
            if level(tokens, at, ready, capacity, rate) >= cost {
                break;
            }
            ready += 1;
        }
        ready - now
    }

    /// Microseconds until a bucket at `level` is full again.
    pub fn time_to_full(level: f64, capacity: f64, rate: f64) -> Micros {
        ((capacity - level).max(0.0) * 1e6 / rate).ceil() as Micros
    }
}

#[cfg(test)]
mod tests {
    use super::token_bucket::{level, wait};
    use super::*;

    #[test]
    fn a_bucket_refills_continuously_up_to_its_capacity() {
        assert_eq!(level(0.0, 1_000_000, 1_500_000, 10.0, 4.0), 2.0);
        assert_eq!(level(9.0, 0, 10_000_000, 10.0, 4.0), 10.0);
        assert_eq!(level(0.25, 0, 0, 10.0, 4.0), 0.25, "fractions are kept");
    }

    #[test]
    fn the_wait_is_until_the_tokens_are_there_and_a_hold_comes_first() {
        // 1 token short at 4/s: 250 ms.
        assert_eq!(wait(0.0, 0, 0, 10.0, 4.0, 1.0), 250_000);
        // Held for another second, then empty: the hold, then the refill.
        assert_eq!(wait(0.0, 2_000_000, 1_000_000, 10.0, 4.0, 1.0), 1_250_000);
        assert_eq!(wait(5.0, 0, 0, 10.0, 4.0, 1.0), 0);
        // 1/3 token short at 1/s: 333,334 µs, rounded up so the bucket has it then.
        assert_eq!(wait(2.0 / 3.0, 0, 0, 10.0, 1.0, 1.0), 333_334);
        assert_eq!(
            wait(0.5, 0, 0, 1.0, 1.0, 2.0),
            Micros::MAX,
            "more than the capacity"
        );
    }

    #[test]
    fn policies_say_what_is_wrong_with_them() {
        let bad = Policy::TokenBucket {
            capacity: 0.0,
            refill_per_second: 1.0,
        };
        assert!(bad.check().unwrap_err().contains("capacity"));
        let bad = Policy::DistinctWindow {
            limit: 5,
            window_ms: 0,
        };
        assert!(bad.check().unwrap_err().contains("window_ms"));
    }

    #[test]
    fn a_decision_waits_for_its_slowest_bucket() {
        let level = |key: &str, limiting, retry_after_us| Level {
            key: key.into(),
            remaining: 0.0,
            capacity: 1.0,
            limiting,
            retry_after_us,
            held_until_us: 0,
        };
        let d = Decision::from_levels(vec![
            level("a", true, 5),
            level("b", true, 9),
            level("c", false, 0),
        ]);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, 9);
        assert!(Decision::from_levels(vec![level("a", false, 0)]).allowed);
    }
}
