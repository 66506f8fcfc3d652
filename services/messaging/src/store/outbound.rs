//! The storage side of sending: the outbound queue, the template registry and the send
//! workers' reports, behind [`OutboundStore`] (both backends implement it; the conformance
//! suite holds them to the same behaviour).
//!
//! A queued message's life (`outbound_messages.state`):
//!
//! ```text
//! queued ──claim──▶ sending ──settle──▶ sent | failed | dead | in_doubt
//!    ▲                 │                   (deferred or retried: queued again)
//!    │                 └─ lease expired (the worker died) ──▶ in_doubt
//!    └──────── in_doubt without evidence after the window ◀──┘
//! ```
//!
//! A claim fences its rows with a token: only the claim that holds a row may settle it, so a
//! worker that lost its lease cannot overwrite what happened since. See [`OutboundStore::reconcile`]
//! for how an in-doubt message is proven sent (or not) before it may go again.
use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::StoreError;
use super::events::{NewLogEvent, kind};

/// What each send asks Meta to echo on its status webhooks (`biz_opaque_callback_data`), as
/// `wamesh:<id>:<sent_at_ms>:<traceparent>`: our id (the evidence that an in-doubt send reached
/// Meta), when the call was made (for the delivery latency) and the send's span (the parent of
/// the delivery confirmations' spans). Meta allows 512 characters; this takes under 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub outbound_id: i64,
    pub sent_at_ms: Option<i64>,
    pub traceparent: Option<String>,
}

impl Callback {
    const PREFIX: &'static str = "wamesh:";

    pub fn encode(&self) -> String {
        let mut data = format!("{}{}", Self::PREFIX, self.outbound_id);
        if let Some(at) = self.sent_at_ms {
            data.push_str(&format!(":{at}"));
            if let Some(traceparent) = &self.traceparent {
                data.push(':');
                data.push_str(traceparent);
            }
        }
        data
    }

    /// Ours (`wamesh:<id>`, optionally followed by the time and trace), else `None`: callback
    /// data from another sender of the same number is not ours to read.
    pub fn parse(data: &str) -> Option<Self> {
        let mut parts = data.strip_prefix(Self::PREFIX)?.splitn(3, ':');
        let outbound_id = parts.next()?.parse().ok()?;
        let sent_at_ms = parts.next().map(str::parse).transpose().ok()?;
        let traceparent = parts.next().filter(|t| !t.is_empty()).map(str::to_owned);
        Some(Self {
            outbound_id,
            sent_at_ms,
            traceparent,
        })
    }
}

/// A message to queue: validated, rendered to its Graph API body, its fallback decided.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutbound {
    pub business_phone_number_id: String,
    pub idempotency_key: String,
    /// SHA-256 (hex) of the request as validated: the same key asking for another message is
    /// refused instead of answered with the first one.
    pub request_digest: String,
    /// The user's wa_id.
    pub recipient: String,
    /// Meta's message type as sent.
    pub kind: String,
    /// The template as sent (name, language), for template messages.
    pub template: Option<(String, String)>,
    /// The text users read, for the conversation history.
    pub preview: Option<String>,
    /// The Graph API request body (JSON), without `biz_opaque_callback_data`.
    pub payload: String,
    /// `{requested, sent_as, reason}` when it did not go as asked.
    pub fallback_json: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// The `send.queued` events of a batch's new messages (not its duplicates), in id order.
pub fn queued_events(enqueued: &HashMap<(String, String), Enqueued>) -> Vec<NewLogEvent> {
    let mut new: Vec<&OutboundRow> = enqueued
        .values()
        .filter(|e| !e.duplicate)
        .map(|e| &e.row)
        .collect();
    new.sort_by_key(|row| row.id);
    new.into_iter().map(queued_event).collect()
}

