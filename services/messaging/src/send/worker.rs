//! A send worker: claims due messages, asks rate-limit for every bucket that applies in one
//! call, calls the Graph API, and settles what happened, all of a claim in one transaction.
//!
//! Messages of one claim go out concurrently, except those to the same user, which go one
//! after another in the order they were queued. What an answer means:
//! - accepted: `sent`, with Meta's wamid;
//! - denied by a rate limit: queued again at the exact retry-after (no attempt counted);
//! - a transient error (network, 5xx, Meta's 1, 2, 4, 80007, 130429, 131000, 131016, 131056,
//!   131057): queued again after an exponential backoff with jitter (131056: 4^n seconds, as
//!   Meta advises), the bucket penalised on 130429 and 131056; `dead` after the last attempt;
//! - a permanent error: `failed` at once, with Meta's code and details;
//! - no usable answer after the request may have reached Meta: `in_doubt`, never resent
//!   blindly (see [`crate::store::outbound::OutboundStore::reconcile`]).
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::Rng as _;
use serde_json::json;
use tracing::Instrument as _;
use wamesh_proto::ratelimit::v1 as rl;
use wamesh_runtime::{BusinessNumber, Shutdown};
use wamesh_whatsapp::graph::{ErrorClass, SendError};

use super::stats::{Event, WorkerStats};
use super::{SendContext, callback_body, scope_of};
use crate::ingest::now_ms;
use crate::store::outbound::Callback;
use crate::store::outbound::{Claimed, SendFailure, Settle, Settlement};
use crate::trace;
use crate::window::ServiceWindow;

/// How long a settle that failed is retried before the claim is left to expire (its messages
/// then go in doubt and are reconciled, never lost and never sent twice).
const SETTLE_TRIES: u32 = 5;

/// Runs one worker until `shutdown`; then it finishes the claim in hand and stops.
pub async fn run(ctx: Arc<SendContext>, stats: WorkerStats, shutdown: Shutdown) {
    let config = &ctx.config;
    while !shutdown.is_cancelled() {
        let now = now_ms();
        let token: i64 = rand::random();
        let lease_until = now + config.lease.as_millis() as i64;
        let claimed = match ctx
            .store
            .claim(&stats.worker_id, token, config.batch, now, lease_until)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claiming due messages failed");
                stats.error(0, "claiming due messages: the database failed", now);
                idle(&ctx, &shutdown).await;
                continue;
            }
        };
        if claimed.is_empty() {
            idle(&ctx, &shutdown).await;
            continue;
        }
        stats.set_in_flight(claimed.len() as u32);
        let settles = send_claim(&ctx, &stats, claimed, token).await;
        crate::metrics::sends(&settles);
        settle(&ctx, &stats, &settles).await;
        stats.set_in_flight(0);
    }
}

