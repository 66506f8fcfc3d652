//! The event log: every change messaging commits, in commit order, each with the trace context
//! of its change (`event_log`). Ingest appends its events inside its batch function (Postgres)
//! or transaction (SQLite); the send path appends with [`NewLogEvent`]s in the transaction of
//! the change they describe. Sequence numbers come from one head row, taken last and held to
//! commit (see migration 0007), so they are gap-free and in commit order.
use async_trait::async_trait;

use super::StoreError;

/// The kinds of events, as stored and as subscribers filter them.
pub mod kind {
    pub const MESSAGE_RECEIVED: &str = "message.received";
    pub const MESSAGE_ECHOED: &str = "message.echoed";
    pub const STATUS_UPDATED: &str = "status.updated";
    pub const SEND_QUEUED: &str = "send.queued";
    pub const SEND_ACCEPTED: &str = "send.accepted";
    /// An attempt failed with a transient error; the message is queued again.
    pub const SEND_RETRYING: &str = "send.retrying";
    pub const SEND_FAILED: &str = "send.failed";
    pub const SEND_DEAD: &str = "send.dead";
    pub const SEND_IN_DOUBT: &str = "send.in_doubt";
    pub const WEBHOOK_EVENT: &str = "webhook.event";

    /// Every kind, for checking a subscriber's filter.
    pub const ALL: [&str; 10] = [
        MESSAGE_RECEIVED,
        MESSAGE_ECHOED,
        STATUS_UPDATED,
        SEND_QUEUED,
        SEND_ACCEPTED,
        SEND_RETRYING,
        SEND_FAILED,
        SEND_DEAD,
        SEND_IN_DOUBT,
        WEBHOOK_EVENT,
    ];
}

/// An event to append. (Postgres' ingest builds its events in SQL, from the rows it wrote.)
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewLogEvent {
    pub kind: &'static str,
    pub business_phone_number_id: String,
    pub contact_id: String,
    pub wamid: Option<String>,
    pub message_id: Option<i64>,
    pub outbound_id: Option<i64>,
    pub message_type: Option<String>,
    pub status: Option<String>,
    pub error_code: i64,
    pub template_name: Option<String>,
    pub pricing_category: Option<String>,
    pub timestamp_s: Option<i64>,
    pub context_wamid: Option<String>,
    pub reply_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// An event as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LoggedEvent {
    pub seq: i64,
    pub kind: String,
    pub committed_at_ms: i64,
    pub business_phone_number_id: String,
    pub contact_id: String,
    pub wamid: Option<String>,
    pub message_id: Option<i64>,
    pub outbound_id: Option<i64>,
    #[sqlx(rename = "type")]
    pub message_type: Option<String>,
    pub status: Option<String>,
    pub error_code: i64,
    pub template_name: Option<String>,
    pub pricing_category: Option<String>,
    pub timestamp_s: Option<i64>,
    pub context_wamid: Option<String>,
    pub reply_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Reading the log.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Events after `after_seq`, oldest first, at most `limit`; only `kinds` when not empty.
    async fn read_events(
        &self,
        after_seq: i64,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError>;

    /// The newest event's seq (0: none yet).
    async fn last_event_seq(&self) -> Result<i64, StoreError>;
}