/// The `send.queued` event of a message just queued.
fn queued_event(row: &OutboundRow) -> NewLogEvent {
    NewLogEvent {
        kind: kind::SEND_QUEUED,
        business_phone_number_id: row.business_phone_number_id.clone(),
        contact_id: row.recipient.clone(),
        outbound_id: Some(row.id),
        message_type: Some(row.kind.clone()),
        template_name: row.template_name.clone(),
        traceparent: row.traceparent.clone(),
        tracestate: row.tracestate.clone(),
        ..NewLogEvent::default()
    }
}

/// The event of a settled message, for every attempt's outcome (accepted, retrying, failed,
/// dead, in doubt); a deferral made no attempt and makes none.
pub fn settled_event(settled: &Settled) -> Option<NewLogEvent> {
    let kind = match settled.kind.as_str() {
        "accepted" => kind::SEND_ACCEPTED,
        "retry" => kind::SEND_RETRYING,
        "failed" => kind::SEND_FAILED,
        "dead" => kind::SEND_DEAD,
        "in_doubt" => kind::SEND_IN_DOUBT,
        _ => return None,
    };
    Some(NewLogEvent {
        kind,
        business_phone_number_id: settled.business_phone_number_id.clone(),
        contact_id: settled.recipient.clone(),
        wamid: settled.wamid.clone(),
        outbound_id: Some(settled.id),
        message_type: Some(settled.message_type.clone()),
        error_code: settled.error_code.unwrap_or(0),
        template_name: settled.template_name.clone(),
        traceparent: settled.traceparent.clone(),
        ..NewLogEvent::default()
    })
}

/// A row a settle changed, as the settle statement returns it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Settled {
    pub id: i64,
    /// The settlement's kind (see [`Settlement::columns`]).
    pub kind: String,
    pub business_phone_number_id: String,
    pub recipient: String,
    pub wamid: Option<String>,
    #[sqlx(rename = "type")]
    pub message_type: String,
    pub template_name: Option<String>,
    pub error_code: Option<i64>,
    /// The send's span (else the message's own trace context).
    pub traceparent: Option<String>,
}

/// What enqueueing one message did.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    pub row: OutboundRow,
    /// The idempotency key was known: `row` is the message it queued before.
    pub duplicate: bool,
}

/// A queued message as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct OutboundRow {
    pub id: i64,
    pub business_phone_number_id: String,
    pub idempotency_key: String,
    pub request_digest: String,
    pub recipient: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub template_name: Option<String>,
    pub template_language: Option<String>,
    pub preview: Option<String>,
    pub payload: String,
    pub fallback_json: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at_ms: i64,
    pub queued_at_ms: i64,
    pub in_doubt_since_ms: Option<i64>,
    pub wamid: Option<String>,
    pub accepted_at_ms: Option<i64>,
    pub error_code: Option<i64>,
    pub error_json: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// How a queued message is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundKey {
    Id(i64),
    Idempotency {
        business_phone_number_id: String,
        key: String,
    },
}

/// A message a worker claimed: everything it needs to send it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub business_phone_number_id: String,
    pub recipient: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub payload: String,
    pub attempts: i32,
    /// The user's newest inbound message (Unix s; 0: never): whether the window is open now.
    pub last_inbound_s: i64,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// What became of one claimed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    pub id: i64,
    /// The token of the claim that holds it; a settle with another token changes nothing.
    pub claim_token: i64,
    pub result: Settlement,
    /// The send's span (W3C traceparent), for the event of its outcome.
    pub traceparent: Option<String>,
}

/// The outcome of one send attempt (or of not attempting it).
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Meta accepted it: `sent`, with its wamid. Counts an attempt.
    Accepted { wamid: String },
    /// A rate limit said not yet: queued again for `until_ms`. No attempt was made.
    Deferred { until_ms: i64 },
    /// A transient error: queued again for `at_ms`. Counts an attempt.
    Retry { at_ms: i64, error: SendFailure },
    /// Refused for good: `failed`. Counts an attempt.
    Failed { error: SendFailure },
    /// Out of attempts: `dead`. Counts an attempt.
    Dead { error: SendFailure },
    /// The call may have reached Meta but its answer was lost: `in_doubt`. Counts an attempt.
    InDoubt { error: SendFailure },
}

