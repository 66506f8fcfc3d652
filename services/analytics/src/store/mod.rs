//! analytics' storage: one trait, a Postgres and a SQLite implementation, and ONE conformance
//! suite (`tests/store/`) run against both.
//!
//! Writes are whole batches of events ([`Store::commit`]): the facts and users they changed,
//! the rollup changes, and the consumer's cursor, in one transaction that only commits when
//! the cursor is still where the batch began. That is what makes counting exactly once: a
//! batch is either all in (and its events are behind the cursor) or not at all.
//!
//! Every store keeps the alerts ([`alerts::AlertStore`]) and rate-limit usage peaks
//! ([`peaks::PeakStore`]) too, each in one file per backend beside it.
pub mod alerts;
pub mod peaks;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::apply::Needs;
use crate::facts::{Fact, UserState};
use crate::rollup::{ConversationCounts, Grain, MessageCounts, MessageDims, RollupChanges};
use crate::sketch::{Distinct, Quantiles};

/// Opens the store a URL names (`postgres://...` or `sqlite://...`), running its migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::BadUrl)
    }
}

/// Where the consumer of messaging's event log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    /// The last event counted.
    pub seq: i64,
    /// Events counted since the store was made (including those of no interest).
    pub events_applied: i64,
}

/// One batch of events, counted: everything it changes, and the cursor it moves.
#[derive(Debug, Default)]
pub struct Commit {
    /// The cursor the batch was read from: the commit fails if it moved meanwhile.
    pub from: Cursor,
    pub to_seq: i64,
    pub events: i64,
    pub facts: Vec<Fact>,
    pub users: Vec<UserState>,
    pub rollups: RollupChanges,
}

/// The rollups a question covers: spans of buckets, each of one grain, and filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// (grain, first bucket start, end) with end exclusive: a range is read as its whole days
    /// from the daily rollups and its edges from the hourly ones.
    pub spans: Vec<(Grain, i64, i64)>,
    pub number: Option<String>,
    pub template: Option<String>,
    pub pricing_category: Option<String>,
    pub direction: Option<String>,
    pub message_type: Option<String>,
    pub error_code: Option<i64>,
}

/// How message rollups are summed: what the sums are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupBy {
    pub bucket: bool,
    pub template: bool,
    pub error_code: bool,
}

/// Summed message rollups of one group (the fields not grouped by are empty or 0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageSums {
    pub bucket_ms: i64,
    pub template: String,
    pub error_code: i64,
    pub counts: MessageCounts,
}

/// Conversation rollups of one bucket (or of all, summed and merged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationSums {
    pub bucket_ms: i64,
    pub counts: ConversationCounts,
    pub response_ms: Quantiles,
    pub users: Distinct,
}

/// Delivery times of one template (or of all), merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliverySketch {
    pub bucket_ms: i64,
    pub template: String,
    pub sketch: Quantiles,
}

/// One stored message rollup, as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub grain: Grain,
    pub bucket_ms: i64,
    pub dims: MessageDims,
    pub counts: MessageCounts,
}

/// What a retention purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    pub rollups: u64,
    pub facts: u64,
    pub users: u64,
}

#[async_trait]
pub trait Store: alerts::AlertStore + peaks::PeakStore + Send + Sync {
    /// The key users are hashed with: made at random when the store is created, kept with it.
    async fn hash_key(&self) -> Result<Vec<u8>, StoreError>;

    async fn cursor(&self) -> Result<Cursor, StoreError>;

    /// The facts (by key, and by wamid) and the user states a batch needs.
    async fn load(&self, needs: &Needs) -> Result<(Vec<Fact>, Vec<UserState>), StoreError>;

    /// Writes a counted batch and moves the cursor, all or nothing; [`StoreError::CursorMoved`]
    /// (and nothing written) when the cursor is no longer `commit.from`.
    async fn commit(&self, commit: Commit) -> Result<Cursor, StoreError>;

    /// Message rollups of `selection`, summed per group.
    async fn message_sums(
        &self,
        selection: &Selection,
        by: GroupBy,
    ) -> Result<Vec<MessageSums>, StoreError>;

    /// Conversation rollups of `selection` (number only), per bucket or all merged.
    async fn conversation_sums(
        &self,
        selection: &Selection,
        by_bucket: bool,
    ) -> Result<Vec<ConversationSums>, StoreError>;

    /// Delivery-time sketches of `selection` (number and template), merged per bucket or
    /// template as asked (neither: one sketch of everything).
    async fn delivery_sketches(
        &self,
        selection: &Selection,
        by_bucket: bool,
        by_template: bool,
    ) -> Result<Vec<DeliverySketch>, StoreError>;

    /// The message rollups of `grain` whose bucket begins in `[from_ms, to_ms)`, in key order.
    async fn rollup_rows(
        &self,
        grain: Grain,
        from_ms: i64,
        to_ms: i64,
        number: Option<&str>,
    ) -> Result<Vec<RollupRow>, StoreError>;

    /// Facts of messages whose time (sent or received, else failed) is in `[from_ms, to_ms)`,
    /// in (time, key) order after `after`, at most `limit`.
    async fn facts_page(
        &self,
        from_ms: i64,
        to_ms: i64,
        number: Option<&str>,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Fact>, StoreError>;

    /// Removes rollups (rate-limit usage peaks included, counted with them) of buckets that
    /// begin before `before_ms`, facts of messages from before it, and users not seen since.
    async fn purge(&self, before_ms: i64) -> Result<Purged, StoreError>;

    fn backend(&self) -> &'static str;
}

/// The one error of analytics' storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    BadUrl,
    #[error("another consumer moved the cursor: this batch was not counted")]
    CursorMoved,
    #[error("an alert of this kind and subject is firing already")]
    AlertFiring,
    #[error("a stored alert has an unknown kind {0:?}")]
    UnknownAlertKind(String),
    #[error("a stored sketch does not decode: {0}")]
    Sketch(#[from] crate::sketch::SketchError),
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
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
            _ => Self::Other(e),
        }
    }
}

/// Adds one stored conversation rollup to `sums`: into the entry of its bucket, or into the
/// one entry of everything.
fn merge_conversation(sums: &mut Vec<ConversationSums>, one: ConversationSums, by_bucket: bool) {
    let bucket_ms = if by_bucket { one.bucket_ms } else { 0 };
    let i = match sums.iter().position(|s| s.bucket_ms == bucket_ms) {
        Some(i) => i,
        None => {
            sums.push(ConversationSums {
                bucket_ms,
                ..ConversationSums::default()
            });
            sums.len() - 1
        }
    };
    let entry = &mut sums[i];
    entry.counts += one.counts;
    entry.response_ms.merge(&one.response_ms);
    entry.users.merge(&one.users);
}

/// Adds one stored delivery sketch to `merged`, grouped as asked.
fn merge_delivery(
    merged: &mut Vec<DeliverySketch>,
    one: DeliverySketch,
    by_bucket: bool,
    by_template: bool,
) {
    let bucket_ms = if by_bucket { one.bucket_ms } else { 0 };
    let template = if by_template {
        one.template
    } else {
        String::new()
    };
    match merged
        .iter_mut()
        .find(|d| d.bucket_ms == bucket_ms && d.template == template)
    {
        Some(entry) => entry.sketch.merge(&one.sketch),
        None => merged.push(DeliverySketch {
            bucket_ms,
            template,
            sketch: one.sketch,
        }),
    }
}
