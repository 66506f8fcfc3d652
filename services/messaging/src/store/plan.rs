//! What a batch of webhooks writes, decided once for both backends.
//!
//! Rows are deduplicated inside the batch (the first webhook to carry an update owns it) and
//! sorted by key, so that concurrent transactions on several messaging replicas lock rows in
//! the same order and cannot deadlock each other.
use std::collections::BTreeMap;

use wamesh_whatsapp::{ApiError, DeliveryStatus, MessageUpdate, StatusUpdate};

use super::outbound::Callback;
use super::{IncomingWebhook, IngestOutcome, UpdateCounts};

/// Every row one batch writes. `slot` is the index of the webhook in the batch.
pub struct BatchPlan<'a> {
    pub messages: Vec<(usize, &'a MessageUpdate)>,
    /// Each message's trace context, aligned with `messages`.
    pub message_traces: Vec<Option<&'a str>>,
    pub statuses: Vec<(usize, &'a StatusUpdate)>,
    /// Each status's trace context and the outbound message its callback data names, aligned
    /// with `statuses`.
    pub status_traces: Vec<Option<&'a str>>,
    pub status_outbound: Vec<Option<i64>>,
    /// Per outbound wamid: the highest ranked status of the batch (or an unranked one).
    pub states: Vec<StateRow<'a>>,
    pub contacts: Vec<ContactRow>,
    pub events: Vec<EventRow<'a>>,
}

/// Moves an outbound message's state forward (creating it when only its statuses are known).
pub struct StateRow<'a> {
    pub wamid: &'a str,
    pub business_phone_number_id: &'a str,
    pub recipient_id: &'a str,
    pub timestamp_s: i64,
    /// `None` when no status of the batch has a rank (the timeline still gets them).
    pub status: Option<DeliveryStatus>,
}

/// A contact's changes merged over the batch.
pub struct ContactRow {
    pub business_phone_number_id: String,
    pub contact_id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    pub seen_at_ms: i64,
    /// Newest inbound message time (Unix s), 0 when the batch has none from this contact.
    pub last_inbound_s: i64,
}

/// A non-message update or a `value.errors` item.
pub struct EventRow<'a> {
    pub slot: usize,
    pub dedup_key: &'a str,
    pub waba_id: &'a str,
    pub business_phone_number_id: &'a str,
    pub field: &'a str,
    pub kind: &'static str,
    pub error_code: i64,
    pub raw_json: &'a str,
}

impl<'a> BatchPlan<'a> {
    pub fn new(batch: &'a [IncomingWebhook]) -> Self {
        let mut messages = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut states: BTreeMap<&str, StateRow> = BTreeMap::new();
        let mut contacts: BTreeMap<(String, String), ContactRow> = BTreeMap::new();
        let mut events = BTreeMap::new();
        for (slot, webhook) in batch.iter().enumerate() {
            let updates = &webhook.updates;
            let traces = &webhook.traces;
            for (n, m) in updates.messages.iter().enumerate() {
                let direction = super::Direction::from(m.direction).as_str();
                let trace = traces.messages.get(n).and_then(|t| t.as_deref());
                messages
                    .entry((m.wamid.as_str(), direction))
                    .or_insert((slot, m, trace));
                if m.direction == wamesh_whatsapp::Direction::Inbound && !m.contact_id.is_empty() {
                    let row = contact_row(
                        &mut contacts,
                        &m.business_phone_number_id,
                        &m.contact_id,
                        webhook.received_at_ms,
                    );
                    row.last_inbound_s = row.last_inbound_s.max(m.timestamp);
                }
            }
            for (n, s) in updates.statuses.iter().enumerate() {
                let trace = traces.statuses.get(n).and_then(|t| t.as_deref());
                statuses
                    .entry((s.wamid.as_str(), s.status.as_str()))
                    .or_insert((slot, s, trace));
                let ranked = DeliveryStatus::parse(&s.status);
                let state = states.entry(s.wamid.as_str()).or_insert(StateRow {
                    wamid: &s.wamid,
                    business_phone_number_id: &s.business_phone_number_id,
                    recipient_id: &s.recipient_id,
                    timestamp_s: s.timestamp,
                    status: None,
                });
                if ranked > state.status {
                    state.status = ranked;
                    state.timestamp_s = s.timestamp;
                }
            }
            for c in &updates.contacts {
                let row = contact_row(
                    &mut contacts,
                    &c.business_phone_number_id,
                    &c.contact_id,
                    webhook.received_at_ms,
                );
                row.wa_id = c.wa_id.clone().or(row.wa_id.take());
                row.user_id = c.user_id.clone().or(row.user_id.take());
                row.profile_name = c.profile_name.clone().or(row.profile_name.take());
            }
            for e in &updates.errors {
                events.entry(e.dedup_key.as_str()).or_insert(EventRow {
                    slot,
                    dedup_key: &e.dedup_key,
                    waba_id: &e.waba_id,
                    business_phone_number_id: &e.business_phone_number_id,
                    field: "messages",
                    kind: "error",
                    error_code: e.error.code,
                    raw_json: &e.raw,
                });
            }
            for o in &updates.other {
                events.entry(o.dedup_key.as_str()).or_insert(EventRow {
                    slot,
                    dedup_key: &o.dedup_key,
                    waba_id: &o.waba_id,
                    business_phone_number_id: &o.business_phone_number_id,
                    field: &o.field,
                    kind: "field",
                    error_code: 0,
                    raw_json: &o.raw,
                });
            }
        }
        let (messages, message_traces) = messages
            .into_values()
            .map(|(slot, m, trace)| ((slot, m), trace))
            .unzip();
        let (statuses, status_traces): (Vec<_>, Vec<_>) = statuses
            .into_values()
            .map(|(slot, s, trace)| ((slot, s), trace))
            .unzip();
        let status_outbound = statuses
            .iter()
            .map(|(_, s): &(usize, &StatusUpdate)| {
                s.callback_data
                    .as_deref()
                    .and_then(Callback::parse)
                    .map(|c| c.outbound_id)
            })
            .collect();
        Self {
            messages,
            message_traces,
            statuses,
            status_traces,
            status_outbound,
            states: states.into_values().collect(),
            contacts: contacts.into_values().collect(),
            events: events.into_values().collect(),
        }
    }