/// Waits for new messages (a local enqueue wakes one worker), the poll interval (another
/// replica's messages, retries coming due), or the end.
async fn idle(ctx: &SendContext, shutdown: &Shutdown) {
    tokio::select! {
        () = ctx.wake.notified() => {}
        () = tokio::time::sleep(ctx.config.poll_interval) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Sends a claim: users concurrently, each user's messages in order.
async fn send_claim(
    ctx: &SendContext,
    stats: &WorkerStats,
    claimed: Vec<Claimed>,
    token: i64,
) -> Vec<Settle> {
    let mut by_user: BTreeMap<(String, String), Vec<Claimed>> = BTreeMap::new();
    for c in claimed {
        by_user
            .entry((c.business_phone_number_id.clone(), c.recipient.clone()))
            .or_default()
            .push(c);
    }
    let users = by_user.into_values().map(|messages| async move {
        let mut settles = Vec::with_capacity(messages.len());
        for message in messages {
            let span = trace::send_span(
                message.traceparent.as_deref(),
                message.id,
                message.attempts as u32 + 1,
                &message.kind,
            );
            let traceparent = wamesh_telemetry::traceparent(&span);
            let result = send_one(ctx, stats, &message, traceparent.as_deref())
                .instrument(span.clone())
                .await;
            record_outcome(&span, &result);
            settles.push(Settle {
                id: message.id,
                claim_token: token,
                result,
                traceparent,
            });
        }
        settles
    });
    join_all(users).await.into_iter().flatten().collect()
}

/// Records a claim's outcomes; a failing database is retried a while, then left to the lease.
async fn settle(ctx: &SendContext, stats: &WorkerStats, settles: &[Settle]) {
    for attempt in 1..=SETTLE_TRIES {
        match ctx.store.settle(settles, now_ms()).await {
            Ok(_) => return ctx.signal.committed(),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "recording send outcomes failed");
                stats.error(0, "recording send outcomes: the database failed", now_ms());
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
    }
    tracing::error!(
        messages = settles.len(),
        "send outcomes not recorded; their claim will expire and they will be reconciled"
    );
}

/// What became of one attempt, on its span.
fn record_outcome(span: &tracing::Span, result: &Settlement) {
    let (kind, wamid, next_at, error) = result.columns();
    span.record("wamesh.result", kind);
    if let Some(wamid) = wamid {
        span.record("wamesh.wamid", wamid.as_str());
    }
    if let (Some(at), "deferred") = (next_at, kind) {
        span.record("wamesh.retry_after_ms", at - now_ms());
    }
    if let Some(error) = error {
        span.record("wamesh.error_code", error.code);
        if matches!(kind, "failed" | "dead" | "in_doubt") {
            span.record("otel.status_code", "ERROR");
            let why = format!("{kind} (Meta error {})", error.code);
            span.record("otel.status_message", why.as_str());
        }
    }
}

/// One message: rate limits, then the Graph API. `traceparent` is its send span's: the
/// rate-limit decision and the Graph API call continue it, and Meta echoes it on the
/// message's statuses (in the callback data).
async fn send_one(
    ctx: &SendContext,
    stats: &WorkerStats,
    message: &Claimed,
    traceparent: Option<&str>,
) -> Settlement {
    let now = now_ms();
    let Some(number) = ctx.senders.lookup(&message.business_phone_number_id) else {
        return fail(stats, no_number(&message.business_phone_number_id), now);
    };
    let Some(access_token) = number.access_token.clone() else {
        return fail(stats, no_number(&message.business_phone_number_id), now);
    };
    let scope = scope_of(number, &message.business_phone_number_id);
    let window_open = ServiceWindow {
        last_inbound_s: message.last_inbound_s,
    }
    .is_open_at(now / 1000);
    let acquire = buckets(message, &scope, window_open, number);
    let decided = ctx
        .limits
        .acquire(acquire, traceparent.unwrap_or_default().to_owned())
        .await;
    match decided {
        Ok(decision) if decision.allowed => {}
        Ok(decision) => {
            stats.count(Event::Deferred, now);
            let wait = decision.retry_after.max(Duration::from_millis(1));
            return Settlement::Deferred {
                until_ms: now + wait.as_millis() as i64,
            };
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate-limit could not decide; deferring");
            stats.error(0, e.to_string(), now);
            stats.count(Event::Deferred, now);
            return Settlement::Deferred {
                until_ms: now + ctx.config.limits_unavailable_delay.as_millis() as i64,
            };
        }
    }
    let callback = Callback {
        outbound_id: message.id,
        sent_at_ms: Some(now_ms()),
        traceparent: traceparent.map(str::to_owned),
    };
    let body = callback_body(&message.payload, &callback);
    let call = trace::graph_span(&ctx.config.graph_api_url);
    let mut headers = http::HeaderMap::new();
    call.in_scope(|| wamesh_telemetry::inject_http(&mut headers));
    let answer = ctx
        .graph
        .send_message(
            &message.business_phone_number_id,
            access_token.expose(),
            body,
            headers,
        )
        .instrument(call.clone())
        .await;
    match &answer {
        Ok(_) => call.record("http.response.status_code", 200),
        Err(
            SendError::Api { http_status, .. }
            | SendError::Http {
                status: http_status,
            },
        ) => {
            call.record("http.response.status_code", *http_status);
            call.record("otel.status_code", "ERROR")
        }
        Err(_) => call.record("otel.status_code", "ERROR"),
    };
    drop(call);
    let now = now_ms();
    match answer {
        Ok(accepted) => {
            stats.count(Event::Sent, now);
            metrics::counter!("wamesh_send_attempts_total", "result" => "accepted").increment(1);
            Settlement::Accepted {
                wamid: accepted.wamid,
            }
        }
        Err(e) => settle_error(ctx, stats, message, &scope, e, now).await,
    }
}

/// What a failed call means for the message (and the buckets, on Meta's rate-limit codes).
async fn settle_error(
    ctx: &SendContext,
    stats: &WorkerStats,
    message: &Claimed,
    scope: &str,
    e: SendError,
    now: i64,
) -> Settlement {
    let failure = failure_of(&e);
    let attempt = message.attempts as u32 + 1;
    stats.error(failure.code, describe(&e), now);
    let class = e.class();
    let label = match class {
        ErrorClass::Transient => "transient",
        ErrorClass::Permanent => "permanent",
        ErrorClass::InDoubt => "in_doubt",
    };
    metrics::counter!("wamesh_send_attempts_total", "result" => label).increment(1);
    tracing::info!(
        id = message.id,
        code = failure.code,
        attempt,
        class = label,
        "send attempt failed"
    );
    match class {
        ErrorClass::Permanent => fail(stats, failure, now),
        ErrorClass::InDoubt => {
            stats.count(Event::InDoubt, now);
            Settlement::InDoubt { error: failure }
        }
        ErrorClass::Transient => {
            penalize(ctx, message, scope, failure.code, attempt).await;
            if attempt >= ctx.config.max_attempts {
                stats.count(Event::Failed, now);
                return Settlement::Dead { error: failure };
            }
            stats.count(Event::Retried, now);
            let delay = retry_delay(attempt, failure.code, &ctx.config.backoff);
            Settlement::Retry {
                at_ms: now + delay.as_millis() as i64,
                error: failure,
            }
        }
    }
}

/// Meta still said 130429 (the number's throughput) or 131056 (the user pair): hold the
/// bucket, so every other message to it waits too.
async fn penalize(ctx: &SendContext, message: &Claimed, scope: &str, code: i64, attempt: u32) {
    let (key, hold) = match code {
        130429 => (
            format!("throughput:{}", message.business_phone_number_id),
            Duration::from_secs(1),
        ),
        131056 => (
            format!(
                "pair:{}:{}",
                message.business_phone_number_id, message.recipient
            ),
            pair_wait(attempt),
        ),
        _ => return,
    };
    if let Err(e) = ctx.limits.penalize(scope, &key, hold, code).await {
        tracing::warn!(error = %e, code, "could not penalise the bucket");
    }
}

/// The rate-limit request of one message: the number's throughput and the user pair always;
/// the messaging-limit tier when a template opens a conversation outside the window. A
/// number's configured throughput and tier go with the request as its policy.
fn buckets(
    message: &Claimed,
    scope: &str,
    window_open: bool,
    number: &BusinessNumber,
) -> rl::AcquireRequest {
    let pnid = &message.business_phone_number_id;
    let token_bucket = |capacity: f64, rate: f64| rl::Policy {
        kind: Some(rl::policy::Kind::TokenBucket(rl::TokenBucket {
            capacity,
            refill_per_second: rate,
        })),
    };
    let mut buckets = vec![
        rl::BucketRequest {
            key: format!("throughput:{pnid}"),
            cost: 1.0,
            policy: number.throughput.map(|t| token_bucket(t, t)),
            ..Default::default()
        },
        rl::BucketRequest {
            key: format!("pair:{pnid}:{}", message.recipient),
            cost: 1.0,
            ..Default::default()
        },
    ];
    if !window_open && message.kind == "template" {
        buckets.push(rl::BucketRequest {
            key: format!("tier:{scope}"),
            member: message.recipient.clone(),
            policy: number.tier.map(|limit| rl::Policy {
                kind: Some(rl::policy::Kind::DistinctWindow(rl::DistinctWindow {
                    limit,
                    window_ms: 24 * 60 * 60 * 1000,
                })),
            }),
            ..Default::default()
        });
    }
    rl::AcquireRequest {
        scope: scope.to_owned(),
        buckets,
    }
}

/// The delays between attempts after transient errors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first retry's delay (before jitter); it doubles with each attempt.
    pub base: Duration,
    /// No retry waits longer.
    pub max: Duration,
}

/// The delay before the next attempt, after `attempt` attempts: exponential, capped, with
/// jitter (uniform over its upper half), so that messages failed together do not retry
/// together. 131056: 4^n seconds, as Meta advises for the pair rate.
pub fn retry_delay(attempt: u32, code: i64, backoff: &Backoff) -> Duration {
    let full = if code == 131056 {
        pair_wait(attempt)
    } else {
        backoff
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }
    .min(backoff.max);
    let jitter = rand::rng().random_range(0.5..=1.0);
    full.mul_f64(jitter)
}

/// Meta's advice after 131056: wait 4^n seconds.
fn pair_wait(attempt: u32) -> Duration {
    Duration::from_secs(4u64.saturating_pow(attempt))
}

fn fail(stats: &WorkerStats, failure: SendFailure, now: i64) -> Settlement {
    stats.count(Event::Failed, now);
    Settlement::Failed { error: failure }
}

fn no_number(pnid: &str) -> SendFailure {
    failure(
        0,
        "no access token",
        &format!(
            "no access token is configured for business number {pnid} (WAMESH_ACCESS_TOKEN or the numbers file)"
        ),
        "",
    )
}

/// The error as stored: Meta's code and words, or ours for what Meta never answered.
fn failure_of(e: &SendError) -> SendFailure {
    match e {
        SendError::Api { error, .. } => failure(
            error.code,
            &error.error_type,
            &error.message,
            &error.details,
        ),
        SendError::Http { status } => failure(
            0,
            "HTTP error",
            &format!("the Graph API answered HTTP {status} without Meta's error"),
            "",
        ),
        SendError::NotSent(why) => failure(0, "not sent", why, "the request never reached Meta"),
        SendError::Invalid(why) => failure(0, "not sendable", why, "nothing was sent"),
        SendError::NoAnswer(why) => failure(
            0,
            "no answer",
            why,
            "Meta may have the message: in doubt until a status webhook shows",
        ),
    }
}

fn failure(code: i64, title: &str, message: &str, details: &str) -> SendFailure {
    SendFailure {
        code,
        json: json!({"code": code, "title": title, "message": message, "details": details})
            .to_string(),
    }
}

fn describe(e: &SendError) -> String {
    match e {
        SendError::Api { error, .. } => format!("({}) {}", error.code, error.message),
        other => failure_of(other).json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_cap() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for _ in 0..50 {
            let first = retry_delay(1, 131000, &backoff);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let fourth = retry_delay(4, 131000, &backoff);
            assert!(fourth >= Duration::from_secs(4) && fourth <= Duration::from_secs(8));
            assert!(retry_delay(30, 131000, &backoff) <= Duration::from_secs(60));
            let pair = retry_delay(2, 131056, &backoff);
            assert!(pair >= Duration::from_secs(8) && pair <= Duration::from_secs(16));
        }
    }
}
