//! `POST /{version}/{phone_number_id}/messages`: what Meta answers a send with. The token is
//! checked first (190), then the body (Meta's codes, see [`crate::validate`]), then a template
//! against the templates known (132001, 132015, 132016, 132000), then the configured error rate
//! (a transient error, 131000 by default), then the sending limits (130429, 131056, see
//! [`crate::limits`]). A refused send takes nothing and changes nothing. An accepted message gets
//! a fresh wamid and its statuses are scheduled ([`crate::statuses`]): `failed` with 131026 for
//! an undeliverable recipient, with 131047 for a free-form message outside the window. Every
//! request is recorded, whatever the answer, before the configured latency; with the drop rate
//! an accepted send's answer is lost ([`crate::lost`]).
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::SimState;
use crate::error::GraphError;
use crate::inbound::new_wamid;
use crate::knobs::{Knobs, digits};
use crate::record::Received;
use crate::statuses::Accepted;

pub async fn send(
    State(state): State<SimState>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    let mut received = Received {
        seq: 0,
        received_at_ms: 0,
        version,
        phone_number_id,
        body: parsed.as_ref().map_or_else(
            |_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()),
            Clone::clone,
        ),
        wamid: None,
        error_code: None,
        answer_dropped: false,
        fails_with: None,
    };
    let knobs = state.knobs();
    let answer = accept(&state, &knobs, &received.phone_number_id, &headers, parsed);
    let lost = match &answer {
        Ok(outcome) => {
            let lost = rand::random::<f64>() < knobs.behaviour.drop_rate;
            received.wamid = Some(outcome.wamid.clone());
            received.answer_dropped = lost;
            received.fails_with = outcome.fails_with;
            crate::stats::add(&state.stats.accepted, 1);
            metrics::counter!("wamesh_simulator_sends_total", "result" => "accepted", "code" => "none")
                .increment(1);
            if lost {
                crate::stats::add(&state.stats.answers_dropped, 1);
            }
            lost
        }
        Err(e) => {
            tracing::info!(code = e.code, "simulated send refused");
            received.error_code = Some(e.code);
            state.stats.refused(e.code);
            let code = wamesh_whatsapp::labels::error_code(e.code);
            metrics::counter!("wamesh_simulator_sends_total", "result" => "refused", "code" => code)
                .increment(1);
            false
        }
    };
    state.recorder.push(received);
    let delay = knobs.behaviour.answer_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Ok(_) if lost => crate::lost::answer(),
        Ok(outcome) => (StatusCode::OK, Json(outcome.reply)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An accepted message.
struct Outcome {
    wamid: String,
    /// The answer, as Meta gives it.
    reply: serde_json::Value,
    /// The code its `failed` status will carry, if it will not arrive.
    fails_with: Option<i64>,
}

/// Accepts a message (its statuses scheduled), or answers Meta's refusal.
fn accept(
    state: &SimState,
    knobs: &Knobs,
    phone_number_id: &str,
    headers: &HeaderMap,
    parsed: Result<serde_json::Value, serde_json::Error>,
) -> Result<Outcome, GraphError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| GraphError::bad_token("no Authorization: Bearer header"))?;
    let known = state.tokens.iter().fold(false, |known, t| {
        known | bool::from(t.expose().as_bytes().ct_eq(token.as_bytes()))
    });
    if !known {
        return Err(GraphError::bad_token("the access token is not valid"));
    }
    let body =
        parsed.map_err(|e| GraphError::invalid_parameter(format!("the body is not JSON: {e}")))?;
    let kind = crate::validate::message(&body)?;
    let template = match kind {
        "template" => Some(state.templates.check(&body["template"])?),
        _ => None,
    };
    let behaviour = &knobs.behaviour;
    if rand::random::<f64>() < behaviour.error_rate {
        let status = StatusCode::from_u16(behaviour.error_http_status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(GraphError::transient(behaviour.error_code, status));
    }
    let to = body["to"].as_str().unwrap_or_default();
    let wa_id = digits(to);
    state.limiter.take(phone_number_id, &wa_id)?;

    let wamid = new_wamid();
    let in_window = state
        .windows
        .is_open(phone_number_id, &wa_id, behaviour.window);
    let failure = if knobs.undeliverable.contains(&wa_id) {
        Some(GraphError::undeliverable())
    } else if template.is_none() && behaviour.enforce_window && !in_window {
        Some(GraphError::outside_window())
    } else {
        None
    };
    let accepted = Accepted {
        phone_number_id,
        wamid: &wamid,
        wa_id: &wa_id,
        callback_data: body["biz_opaque_callback_data"].as_str(),
        kind,
        template: template.as_deref(),
        in_window,
        failure,
    };
    let fails_with = accepted.failure.as_ref().map(|f| f.code);
    let now = Instant::now();
    if let Some(seen_at) = crate::statuses::schedule(state, &accepted, behaviour, now) {
        crate::users::business_message(
            state,
            crate::users::Received {
                phone_number_id,
                wa_id: &wa_id,
                wamid: &wamid,
                body: &body,
                template: template.as_deref(),
            },
            seen_at,
        );
    }
    let reply = serde_json::json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [{"id": wamid}],
    });
    Ok(Outcome {
        wamid,
        reply,
        fails_with,
    })
}
