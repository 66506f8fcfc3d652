//! What the alerts are judged against, and how often, checked at load.
use std::time::Duration;

use crate::LIVE_WINDOW_MS;

/// Thresholds, the evaluation interval, the live window and where rate-limit is.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertConfig {
    /// Failed / attempted sends above which ERROR_RATE fires, in (0, 1)
    /// (`MONITORING_ERROR_RATE_THRESHOLD`, default 0.05).
    pub error_rate_threshold: f64,
    /// p95 response time above which RESPONSE_TIME fires, ms, at least 1
    /// (`MONITORING_RESPONSE_TIME_THRESHOLD`, default 3000).
    pub response_time_threshold_ms: u64,
    /// A bucket's usage ratio at or above which RATE_LIMIT fires, in (0, 1]
    /// (`MONITORING_RATE_LIMIT_WARNING`, default 0.8: the level rate-limit flags too).
    pub rate_limit_warning: f64,
    /// How often the conditions are judged (`ANALYTICS_ALERT_INTERVAL`, default 1 s; from
    /// 50 ms up to the window).
    pub eval_interval: Duration,
    /// How far back the live window reaches (`ANALYTICS_LIVE_WINDOW`, default 5 min; from 5 s,
    /// the width of one of its slots, up to an hour).
    pub window: Duration,
    /// rate-limit's gRPC address (`WAMESH_RATELIMIT_URL`); `None`: no RATE_LIMIT alerts.
    pub ratelimit_url: Option<String>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            error_rate_threshold: 0.05,
            response_time_threshold_ms: 3_000,
            rate_limit_warning: 0.8,
            eval_interval: Duration::from_secs(1),
            window: Duration::from_millis(LIVE_WINDOW_MS as u64),
            ratelimit_url: None,
        }
    }
}

/// Why an [`AlertConfig`] was refused, each naming its setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertConfigError {
    #[error("MONITORING_ERROR_RATE_THRESHOLD: {0} must be above 0 and below 1 (e.g. 0.05)")]
    ErrorRateThreshold(f64),
    #[error("MONITORING_RESPONSE_TIME_THRESHOLD: must be at least 1 ms (e.g. 3000)")]
    ResponseTimeThreshold,
    #[error("MONITORING_RATE_LIMIT_WARNING: {0} must be above 0 and at most 1 (e.g. 0.8)")]
    RateLimitWarning(f64),
    #[error("ANALYTICS_LIVE_WINDOW: {0:?} must be from 5s to 1h")]
    Window(Duration),
    #[error("ANALYTICS_ALERT_INTERVAL: {0:?} must be at least 50ms and at most the live window")]
    EvalInterval(Duration),
    #[error("WAMESH_RATELIMIT_URL: {0:?} is not an http:// or https:// URL")]
    RateLimitUrl(String),
}

impl AlertConfig {
    /// The shortest live window: one of its 5-second slots.
    pub const MIN_WINDOW: Duration = Duration::from_secs(5);
    pub const MAX_WINDOW: Duration = Duration::from_secs(3_600);
    pub const MIN_EVAL_INTERVAL: Duration = Duration::from_millis(50);

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), AlertConfigError> {
        let e = self.error_rate_threshold;
        if !(e > 0.0 && e < 1.0) {
            return Err(AlertConfigError::ErrorRateThreshold(e));
        }
        if self.response_time_threshold_ms == 0 {
            return Err(AlertConfigError::ResponseTimeThreshold);
        }
        let w = self.rate_limit_warning;
        if !(w > 0.0 && w <= 1.0) {
            return Err(AlertConfigError::RateLimitWarning(w));
        }
        if !(Self::MIN_WINDOW..=Self::MAX_WINDOW).contains(&self.window) {
            return Err(AlertConfigError::Window(self.window));
        }
        if !(Self::MIN_EVAL_INTERVAL..=self.window).contains(&self.eval_interval) {
            return Err(AlertConfigError::EvalInterval(self.eval_interval));
        }
        if let Some(url) = &self.ratelimit_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || tonic::transport::Endpoint::from_shared(url.clone()).is_err() {
                return Err(AlertConfigError::RateLimitUrl(url.clone()));
            }
        }
        Ok(())
    }

    /// The live window in ms.
    pub fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One change to a valid config.
    type Change = fn(&mut AlertConfig);

    fn refused(change: Change) -> String {
        let mut config = AlertConfig::default();
        change(&mut config);
        config.validate().expect_err("refused").to_string()
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(AlertConfig::default().validate(), Ok(()));
        let with_url = AlertConfig {
            ratelimit_url: Some("http://ratelimit:50052".into()),
            ..AlertConfig::default()
        };
        assert_eq!(with_url.validate(), Ok(()));
    }

    #[test]
    fn each_bad_value_is_refused_naming_its_setting() {
        let error_rate = "MONITORING_ERROR_RATE_THRESHOLD";
        let cases: [(&str, Change); 9] = [
            (error_rate, |c| c.error_rate_threshold = 0.0),
            (error_rate, |c| c.error_rate_threshold = 1.0),
            (error_rate, |c| c.error_rate_threshold = f64::NAN),
            ("MONITORING_RESPONSE_TIME_THRESHOLD", |c| {
                c.response_time_threshold_ms = 0;
            }),
            ("MONITORING_RATE_LIMIT_WARNING", |c| {
                c.rate_limit_warning = 1.5
            }),
            ("ANALYTICS_LIVE_WINDOW", |c| {
                c.window = Duration::from_secs(1)
            }),
            ("ANALYTICS_ALERT_INTERVAL", |c| {
                c.eval_interval = Duration::from_millis(10);
            }),
            ("ANALYTICS_ALERT_INTERVAL", |c| {
                c.eval_interval = Duration::from_secs(600);
            }),
            ("WAMESH_RATELIMIT_URL", |c| {
                c.ratelimit_url = Some("ratelimit:50052".into());
            }),
        ];
        for (setting, change) in cases {
            let message = refused(change);
            assert!(message.starts_with(setting), "{setting}: {message}");
        }
    }
}
