//! The events analytics counts: messaging's event log entries, converted at the edge into
//! [`Event`], with the user already replaced by a keyed hash (analytics never stores a phone
//! number).
use wamesh_proto::messaging::v1 as pb;

/// What happened, as messaging's event log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A user's message reached us.
    MessageReceived,
    /// A message the business sent from another client (the WhatsApp Business app).
    MessageEchoed,
    /// A delivery status (sent, delivered, read, failed...) new to us.
    StatusUpdated,
    SendQueued,
    /// Meta accepted one of our sends.
    SendAccepted,
    /// An attempt failed and will be retried.
    SendRetrying,
    /// Refused for good, or out of attempts.
    SendFailed,
    SendDead,
    SendInDoubt,
    /// Any other webhook field, or an error Meta reported outside a message.
    WebhookEvent,
}

impl EventKind {
    /// The kind of a log entry; `None` for a kind this version does not know (skipped, so an
    /// older analytics keeps up with a newer messaging).
    pub fn parse(kind: &str) -> Option<Self> {
        Some(match kind {
            "message.received" => Self::MessageReceived,
            "message.echoed" => Self::MessageEchoed,
            "status.updated" => Self::StatusUpdated,
            "send.queued" => Self::SendQueued,
            "send.accepted" => Self::SendAccepted,
            "send.retrying" => Self::SendRetrying,
            "send.failed" => Self::SendFailed,
            "send.dead" => Self::SendDead,
            "send.in_doubt" => Self::SendInDoubt,
            "webhook.event" => Self::WebhookEvent,
            _ => return None,
        })
    }
}

/// One entry of messaging's event log, as analytics uses it. Strings are empty and numbers 0
/// where the entry has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: i64,
    pub kind: EventKind,
    /// When messaging committed it (Unix ms): the time every count is filed under.
    pub at_ms: i64,
    pub number: String,
    /// The user, as a keyed hash (0: none, for account-wide events).
    pub user: u64,
    pub wamid: String,
    pub outbound_id: i64,
    pub message_type: String,
    pub status: String,
    pub error_code: i64,
    pub template: String,
    pub pricing_category: String,
    /// Meta's timestamp of the message or status (Unix s; 0: none).
    pub timestamp_s: i64,
    /// The message a user's message replies to, and the button or list reply id it carries.
    pub context_wamid: String,
    pub reply_id: String,
}

impl Event {
    /// Converts a log entry, hashing its user with `hash_user`. `None` for kinds this version
    /// does not count.
    pub fn from_proto(e: pb::Event, hash_user: impl Fn(&str) -> u64) -> Option<Self> {
        let kind = EventKind::parse(&e.kind)?;
        let user = if e.contact_id.is_empty() {
            0
        } else {
            hash_user(&e.contact_id)
        };
        Some(Self {
            seq: i64::try_from(e.seq).unwrap_or(i64::MAX),
            kind,
            at_ms: e.committed_at_unix_ms,
            number: e.business_phone_number_id,
            user,
            wamid: e.wamid,
            outbound_id: e.outbound_id,
            message_type: e.r#type,
            status: e.status,
            error_code: e.error_code,
            template: e.template_name,
            pricing_category: e.pricing_category,
            timestamp_s: e.timestamp_unix_s,
            context_wamid: e.context_wamid,
            reply_id: e.reply_id,
        })
    }
}

/// The keyed hash analytics files users under: the first 8 bytes of HMAC-SHA256(key, user id),
/// so the same user counts once across rollups, and an export cannot be turned back into
/// phone numbers without the key.
pub fn user_hash(key: &[u8], user: &str) -> u64 {
    let hex = wamesh_telemetry::redact(key, user);
    u64::from_str_radix(&hex, 16).unwrap_or(0).max(1)
}
