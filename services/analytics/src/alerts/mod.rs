//! Alerts: conditions judged continuously over the live window ([`crate::live`]) and over
//! rate-limit's buckets, fired and resolved with hysteresis, persisted ([`crate::store::alerts`])
//! and broadcast to `StreamAlerts` subscribers.
//!
//! - [`rule`]: the pure part: what a window or a bucket reads as, and when a reading fires or
//!   resolves an alert (threshold, resolve level, consecutive evaluations, minimum samples);
//! - [`evaluator`]: the task that judges every `eval_interval`, writes the changes to the store
//!   and publishes them, and its metrics;
//! - [`hub`]: the firing alerts and the broadcast of changes, read by the gRPC adapter;
//! - [`usage`]: asking rate-limit for its most used buckets; [`peaks`]: recording the highest
//!   usage of each into the store, per hour and day bucket;
//! - [`config`]: thresholds and intervals, validated; [`proto`]: the alerts' proto forms.
//!
//! Subjects: the error rate and the response time are judged over the whole window (it is
//! not split per business number), so their subject is always [`SUBJECT_ALL`]; a rate-limit
//! alert's subject is its bucket, `scope/key`. At most one alert per (kind, subject) fires at a
//! time, which the store enforces too.
mod config;
pub mod evaluator;
pub mod hub;
pub mod peaks;
mod proto;
pub mod rule;
pub mod usage;

pub use config::{AlertConfig, AlertConfigError};
pub use evaluator::Evaluator;
pub use hub::{AlertChange, Hub, Lagged};
pub use usage::{BucketUsage, RateLimitProbe};

use crate::error::AnalyticsError;

/// The subject of the alerts judged over the whole live window.
pub const SUBJECT_ALL: &str = "all";

/// How many alerts `ListAlerts` answers when the request says 0.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// The most `ListAlerts` answers at once.
pub const LIST_LIMIT_MAX: u32 = 1_000;

/// What an alert watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// Failed send attempts over send attempts in the live window.
    ErrorRate,
    /// The p95 of response times in the live window, ms.
    ResponseTime,
    /// A rate-limit bucket's usage ratio.
    RateLimit,
}

impl AlertKind {
    pub const ALL: [AlertKind; 3] = [Self::ErrorRate, Self::ResponseTime, Self::RateLimit];

    /// The stored name (and the `kind` label of metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ErrorRate => "error_rate",
            Self::ResponseTime => "response_time",
            Self::RateLimit => "rate_limit",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// An alert as stored: firing while `resolved_at_ms` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub id: i64,
    pub kind: AlertKind,
    /// [`SUBJECT_ALL`] or a rate-limit bucket (`scope/key`).
    pub subject: String,
    /// The reading that fired it.
    pub value: f64,
    /// The highest reading while it fired.
    pub peak: f64,
    /// The level it fired above.
    pub threshold: f64,
    pub fired_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    /// One sentence for people: what was seen, over what, against which threshold.
    pub summary: String,
}

impl Alert {
    pub fn is_firing(&self) -> bool {
        self.resolved_at_ms.is_none()
    }
}

/// An alert about to fire (the store gives it its id; its peak starts at its value).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert {
    pub kind: AlertKind,
    pub subject: String,
    pub value: f64,
    pub threshold: f64,
    pub fired_at_ms: i64,
    pub summary: String,
}

impl NewAlert {
    /// The stored alert, once the store named it `id`.
    pub fn stored(self, id: i64) -> Alert {
        Alert {
            id,
            kind: self.kind,
            subject: self.subject,
            value: self.value,
            peak: self.value,
            threshold: self.threshold,
            fired_at_ms: self.fired_at_ms,
            resolved_at_ms: None,
            summary: self.summary,
        }
    }
}

/// The number of alerts a `ListAlerts` request asks for: 0 means [`LIST_LIMIT_DEFAULT`], more
/// than [`LIST_LIMIT_MAX`] is refused.
pub fn list_limit(asked: u32) -> Result<u32, AnalyticsError> {
    match asked {
        0 => Ok(LIST_LIMIT_DEFAULT),
        n if n <= LIST_LIMIT_MAX => Ok(n),
        n => Err(AnalyticsError::InvalidArgument(format!(
            "limit: {n} is above the maximum of {LIST_LIMIT_MAX}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in AlertKind::ALL {
            assert_eq!(AlertKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AlertKind::parse("errors"), None);
    }

    #[test]
    fn the_list_limit_defaults_and_is_capped() {
        assert_eq!(list_limit(0).unwrap(), 100);
        assert_eq!(list_limit(1_000).unwrap(), 1_000);
        let refused = list_limit(1_001).unwrap_err().to_string();
        assert!(refused.starts_with("limit: "), "{refused}");
    }
}
