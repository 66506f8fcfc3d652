//! The behaviour knobs: how Meta answers (latency, transient errors, lost answers), when
//! statuses follow (and whether `read` does), the 24-hour window, who cannot receive, where
//! webhooks go and how they are batched and retried. Set at start, read and changed at run time
//! through `GET/POST /_sim/config` (a POST changes only the fields it names, all of them
//! checked before any is applied: a bad value changes nothing).
use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::json;
use wamesh_runtime::Secret;

use crate::SimState;
use crate::error::GraphError;
use crate::limits::SendLimits;

/// How the simulated Meta behaves towards a send. The default answers at once and sends every
/// status at once (tests and benches); `wamesh simulator` and `wamesh dev` default to delays a
/// person can watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Every `/messages` answer waits this long (after the send was recorded, so a status
    /// webhook may arrive before the answer, as it can from Meta).
    pub latency: Duration,
    /// Plus a uniformly random extra of up to this.
    pub latency_jitter: Duration,
    /// The share (0 to 1) of sends answered with a transient error instead: nothing accepted.
    pub error_rate: f64,
    /// That error's code (Meta's "Something went wrong": 131000) and HTTP status.
    pub error_code: i64,
    pub error_http_status: u16,
    /// The share (0 to 1) of accepted sends whose answer is lost: the message IS accepted,
    /// recorded and its statuses follow, but the connection closes without an answer.
    pub drop_rate: f64,
    /// When each status follows the acceptance (later ones never before earlier ones).
    pub sent_after: Duration,
    pub delivered_after: Duration,
    pub read_after: Duration,
    /// The share (0 to 1) of delivered messages that are also read.
    pub read_probability: f64,
    /// The customer service window (Meta: 24 hours).
    pub window: Duration,
    /// Off: free-form messages are delivered whether a window is open or not (load tests).
    pub enforce_window: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            error_rate: 0.0,
            error_code: 131000,
            error_http_status: 500,
            drop_rate: 0.0,
            sent_after: Duration::ZERO,
            delivered_after: Duration::ZERO,
            read_after: Duration::ZERO,
            read_probability: 1.0,
            window: Duration::from_secs(24 * 3600),
            enforce_window: true,
        }
    }
}

impl Behaviour {
    /// Checks every value; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
            ("read_probability", self.read_probability),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} must be between 0 and 1, not {value}"));
            }
        }
        if !(400..=599).contains(&self.error_http_status) {
            return Err(format!(
                "error_http_status must be an HTTP error status (400 to 599), not {}",
                self.error_http_status
            ));
        }
        if self.error_code <= 0 {
            return Err(format!(
                "error_code must be a positive Meta error code, not {}",
                self.error_code
            ));
        }
        Ok(())
    }

    /// This answer's delay: the latency plus its random jitter.
    pub fn answer_delay(&self) -> Duration {
        if self.latency_jitter.is_zero() {
            return self.latency;
        }
        self.latency + self.latency_jitter.mul_f64(rand::random::<f64>())
    }
}

/// Where status and message webhooks go, signed with the app secret.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookTarget {
    /// e.g. `http://127.0.0.1:8080/api/webhooks/whatsapp`.
    pub url: String,
    pub app_secret: Secret,
}

impl WebhookTarget {
    /// Checks the URL is http(s) and the secret not empty.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("webhook_url {:?} is not a URL: {e}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("webhook_url {:?} must be http or https", self.url));
        }
        if self.app_secret.is_empty() {
            return Err("the webhook needs an app secret to sign with".to_owned());
        }
        Ok(())
    }
}