impl Settlement {
    /// As stored: the kind (`accepted`, `deferred`, `retry`, `failed`, `dead`, `in_doubt`), the
    /// wamid, the next attempt's time and the error, each when the kind has one.
    pub fn columns(
        &self,
    ) -> (
        &'static str,
        Option<String>,
        Option<i64>,
        Option<&SendFailure>,
    ) {
        match self {
            Self::Accepted { wamid } => ("accepted", Some(wamid.clone()), None, None),
            Self::Deferred { until_ms } => ("deferred", None, Some(*until_ms), None),
            Self::Retry { at_ms, error } => ("retry", None, Some(*at_ms), Some(error)),
            Self::Failed { error } => ("failed", None, None, Some(error)),
            Self::Dead { error } => ("dead", None, None, Some(error)),
            Self::InDoubt { error } => ("in_doubt", None, None, Some(error)),
        }
    }
}

/// Why an attempt did not succeed: Meta's code (0 for a network or rate-limit problem) and
/// the error as JSON (`{code, title, message, details}`, as statuses' errors are stored).
#[derive(Debug, Clone, PartialEq)]
pub struct SendFailure {
    pub code: i64,
    pub json: String,
}

/// What one reconciliation pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// `sending` rows whose claim expired (their worker died): now `in_doubt`.
    pub expired: u64,
    /// `in_doubt` rows proven sent by a status webhook carrying their callback data.
    pub proven_sent: u64,
    /// `in_doubt` rows without evidence after the window: queued again.
    pub requeued: u64,
}

/// The queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueCounts {
    pub queued: u64,
    pub due: u64,
    pub sending: u64,
    pub in_doubt: u64,
    pub dead: u64,
    /// When the oldest queued message was queued (Unix ms).
    pub oldest_queued_at_ms: Option<i64>,
}

/// One send worker's report (`send_workers`).
#[derive(Debug, Clone, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct WorkerReport {
    pub worker_id: String,
    pub started_at_ms: i64,
    pub reported_at_ms: i64,
    pub in_flight: i32,
    pub sent_last_minute: i32,
    pub failed_last_minute: i32,
    pub retried_last_minute: i32,
    pub deferred_last_minute: i32,
    pub sent_total: i64,
    pub failed_total: i64,
    pub retried_total: i64,
    pub last_error_code: i64,
    pub last_error: String,
    pub last_error_at_ms: i64,
}

/// A registered template.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TemplateRow {
    /// Empty: every business number.
    pub waba_id: String,
    pub name: String,
    pub language: String,
    pub category: String,
    /// `approved`, `pending`, `paused`, `rejected`, `disabled`.
    pub status: String,
    pub components_json: String,
    pub fallback_template_name: Option<String>,
    pub fallback_template_language: Option<String>,
    pub fallback_text: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Whether [`OutboundStore::put_template`] creates or replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// Only when (waba_id, name, language) is new.
    Create,
    /// Only when it exists (its `created_at_ms` is kept).
    Update,
}

/// The outbound queue and the template registry.
#[async_trait]
pub trait OutboundStore: Send + Sync {
    /// Queues a batch in ONE transaction, in input order. A message whose (business number,
    /// idempotency key) is known comes back as the stored one, `duplicate`; the same key twice
    /// in one batch is queued once.
    async fn enqueue(
        &self,
        batch: &[NewOutbound],
        now_ms: i64,
    ) -> Result<Vec<Enqueued>, StoreError>;

    async fn get_outbound(&self, key: &OutboundKey) -> Result<Option<OutboundRow>, StoreError>;

