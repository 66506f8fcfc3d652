//! `GET /api/webhooks/whatsapp` (Meta's verify handshake) and `POST` (signed webhooks).
//!
//! A POST is checked in this order, and nothing is stored unless every check passes: size
//! (413), signature over the raw bytes (401 missing, 403 wrong), envelope (400). Then messaging
//! stores it; only its answer turns into our 200 (503 when it cannot, so Meta retries).
//!
//! Metrics: `wamesh_webhooks_total{result}` and `wamesh_webhook_seconds{result}` per POST
//! (`stored`, `duplicate`, or the refusal's [`GatewayError::kind`]); the updates of each stored
//! webhook by field and type in `wamesh_webhook_updates_total{field, type}`.
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use wamesh_proto::messaging::v1::IngestWebhookRequest;
use wamesh_whatsapp::{MAX_WEBHOOK_BYTES, SIGNATURE_HEADER, Webhook};

use crate::AppState;
use crate::error::GatewayError;

pub const PATH: &str = "/api/webhooks/whatsapp";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(handshake).post(receive))
}

/// Answers `hub.challenge` when `hub.verify_token` is one of ours.
async fn handshake(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<String, GatewayError> {
    let (Some(mode), Some(token), Some(challenge)) = (
        params.get("hub.mode"),
        params.get("hub.verify_token"),
        params.get("hub.challenge"),
    ) else {
        return Err(GatewayError::HandshakeIncomplete);
    };
    if mode != "subscribe" || !state.apps.verify_token_matches(token) {
        tracing::warn!("webhook verify handshake refused");
        return Err(GatewayError::HandshakeRefused);
    }
    Ok(challenge.clone())
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> impl IntoResponse {
    let started = Instant::now();
    let result = check_and_store(&state, &headers, body).await;
    let outcome = match &result {
        Ok(response) if response.0["duplicate"] == true => "duplicate",
        Ok(_) => "stored",
        Err(e) => e.kind(),
    };
    metrics::counter!("wamesh_webhooks_total", "result" => outcome).increment(1);
    metrics::histogram!("wamesh_webhook_seconds", "result" => outcome)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        tracing::info!(
            status = e.status().as_u16(),
            reason = e.kind(),
            "webhook refused"
        );
    }
    result
}

async fn check_and_store(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, GatewayError> {
    let received_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_WEBHOOK_BYTES) {
        return Err(GatewayError::TooLarge(MAX_WEBHOOK_BYTES));
    }
    let raw = to_bytes(body, MAX_WEBHOOK_BYTES)
        .await
        .map_err(|_| GatewayError::TooLarge(MAX_WEBHOOK_BYTES))?;

    if !state.apps.has_secret() {
        return Err(GatewayError::NoAppSecret);
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    let verified_by = state.apps.verify(&raw, signature)?;
    // Only the labels are kept past this point: the parsed body is not held while messaging works.
    let updates = wamesh_whatsapp::labels::webhook_updates(&Webhook::parse(&raw)?);

    let mut trace = HeaderMap::new();
    wamesh_telemetry::inject_http(&mut trace);
    let header = |name: &str| {
        trace
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let request = IngestWebhookRequest {
        raw_body: raw.to_vec(),
        received_at_unix_ms,
        verified_by,
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    };
    let reply = tokio::time::timeout(state.ingest_timeout, state.forwarder.forward(request))
        .await
        .map_err(|_| GatewayError::Unavailable("timed out"))?;
    match reply {
        Ok(stored) => {
            if !stored.duplicate {
                count_updates(&updates);
            }
            Ok(Json(serde_json::json!({
            "delivery_id": stored.delivery_id,
            "duplicate": stored.duplicate,
            "new_messages": stored.new_messages,
            "new_statuses": stored.new_statuses,
            "new_events": stored.new_events,
            })))
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "messaging did not store the webhook");
            Err(match status.code() {
                tonic::Code::InvalidArgument => GatewayError::Payload(
                    wamesh_whatsapp::PayloadError::NotEnvelope("messaging refused the body"),
                ),
                tonic::Code::Internal => GatewayError::Failed,
                tonic::Code::Unavailable => GatewayError::Unavailable("unavailable"),
                tonic::Code::DeadlineExceeded => GatewayError::Unavailable("timed out"),
                _ => GatewayError::Unavailable("unexpected answer"),
            })
        }
    }
}

/// `wamesh_webhook_updates_total{field, type}`: the updates of a webhook messaging stored (not
/// a duplicate), by webhook field and update type (see [`wamesh_whatsapp::labels`]).
fn count_updates(updates: &[(&'static str, &'static str)]) {
    let mut counts: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for update in updates {
        *counts.entry(*update).or_default() += 1;
    }
    for ((field, kind), n) in counts {
        metrics::counter!("wamesh_webhook_updates_total", "field" => field, "type" => kind)
            .increment(n);
    }
}