    /// The outcome of each webhook, from the slots that brought what the database reported as
    /// newly inserted. A webhook is a duplicate when it held updates and none of them was new:
    /// a retry by Meta, or the same updates again in another body.
    pub fn outcomes(
        batch: &[IncomingWebhook],
        delivery_ids: &[i64],
        new: &NewRows,
    ) -> Vec<IngestOutcome> {
        let count =
            |slots: &[usize], slot: usize| slots.iter().filter(|s| **s == slot).count() as u32;
        batch
            .iter()
            .enumerate()
            .map(|(slot, webhook)| {
                let [messages, statuses, contacts, errors, other_fields] =
                    webhook.updates.counts().map(|n| n as u32);
                let (new_messages, new_statuses, new_events) = (
                    count(&new.message_slots, slot),
                    count(&new.status_slots, slot),
                    count(&new.event_slots, slot),
                );
                let held = messages + statuses + errors + other_fields;
                IngestOutcome {
                    delivery_id: delivery_ids[slot],
                    duplicate: held > 0 && new_messages + new_statuses + new_events == 0,
                    counts: UpdateCounts {
                        messages,
                        statuses,
                        contacts,
                        errors,
                        other_fields,
                    },
                    new_messages,
                    new_statuses,
                    new_events,
                }
            })
            .collect()
    }
}

/// The slots whose messages, statuses and events were new to the database (one entry per
/// new row, so a slot may appear several times).
#[derive(Debug, Default)]
pub struct NewRows {
    pub message_slots: Vec<usize>,
    pub status_slots: Vec<usize>,
    pub event_slots: Vec<usize>,
}

fn contact_row<'m>(
    contacts: &'m mut BTreeMap<(String, String), ContactRow>,
    phone: &str,
    contact_id: &str,
    seen_at_ms: i64,
) -> &'m mut ContactRow {
    let row = contacts
        .entry((phone.to_owned(), contact_id.to_owned()))
        .or_insert_with(|| ContactRow {
            business_phone_number_id: phone.to_owned(),
            contact_id: contact_id.to_owned(),
            wa_id: None,
            user_id: None,
            profile_name: None,
            seen_at_ms,
            last_inbound_s: 0,
        });
    row.seen_at_ms = row.seen_at_ms.max(seen_at_ms);
    row
}

/// Errors as stored: a JSON array of `{code, title, message, details}`.
pub fn errors_json(errors: &[ApiError]) -> String {
    let items: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| serde_json::json!({"code": e.code, "title": e.title, "message": e.message, "details": e.details}))
        .collect();
    serde_json::Value::Array(items).to_string()
}