/// How webhooks are batched, queued and retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Statuses (or user messages) in one webhook at most, per phone number (Meta: up to 1,000).
    pub batch_max: usize,
    /// How long the first due update waits for others to share its webhook.
    pub flush_interval: Duration,
    /// Webhook POSTs in flight at once (fixed at start).
    pub concurrency: usize,
    /// Updates queued at most (scheduled, batched or awaiting a retry); beyond it they are
    /// dropped and counted.
    pub queue_limit: usize,
    /// A failed webhook is retried after this, doubling each time up to `retry_max`, until it
    /// is answered 200 or the simulator stops (Meta retries for days).
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            batch_max: 100,
            flush_interval: Duration::from_millis(50),
            concurrency: 4,
            queue_limit: 1_000_000,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl Delivery {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.batch_max) {
            return Err(format!(
                "webhook_batch_max must be 1 to 1000 (Meta's most), not {}",
                self.batch_max
            ));
        }
        if self.concurrency == 0 || self.queue_limit == 0 {
            return Err("webhook concurrency and queue limit must be at least 1".to_owned());
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(format!(
                "webhook retries need 0 < retry_initial ({:?}) <= retry_max ({:?})",
                self.retry_initial, self.retry_max
            ));
        }
        Ok(())
    }

    /// The wait before attempt `attempt + 1` after `attempt` failures.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2f64.powi(attempts.saturating_sub(1).min(30) as i32);
        self.retry_initial.mul_f64(factor).min(self.retry_max)
    }
}

/// What can change at run time (the limits and the record's bound live in their own types).
#[derive(Debug, Clone)]
pub struct Knobs {
    pub behaviour: Behaviour,
    /// wa_ids that cannot receive: their messages are accepted, then fail with 131026.
    pub undeliverable: BTreeSet<String>,
    pub webhook: Option<WebhookTarget>,
    pub delivery: Delivery,
}

/// A `POST /_sim/config` body: every field optional, unknown fields refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    latency_ms: Option<u64>,
    latency_jitter_ms: Option<u64>,
    error_rate: Option<f64>,
    error_code: Option<i64>,
    error_http_status: Option<u16>,
    drop_rate: Option<f64>,
    sent_after_ms: Option<u64>,
    delivered_after_ms: Option<u64>,
    read_after_ms: Option<u64>,
    read_probability: Option<f64>,
    window_ms: Option<u64>,
    enforce_window: Option<bool>,
    undeliverable: Option<Vec<String>>,
    throughput_per_s: Option<f64>,
    throughput_burst: Option<f64>,
    pair_burst: Option<f64>,
    pair_interval_ms: Option<u64>,
    record_limit: Option<usize>,
    /// An empty string stops sending webhooks.
    webhook_url: Option<String>,
    app_secret: Option<String>,
    webhook_batch_max: Option<usize>,
    webhook_flush_ms: Option<u64>,
    webhook_queue_limit: Option<usize>,
    webhook_retry_initial_ms: Option<u64>,
    webhook_retry_max_ms: Option<u64>,
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The run-time configuration as `GET /_sim/config` shows it (the app secret only as set/unset).
pub fn current(state: &SimState) -> serde_json::Value {
    let knobs = state.knobs();
    let b = &knobs.behaviour;
    let d = &knobs.delivery;
    let limits = state.limiter.limits();
    json!({
        "latency_ms": ms(b.latency),
        "latency_jitter_ms": ms(b.latency_jitter),
        "error_rate": b.error_rate,
        "error_code": b.error_code,
        "error_http_status": b.error_http_status,
        "drop_rate": b.drop_rate,
        "sent_after_ms": ms(b.sent_after),
        "delivered_after_ms": ms(b.delivered_after),
        "read_after_ms": ms(b.read_after),
        "read_probability": b.read_probability,
        "window_ms": ms(b.window),
        "enforce_window": b.enforce_window,
        "undeliverable": knobs.undeliverable,
        "throughput_per_s": limits.throughput_per_s,
        "throughput_burst": limits.throughput_burst,
        "pair_burst": limits.pair_burst,
        "pair_interval_ms": ms(limits.pair_interval),
        "record_limit": state.recorder.limit(),
        "webhook_url": knobs.webhook.as_ref().map(|w| w.url.clone()),
        "app_secret_set": knobs.webhook.is_some(),
        "webhook_batch_max": d.batch_max,
        "webhook_flush_ms": ms(d.flush_interval),
        "webhook_queue_limit": d.queue_limit,
        "webhook_retry_initial_ms": ms(d.retry_initial),
        "webhook_retry_max_ms": ms(d.retry_max),
    })
}

/// `GET /_sim/config`.
pub async fn show(State(state): State<SimState>) -> Json<serde_json::Value> {
    Json(current(&state))
}

