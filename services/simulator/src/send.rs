//! `POST /{version}/{phone_number_id}/messages`: what Meta answers a send with. The token is
//! checked first (190), then the body (Meta's codes, see [`crate::validate`]), then the
//! sending limits (130429, 131056, see [`crate::limits`]); an accepted message gets a fresh
//! wamid. Every request is recorded, whatever the answer.
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq as _;

use crate::SimState;
use crate::error::GraphError;
use crate::record::Received;

pub async fn send(
    State(state): State<SimState>,
    Path((version, phone_number_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, GraphError> {
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
    };
    let answer = accept(&state, &received.phone_number_id, &headers, parsed);
    match &answer {
        Ok((wamid, _)) => received.wamid = Some(wamid.clone()),
        Err(e) => {
            tracing::info!(code = e.code, "simulated send refused");
            received.error_code = Some(e.code);
        }
    }
    state.recorder.push(received);
    answer.map(|(_, reply)| Json(reply))
}

/// The wamid and the answer of an accepted message.
fn accept(
    state: &SimState,
    phone_number_id: &str,
    headers: &HeaderMap,
    parsed: Result<serde_json::Value, serde_json::Error>,
) -> Result<(String, serde_json::Value), GraphError> {
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
    crate::validate::message(&body)?;
    let to = body["to"].as_str().unwrap_or_default();
    let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
    state.limiter.take(phone_number_id, &wa_id)?;
    let wamid = format!(
        "wamid.SIM{}",
        hex::encode(rand::random::<[u8; 16]>()).to_uppercase()
    );
    let reply = serde_json::json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": wa_id}],
        "messages": [{"id": wamid}],
    });
    Ok((wamid, reply))
}
