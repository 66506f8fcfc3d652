//! messaging's storage: one trait, a Postgres and a SQLite implementation, and ONE conformance
//! suite (`tests/store_conformance.rs`) that runs against both.
//!
//! A write is always a whole batch of webhook deliveries in one transaction ([`Store::ingest`]):
//! that is what group commit hands over. What to write is decided once, in [`plan`], so both
//! backends store exactly the same rows; the backends only run SQL.
pub mod events;
pub mod outbound;
mod plan;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use wamesh_whatsapp::Updates;

pub use events::EventLog;
pub use outbound::OutboundStore;

/// One verified webhook POST, parsed, ready to be stored.
#[derive(Debug, Clone)]
pub struct IncomingWebhook {
    pub raw_body: Vec<u8>,
    /// Hex SHA-256 of `raw_body`, kept in the delivery log.
    pub body_sha256: String,
    pub received_at_ms: i64,
    pub verified_by: String,
    pub updates: Updates,
    /// The trace contexts its rows are stored (and their events appended) under.
    pub traces: Traces,
}

/// W3C `traceparent`s of one webhook: its own ingest span, and each message's and status's
/// span (aligned with `updates.messages` and `updates.statuses`; missing ones are `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traces {
    pub webhook: Option<String>,
    pub messages: Vec<Option<String>>,
    pub statuses: Vec<Option<String>>,
}

/// How many updates of each kind a webhook held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpdateCounts {
    pub messages: u32,
    pub statuses: u32,
    pub contacts: u32,
    pub errors: u32,
    pub other_fields: u32,
}

/// What storing one webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    pub delivery_id: i64,
    /// It held updates and every one was stored before (a retry by Meta).
    pub duplicate: bool,
    pub counts: UpdateCounts,
    pub new_messages: u32,
    pub new_statuses: u32,
    /// Other fields and value.errors items that were new.
    pub new_events: u32,
}

/// How a message is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKey {
    Id(i64),
    /// Meta's id; `None` direction prefers the outbound message (wamids are unique at Meta,
    /// but test data repeats them across directions).
    Wamid(String, Option<Direction>),
}

/// Message direction as stored (`"inbound"` / `"outbound"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl From<wamesh_whatsapp::Direction> for Direction {
    fn from(d: wamesh_whatsapp::Direction) -> Self {
        match d {
            wamesh_whatsapp::Direction::Inbound => Self::Inbound,
            wamesh_whatsapp::Direction::Outbound => Self::Outbound,
        }
    }
}

/// A stored message, as read back.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: i64,
    pub direction: String,
    pub wamid: String,
    pub origin: String,
    pub business_phone_number_id: String,
    pub contact_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub timestamp_s: i64,
    pub received_at_ms: i64,
    pub text_body: Option<String>,
    pub media_id: Option<String>,
    pub media_mime_type: Option<String>,
    pub media_sha256: Option<String>,
    pub media_caption: Option<String>,
    pub media_filename: Option<String>,
    pub media_url: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub location_name: Option<String>,
    pub location_address: Option<String>,
    pub reply_id: Option<String>,
    pub reply_title: Option<String>,
    pub target_message_id: Option<String>,
    pub reaction_emoji: Option<String>,
    pub context_message_id: Option<String>,
    pub forwarded: bool,
    pub errors_json: String,
    pub status: Option<String>,
    pub status_rank: i32,
    pub raw_json: String,
}

/// One entry of a message's status timeline.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredStatus {
    pub wamid: String,
    pub status: String,
    pub timestamp_s: i64,
    pub received_at_ms: i64,
    pub errors_json: String,
    pub pricing_category: Option<String>,
    pub conversation_id: Option<String>,
}

/// A contact of a business number.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredContact {
    pub business_phone_number_id: String,
    pub contact_id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub last_inbound_s: i64,
}

/// One entry of the webhook delivery log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredDelivery {
    pub id: i64,
    pub body_sha256: String,
    pub received_at_ms: i64,
    pub stored_at_ms: i64,
    pub size_bytes: i64,
    pub duplicate: bool,
    pub verified_by: String,
    pub messages: i32,
    pub statuses: i32,
    pub contacts: i32,
    pub errors: i32,
    pub other_fields: i32,
    pub new_messages: i32,
    pub new_statuses: i32,
    pub new_events: i32,
    pub body: Vec<u8>,
}

