//! What follows an accepted send: its statuses, scheduled in order (`sent`, then `delivered`,
//! then `read` with the read probability; a reaction only gets `sent`), or one `failed` status
//! with Meta's error when the message cannot arrive (131026 undeliverable, 131047 outside the
//! window). Each carries the send's `biz_opaque_callback_data`; `sent` and `delivered` carry
//! Meta's `conversation` and `pricing` (service messages and utility templates inside the
//! window are free).
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::SimState;
use crate::error::GraphError;
use crate::knobs::Behaviour;
use crate::outbox::Update;
use crate::templates::Template;

/// An accepted send, as its statuses need it.
#[derive(Debug)]
pub struct Accepted<'a> {
    pub phone_number_id: &'a str,
    pub wamid: &'a str,
    /// The recipient's wa_id.
    pub wa_id: &'a str,
    /// `biz_opaque_callback_data`, echoed in every status.
    pub callback_data: Option<&'a str>,
    /// The message type (`text`, `template`, `reaction`...).
    pub kind: &'a str,
    pub template: Option<&'a Template>,
    /// The user's window was open when it was accepted.
    pub in_window: bool,
    /// It will not arrive: its `failed` status carries this error.
    pub failure: Option<GraphError>,
}

/// Schedules the statuses of `accepted` from `at`; answers when the user sees the message (its
/// `read`, or its `delivered` when it is not read), or None when it fails or is a reaction.
pub fn schedule(
    state: &SimState,
    accepted: &Accepted<'_>,
    behaviour: &Behaviour,
    at: Instant,
) -> Option<Instant> {
    let sent_at = at + behaviour.sent_after;
    if let Some(failure) = &accepted.failure {
        let mut status = status(accepted, "failed", None);
        status["errors"] = json!([failure.status_error()]);
        push(state, accepted, sent_at, status);
        return None;
    }
    let pricing = pricing(accepted);
    push(
        state,
        accepted,
        sent_at,
        status(accepted, "sent", Some(&pricing)),
    );
    if accepted.kind == "reaction" {
        return None;
    }
    let delivered_at = sent_at.max(at + behaviour.delivered_after);
    push(
        state,
        accepted,
        delivered_at,
        status(accepted, "delivered", Some(&pricing)),
    );
    if rand::random::<f64>() >= behaviour.read_probability {
        return Some(delivered_at);
    }
    let read_at = delivered_at.max(at + behaviour.read_after);
    push(state, accepted, read_at, status(accepted, "read", None));
    Some(read_at)
}

fn push(state: &SimState, accepted: &Accepted<'_>, at: Instant, status: Value) {
    if let Some(name) = status["status"].as_str() {
        state.stats.scheduled(name);
    }
    state.schedule(
        at,
        Update::Status {
            phone_number_id: accepted.phone_number_id.to_owned(),
            status,
        },
    );
}

/// A `statuses[]` item without its timestamp (set when it is sent).
fn status(accepted: &Accepted<'_>, name: &str, pricing: Option<&Value>) -> Value {
    let mut status = json!({
        "id": accepted.wamid,
        "status": name,
        "recipient_id": accepted.wa_id,
    });
    if let Some(data) = accepted.callback_data {
        status["biz_opaque_callback_data"] = json!(data);
    }
    if let Some(pricing) = pricing {
        status["conversation"] = pricing["conversation"].clone();
        status["pricing"] = pricing["pricing"].clone();
    }
    status
}

/// `{"conversation": .., "pricing": ..}` for an accepted send.
fn pricing(accepted: &Accepted<'_>) -> Value {
    let category = accepted
        .template
        .map_or("service", |t| t.def.category.pricing_name());
    let free = category == "service" || (category == "utility" && accepted.in_window);
    let mut hasher = DefaultHasher::new();
    (accepted.phone_number_id, accepted.wa_id, category).hash(&mut hasher);
    let first = hasher.finish();
    first.hash(&mut hasher);
    let expires = std::time::SystemTime::now() + Duration::from_secs(24 * 3600);
    let expires = expires
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "conversation": {
            "id": format!("{first:016x}{:016x}", hasher.finish()),
            "expiration_timestamp": expires.to_string(),
            "origin": {"type": category},
        },
        "pricing": {
            "billable": !free,
            "pricing_model": "PMP",
            "type": if free { "free_customer_service" } else { "regular" },
            "category": category,
        },
    })
}