/// `POST /_sim/config`: changes the fields the body names; answers the whole configuration.
pub async fn change(
    State(state): State<SimState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, GraphError> {
    let patch: Patch = serde_json::from_slice(&body).map_err(|e| {
        GraphError::invalid_parameter(format!("the configuration is not valid: {e}"))
    })?;
    let mut knobs = state.knobs();
    let mut limits = state.limiter.limits();
    apply(&patch, &mut knobs, &mut limits).map_err(GraphError::invalid_parameter)?;
    state.limiter.set_limits(limits);
    if let Some(limit) = patch.record_limit {
        state.recorder.set_limit(limit);
    }
    *state.knobs.write().unwrap_or_else(|p| p.into_inner()) = knobs;
    state.outbox.wake();
    tracing::info!("simulator configuration changed");
    Ok(Json(current(&state)))
}

/// Applies `patch` to copies of the knobs and limits, and checks the result.
fn apply(patch: &Patch, knobs: &mut Knobs, limits: &mut SendLimits) -> Result<(), String> {
    let set_ms = |target: &mut Duration, value: Option<u64>| {
        if let Some(value) = value {
            *target = Duration::from_millis(value);
        }
    };
    let b = &mut knobs.behaviour;
    set_ms(&mut b.latency, patch.latency_ms);
    set_ms(&mut b.latency_jitter, patch.latency_jitter_ms);
    set_ms(&mut b.sent_after, patch.sent_after_ms);
    set_ms(&mut b.delivered_after, patch.delivered_after_ms);
    set_ms(&mut b.read_after, patch.read_after_ms);
    set_ms(&mut b.window, patch.window_ms);
    b.error_rate = patch.error_rate.unwrap_or(b.error_rate);
    b.error_code = patch.error_code.unwrap_or(b.error_code);
    b.error_http_status = patch.error_http_status.unwrap_or(b.error_http_status);
    b.drop_rate = patch.drop_rate.unwrap_or(b.drop_rate);
    b.read_probability = patch.read_probability.unwrap_or(b.read_probability);
    b.enforce_window = patch.enforce_window.unwrap_or(b.enforce_window);
    b.validate()?;
    if let Some(list) = &patch.undeliverable {
        knobs.undeliverable = list.iter().map(|w| digits(w)).collect();
        if knobs.undeliverable.contains("") {
            return Err("undeliverable: every entry must be a wa_id (digits)".to_owned());
        }
    }
    limits.throughput_per_s = patch.throughput_per_s.unwrap_or(limits.throughput_per_s);
    limits.throughput_burst = patch.throughput_burst.unwrap_or(limits.throughput_burst);
    limits.pair_burst = patch.pair_burst.unwrap_or(limits.pair_burst);
    set_ms(&mut limits.pair_interval, patch.pair_interval_ms);
    limits.validate()?;
    if patch.record_limit == Some(0) {
        return Err("record_limit must be at least 1".to_owned());
    }
    let d = &mut knobs.delivery;
    d.batch_max = patch.webhook_batch_max.unwrap_or(d.batch_max);
    d.queue_limit = patch.webhook_queue_limit.unwrap_or(d.queue_limit);
    set_ms(&mut d.flush_interval, patch.webhook_flush_ms);
    set_ms(&mut d.retry_initial, patch.webhook_retry_initial_ms);
    set_ms(&mut d.retry_max, patch.webhook_retry_max_ms);
    d.validate()?;
    match (&patch.webhook_url, &patch.app_secret) {
        (Some(url), _) if url.is_empty() => knobs.webhook = None,
        (None, None) => {}
        (url, secret) => {
            let url = url
                .clone()
                .or_else(|| knobs.webhook.as_ref().map(|w| w.url.clone()))
                .ok_or("app_secret needs a webhook_url to sign for")?;
            let app_secret = secret
                .clone()
                .map(Secret::new)
                .or_else(|| knobs.webhook.as_ref().map(|w| w.app_secret.clone()))
                .ok_or("webhook_url needs an app_secret to sign with")?;
            let target = WebhookTarget { url, app_secret };
            target.validate()?;
            knobs.webhook = Some(target);
        }
    }
    Ok(())
}

/// A wa_id as Meta gives it: the digits of the number.
pub fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}
