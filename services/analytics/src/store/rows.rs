//! Rows as both backends read them (`sqlx::FromRow`, generic over the database), and what they
//! become: one decoding for Postgres and SQLite.
use super::{ConversationSums, DeliverySketch, MessageSums, RollupRow, StoreError};
use crate::facts::{Direction, Fact, UserState};
use crate::rollup::{ConversationCounts, Grain, MessageCounts, MessageDims};
use crate::sketch::{Distinct, Quantiles};

/// The columns of `facts`, in the order [`FactRow`] and the writers use.
pub const FACT_COLUMNS: &str = "key, wamid, number, user_hash, direction, message_type, template, \
    pricing_category, at_ms, delivered_ms, read_ms, failed_ms, error_code, replied, clicked";

#[derive(sqlx::FromRow)]
pub struct FactRow {
    key: String,
    wamid: Option<String>,
    number: String,
    user_hash: i64,
    direction: String,
    message_type: String,
    template: String,
    pricing_category: String,
    at_ms: Option<i64>,
    delivered_ms: Option<i64>,
    read_ms: Option<i64>,
    failed_ms: Option<i64>,
    error_code: i64,
    replied: bool,
    clicked: bool,
}

impl From<FactRow> for Fact {
    fn from(r: FactRow) -> Self {
        Self {
            key: r.key,
            wamid: r.wamid,
            number: r.number,
            user: r.user_hash as u64,
            direction: Direction::parse(&r.direction).unwrap_or(Direction::Outbound),
            message_type: r.message_type,
            template: r.template,
            pricing_category: r.pricing_category,
            at_ms: r.at_ms,
            delivered_ms: r.delivered_ms,
            read_ms: r.read_ms,
            failed_ms: r.failed_ms,
            error_code: r.error_code,
            replied: r.replied,
            clicked: r.clicked,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct UserRow {
    number: String,
    user_hash: i64,
    last_direction: Option<String>,
    turn_started_ms: i64,
    session_started_ms: i64,
    session_last_ms: i64,
}

impl From<UserRow> for UserState {
    fn from(r: UserRow) -> Self {
        Self {
            number: r.number,
            user: r.user_hash as u64,
            last_direction: r.last_direction.as_deref().and_then(Direction::parse),
            turn_started_ms: r.turn_started_ms,
            session_started_ms: r.session_started_ms,
            session_last_ms: r.session_last_ms,
        }
    }
}

/// The counters of a message rollup, as stored or summed (a sum over no rows is NULL).
#[derive(sqlx::FromRow)]
pub struct CountsRow {
    messages_in: Option<i64>,
    messages_out: Option<i64>,
    delivered: Option<i64>,
    read: Option<i64>,
    failed: Option<i64>,
    rejected: Option<i64>,
    replied: Option<i64>,
    clicked: Option<i64>,
}

impl From<CountsRow> for MessageCounts {
    fn from(r: CountsRow) -> Self {
        Self {
            messages_in: r.messages_in.unwrap_or(0),
            messages_out: r.messages_out.unwrap_or(0),
            delivered: r.delivered.unwrap_or(0),
            read: r.read.unwrap_or(0),
            failed: r.failed.unwrap_or(0),
            rejected: r.rejected.unwrap_or(0),
            replied: r.replied.unwrap_or(0),
            clicked: r.clicked.unwrap_or(0),
        }
    }
}

/// A group of summed message rollups (see `sql::message_sums`).
#[derive(sqlx::FromRow)]
pub struct SumsRow {
    bucket_ms: i64,
    template: String,
    error_code: i64,
    #[sqlx(flatten)]
    counts: CountsRow,
}

impl From<SumsRow> for MessageSums {
    fn from(r: SumsRow) -> Self {
        Self {
            bucket_ms: r.bucket_ms,
            template: r.template,
            error_code: r.error_code,
            counts: r.counts.into(),
        }
    }
}

/// A stored message rollup of one grain.
#[derive(sqlx::FromRow)]
pub struct MessageRollupRow {
    bucket_ms: i64,
    number: String,
    direction: String,
    message_type: String,
    template: String,
    pricing_category: String,
    error_code: i64,
    #[sqlx(flatten)]
    counts: CountsRow,
}

impl MessageRollupRow {
    pub fn into_rollup(self, grain: Grain) -> RollupRow {
        RollupRow {
            grain,
            bucket_ms: self.bucket_ms,
            dims: MessageDims {
                number: self.number,
                direction: Direction::parse(&self.direction)
                    .unwrap_or(Direction::Outbound)
                    .as_str(),
                message_type: self.message_type,
                template: self.template,
                pricing_category: self.pricing_category,
                error_code: self.error_code,
            },
            counts: self.counts.into(),
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct ConversationRow {
    bucket_ms: i64,
    user_turns: i64,
    user_turns_answered: i64,
    business_turns: i64,
    business_turns_answered: i64,
    sessions: i64,
    session_ms: i64,
    response_ms: Vec<u8>,
    users: Vec<u8>,
}

impl TryFrom<ConversationRow> for ConversationSums {
    type Error = StoreError;

    fn try_from(r: ConversationRow) -> Result<Self, StoreError> {
        Ok(Self {
            bucket_ms: r.bucket_ms,
            counts: ConversationCounts {
                user_turns: r.user_turns,
                user_turns_answered: r.user_turns_answered,
                business_turns: r.business_turns,
                business_turns_answered: r.business_turns_answered,
                sessions: r.sessions,
                session_ms: r.session_ms,
            },
            response_ms: Quantiles::decode(&r.response_ms)?,
            users: Distinct::decode(&r.users)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    bucket_ms: i64,
    template: String,
    sketch: Vec<u8>,
}

impl TryFrom<DeliveryRow> for DeliverySketch {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        Ok(Self {
            bucket_ms: r.bucket_ms,
            template: r.template,
            sketch: Quantiles::decode(&r.sketch)?,
        })
    }
}