    /// Claims up to `limit` queued messages due at `now_ms`, oldest due first, for `worker`:
    /// they become `sending` under `claim_token` until `lease_until_ms`. Concurrent claims
    /// (other workers, other replicas) never get the same row.
    async fn claim(
        &self,
        worker: &str,
        claim_token: i64,
        limit: u32,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Records what became of claimed messages, in ONE transaction. A settle applies only to a
    /// row still held by its claim (`sending` or `in_doubt` under its token); answers how many
    /// applied. An accepted message also enters the conversation history (`messages`, origin
    /// `api`), filling in a row its status webhooks may have created first.
    async fn settle(&self, batch: &[Settle], now_ms: i64) -> Result<u64, StoreError>;

    /// Settles what no worker will: `sending` rows whose lease ended become `in_doubt`; an
    /// `in_doubt` row with a stored status carrying its callback data is `sent` with that
    /// status's wamid; one without evidence since `evidence_before_ms` (it went in doubt before
    /// then) is queued again, due now.
    async fn reconcile(
        &self,
        now_ms: i64,
        evidence_before_ms: i64,
    ) -> Result<Reconciled, StoreError>;

    async fn queue_counts(&self, now_ms: i64) -> Result<QueueCounts, StoreError>;

    /// Stores a worker's report, replacing its previous one.
    async fn report_worker(&self, report: &WorkerReport) -> Result<(), StoreError>;

    /// Reports made since `since_ms`, by worker id.
    async fn worker_reports(&self, since_ms: i64) -> Result<Vec<WorkerReport>, StoreError>;

    /// Creates or replaces a template (see [`Put`]); answers false when it could not (it
    /// exists for `Create`, it does not for `Update`).
    async fn put_template(&self, template: &TemplateRow, put: Put) -> Result<bool, StoreError>;

    async fn get_template(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
    ) -> Result<Option<TemplateRow>, StoreError>;

    /// By (waba_id, name, language); empty filters match everything.
    async fn list_templates(
        &self,
        waba_id: &str,
        name: &str,
    ) -> Result<Vec<TemplateRow>, StoreError>;
}

/// The outcome of each input message, from the rows stored under its key.
pub fn in_input_order(
    batch: &[NewOutbound],
    rows: &HashMap<(String, String), Enqueued>,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut seen = HashSet::new();
    batch
        .iter()
        .map(|m| {
            let key = (
                m.business_phone_number_id.clone(),
                m.idempotency_key.clone(),
            );
            let stored = rows.get(&key).ok_or_else(|| {
                StoreError::Other(sqlx::Error::RowNotFound) // inserted or found: cannot be missing
            })?;
            // The same key again in this batch is a duplicate of the first.
            let first = seen.insert(key);
            Ok(Enqueued {
                row: stored.row.clone(),
                duplicate: stored.duplicate || !first,
            })
        })
        .collect()
}

/// Accepted settles for in-doubt rows a status proved sent: (id, claim token, wamid, the
/// proving status's trace context).
pub fn proven_settles(proven: Vec<(i64, i64, String, Option<String>)>) -> Vec<Settle> {
    proven
        .into_iter()
        .map(|(id, claim_token, wamid, traceparent)| Settle {
            id,
            claim_token,
            result: Settlement::Accepted { wamid },
            traceparent,
        })
        .collect()
}

/// The error an expired claim leaves on its row.
pub const EXPIRED_CLAIM: &str = r#"{"code":0,"title":"claim expired","message":"the worker sending it stopped before recording Meta's answer","details":"in doubt until a status webhook shows whether Meta has it"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_data_round_trips_and_only_ours_parses() {
        let full = Callback {
            outbound_id: 42,
            sent_at_ms: Some(1_700_000_000_123),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        };
        assert_eq!(Callback::parse(&full.encode()), Some(full.clone()));
        let bare = Callback::parse("wamesh:7").unwrap();
        assert_eq!(
            (bare.outbound_id, bare.sent_at_ms, bare.traceparent),
            (7, None, None)
        );
        for theirs in [
            "some data",
            "wamesh:",
            "wamesh:x",
            "wamesh:7:soon",
            "other:7",
        ] {
            assert_eq!(Callback::parse(theirs), None, "{theirs}");
        }
    }
}