/// A non-message webhook update, or a `value.errors` item.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: i64,
    pub delivery_id: i64,
    pub received_at_ms: i64,
    pub waba_id: String,
    pub business_phone_number_id: String,
    pub field: String,
    pub kind: String,
    pub error_code: i64,
    pub raw_json: String,
}

/// Where a newest-first page of messages continues: strictly older than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCursor {
    pub timestamp_s: i64,
    pub id: i64,
}

/// Where a most-recent-first page of contacts continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactCursor {
    pub last_seen_ms: i64,
    pub business_phone_number_id: String,
    pub contact_id: String,
}

/// Storage failures, split by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded: try again later (gRPC UNAVAILABLE).
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken schema (gRPC INTERNAL; the cause is logged, not sent).
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable(e),
            sqlx::Error::Database(db) if is_transient_db_code(db.code().as_deref()) => {
                Self::Unavailable(e)
            }
            _ => Self::Other(e),
        }
    }
}

impl StoreError {
    /// Failing to get a connection at all means the database is unreachable, whatever the
    /// server said (Postgres refuses with "not accepting connections", SQLSTATE 55000, say).
    pub fn connecting(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Migrate(_) => Self::Other(e),
            e => Self::Unavailable(e),
        }
    }
}

/// Postgres codes that mean "try again": connection exceptions (class 08), serialization
/// failure, deadlock, shutdown, too many connections; SQLite's BUSY and LOCKED.
fn is_transient_db_code(code: Option<&str>) -> bool {
    match code {
        Some(code) if code.starts_with("08") => true,
        code => matches!(
            code,
            Some(
                "40001"
                    | "40P01"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "53300"
                    | "5"
                    | "6"
                    | "517"
                    | "262"
            )
        ),
    }
}

/// messaging's storage. Every method is one round of work against the database. Sending's
/// part (the outbound queue, templates, workers) is [`OutboundStore`].
#[async_trait]
pub trait Store: OutboundStore + EventLog + Send + Sync + 'static {
    /// Stores a batch of webhooks in ONE transaction: deliveries, bodies, messages, statuses,
    /// contacts and other events, deduplicated by Meta's ids. Outcomes are in input order.
    async fn ingest(
        &self,
        batch: &[IncomingWebhook],
        stored_at_ms: i64,
    ) -> Result<Vec<IngestOutcome>, StoreError>;
    async fn get_message(&self, key: &MessageKey) -> Result<Option<StoredMessage>, StoreError>;
    /// The timelines of outbound messages, in one query: oldest first within each wamid, and
    /// within one of Meta's seconds in the state machine's order (sent, delivered, read...).
    async fn status_timelines(&self, wamids: &[&str]) -> Result<Vec<StoredStatus>, StoreError>;
    /// Newest first; `before` continues a previous page.
    async fn list_messages(
        &self,
        phone_number_id: &str,
        contact_id: &str,
        before: Option<MessageCursor>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// Most recently seen first; `phone_number_id` empty means every number.
    async fn list_contacts(
        &self,
        phone_number_id: &str,
        after: Option<ContactCursor>,
        limit: u32,
    ) -> Result<Vec<StoredContact>, StoreError>;
    async fn get_contact(
        &self,
        phone_number_id: &str,
        contact_id: &str,
    ) -> Result<Option<StoredContact>, StoreError>;
    async fn get_delivery(&self, id: i64) -> Result<Option<StoredDelivery>, StoreError>;
    /// Oldest first from `after_id`; `field` empty means every field.
    async fn list_events(
        &self,
        field: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// A cheap round trip, for health checks.
    async fn ping(&self) -> Result<(), StoreError>;
    /// The connection pool now (no round trip), for metrics.
    fn pool_stats(&self) -> PoolStats;
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;
}

/// A connection pool at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Open connections waiting for work.
    pub idle: u32,
    /// Open connections lent out (a query or transaction running, or about to).
    pub in_use: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl PoolStats {
    pub fn of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> Self {
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        Self {
            idle,
            in_use: size - idle,
            max: pool.options().get_max_connections(),
        }
    }
}

/// Opens the store a URL names (`postgres://...` or `sqlite://...`), running its migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, max_connections).await?,
        ))
    } else {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    }
}
