//! analytics' store on Postgres: a batch is written with one statement per table (arrays
//! unnested), sketches are merged in Rust under a row lock.
mod alerts;
mod peaks;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::sql::{self, Bind};
use super::{
    Commit, ConversationSums, Cursor, DeliverySketch, GroupBy, MessageSums, Purged, RollupRow,
    Selection, Store, StoreError,
};
use crate::apply::Needs;
use crate::facts::{Direction, Fact, UserState};
use crate::rollup::{ConversationCounts, Grain, MessageCounts, MessageDims, NumberKey};
use crate::sketch::{Distinct, Quantiles};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Postgres behind a connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (failing fast when Postgres is down) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(StoreError::Unavailable)?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const FACT_COLUMNS: &str = "key, wamid, number, user_hash, direction, message_type, template, \
    pricing_category, at_ms, delivered_ms, read_ms, failed_ms, error_code, replied, clicked";

#[async_trait]
impl Store for PgStore {
    async fn hash_key(&self) -> Result<Vec<u8>, StoreError> {
        Ok(sqlx::query_scalar("SELECT hash_key FROM consumer")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn cursor(&self) -> Result<Cursor, StoreError> {
        let (seq, events_applied) = sqlx::query_as("SELECT cursor, events_applied FROM consumer")
            .fetch_one(&self.pool)
            .await?;
        Ok(Cursor {
            seq,
            events_applied,
        })
    }

    async fn load(&self, needs: &Needs) -> Result<(Vec<Fact>, Vec<UserState>), StoreError> {
        let facts = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {FACT_COLUMNS} FROM facts WHERE key = ANY($1) OR wamid = ANY($2)"
        )))
        .bind(&needs.fact_keys)
        .bind(&needs.wamids)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(fact_of_row)
        .collect::<Result<_, _>>()?;
        let (numbers, hashes): (Vec<&str>, Vec<i64>) = needs
            .users
            .iter()
            .map(|(number, user)| (number.as_str(), *user as i64))
            .unzip();
        let users = sqlx::query(
            "SELECT u.number, u.user_hash, last_direction, turn_started_ms, session_started_ms,
                 session_last_ms
             FROM users u JOIN unnest($1::text[], $2::bigint[]) AS w(number, user_hash)
                 ON u.number = w.number AND u.user_hash = w.user_hash",
        )
        .bind(&numbers)
        .bind(&hashes)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(user_of_row)
        .collect::<Result<_, _>>()?;
        Ok((facts, users))
    }

    async fn commit(&self, commit: Commit) -> Result<Cursor, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Unavailable)?;
        // First, so a second consumer waits here and then finds the cursor moved.
        let moved: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE consumer SET cursor = $1, events_applied = events_applied + $2,
                 updated_at_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint
             WHERE cursor = $3 RETURNING cursor, events_applied",
        )
        .bind(commit.to_seq)
        .bind(commit.events)
        .bind(commit.from.seq)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((seq, events_applied)) = moved else {
            return Err(StoreError::CursorMoved);
        };
        write_facts(&mut tx, &commit.facts).await?;
        write_users(&mut tx, &commit.users).await?;
        write_message_rollups(&mut tx, &commit.rollups.messages).await?;
        write_conversations(&mut tx, &commit.rollups.conversations).await?;
        write_delivery(&mut tx, &commit.rollups.delivery).await?;
        tx.commit().await?;
        Ok(Cursor {
            seq,
            events_applied,
        })
    }

    async fn message_sums(
        &self,
        selection: &Selection,
        by: GroupBy,
    ) -> Result<Vec<MessageSums>, StoreError> {
        let (clause, binds) = sql::where_clause(selection, &sql::MESSAGE_DIMS, |n| format!("${n}"));
        let (select, group_by) = sql::message_sums(by);
        let text = format!("SELECT {select} FROM message_rollups WHERE {clause} {group_by}");
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(text)), &binds)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let sum = |i: usize| -> Result<i64, sqlx::Error> {
                    Ok(row.try_get::<Option<i64>, _>(i)?.unwrap_or(0))
                };
                Ok(MessageSums {
                    bucket_ms: row.try_get(0)?,
                    template: row.try_get(1)?,
                    error_code: row.try_get(2)?,
                    counts: MessageCounts {
                        messages_in: sum(3)?,
                        messages_out: sum(4)?,
                        delivered: sum(5)?,
                        read: sum(6)?,
                        failed: sum(7)?,
                        rejected: sum(8)?,
                        replied: sum(9)?,
                        clicked: sum(10)?,
                    },
                })
            })
            .filter(|sums: &Result<MessageSums, sqlx::Error>| {
                !matches!(sums, Ok(s) if s.counts.is_zero())
            })
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    async fn conversation_sums(
        &self,
        selection: &Selection,
        by_bucket: bool,
    ) -> Result<Vec<ConversationSums>, StoreError> {
        let (clause, binds) =
            sql::where_clause(selection, &sql::CONVERSATION_DIMS, |n| format!("${n}"));
        let text = format!(
            "SELECT bucket_ms, user_turns, user_turns_answered, business_turns,
                 business_turns_answered, sessions, session_ms, response_ms, users
             FROM conversation_rollups WHERE {clause}"
        );
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(text)), &binds)
            .fetch_all(&self.pool)
            .await?;
        let mut sums: Vec<ConversationSums> = Vec::new();
        for row in &rows {
            let one = ConversationSums {
                bucket_ms: row.try_get(0)?,
                counts: ConversationCounts {
                    user_turns: row.try_get(1)?,
                    user_turns_answered: row.try_get(2)?,
                    business_turns: row.try_get(3)?,
                    business_turns_answered: row.try_get(4)?,
                    sessions: row.try_get(5)?,
                    session_ms: row.try_get(6)?,
                },
                response_ms: Quantiles::decode(row.try_get::<&[u8], _>(7)?)?,
                users: Distinct::decode(row.try_get::<&[u8], _>(8)?)?,
            };
            super::merge_conversation(&mut sums, one, by_bucket);
        }
        Ok(sums)
    }

    async fn delivery_sketches(
        &self,
        selection: &Selection,
        by_bucket: bool,
        by_template: bool,
    ) -> Result<Vec<DeliverySketch>, StoreError> {
        let (clause, binds) =
            sql::where_clause(selection, &sql::DELIVERY_DIMS, |n| format!("${n}"));
        let text =
            format!("SELECT bucket_ms, template, sketch FROM delivery_sketches WHERE {clause}");
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(text)), &binds)
            .fetch_all(&self.pool)
            .await?;
        let mut merged = Vec::new();
        for row in &rows {
            let one = DeliverySketch {
                bucket_ms: row.try_get(0)?,
                template: row.try_get(1)?,
                sketch: Quantiles::decode(row.try_get::<&[u8], _>(2)?)?,
            };
            super::merge_delivery(&mut merged, one, by_bucket, by_template);
        }
        Ok(merged)
    }

    async fn rollup_rows(
        &self,
        grain: Grain,
        from_ms: i64,
        to_ms: i64,
        number: Option<&str>,
    ) -> Result<Vec<RollupRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT bucket_ms, number, direction, message_type, template, pricing_category,
                 error_code, messages_in, messages_out, delivered, read, failed, rejected, replied,
                 clicked
             FROM message_rollups
             WHERE grain = $1 AND bucket_ms >= $2 AND bucket_ms < $3
                 AND ($4 IS NULL OR number = $4)
             ORDER BY bucket_ms, number, direction, message_type, template, pricing_category,
                 error_code",
        )
        .bind(grain.as_str())
        .bind(from_ms)
        .bind(to_ms)
        .bind(number)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| rollup_of_row(grain, row)).collect()
    }

    async fn facts_page(
        &self,
        from_ms: i64,
        to_ms: i64,
        number: Option<&str>,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<Fact>, StoreError> {
        let (after_ms, after_key) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {FACT_COLUMNS} FROM facts
             WHERE coalesce(at_ms, failed_ms) >= $1 AND coalesce(at_ms, failed_ms) < $2
                 AND ($3 IS NULL OR number = $3)
                 AND (coalesce(at_ms, failed_ms) > $4
                      OR (coalesce(at_ms, failed_ms) = $4 AND key > $5))
             ORDER BY coalesce(at_ms, failed_ms), key LIMIT $6"
        )))
        .bind(from_ms)
        .bind(to_ms)
        .bind(number)
        .bind(after_ms)
        .bind(after_key)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(fact_of_row).collect()
    }

    async fn purge(&self, before_ms: i64) -> Result<Purged, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Unavailable)?;
        let mut rollups = 0;
        for table in [
            "message_rollups",
            "conversation_rollups",
            "delivery_sketches",
            "ratelimit_peaks",
        ] {
            rollups += sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE bucket_ms < $1"
            )))
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let facts = sqlx::query("DELETE FROM facts WHERE coalesce(at_ms, failed_ms) < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let users = sqlx::query("DELETE FROM users WHERE session_last_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(Purged {
            rollups,
            facts,
            users,
        })
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Int(i) => query.bind(*i),
        };
    }
    query
}

fn rollup_of_row(grain: Grain, row: &sqlx::postgres::PgRow) -> Result<RollupRow, StoreError> {
    let direction: String = row.try_get("direction")?;
    Ok(RollupRow {
        grain,
        bucket_ms: row.try_get("bucket_ms")?,
        dims: MessageDims {
            number: row.try_get("number")?,
            direction: Direction::parse(&direction)
                .unwrap_or(Direction::Outbound)
                .as_str(),
            message_type: row.try_get("message_type")?,
            template: row.try_get("template")?,
            pricing_category: row.try_get("pricing_category")?,
            error_code: row.try_get("error_code")?,
        },
        counts: MessageCounts {
            messages_in: row.try_get("messages_in")?,
            messages_out: row.try_get("messages_out")?,
            delivered: row.try_get("delivered")?,
            read: row.try_get("read")?,
            failed: row.try_get("failed")?,
            rejected: row.try_get("rejected")?,
            replied: row.try_get("replied")?,
            clicked: row.try_get("clicked")?,
        },
    })
}

fn fact_of_row(row: &sqlx::postgres::PgRow) -> Result<Fact, StoreError> {
    let direction: String = row.try_get("direction")?;
    Ok(Fact {
        key: row.try_get("key")?,
        wamid: row.try_get("wamid")?,
        number: row.try_get("number")?,
        user: row.try_get::<i64, _>("user_hash")? as u64,
        direction: Direction::parse(&direction).unwrap_or(Direction::Outbound),
        message_type: row.try_get("message_type")?,
        template: row.try_get("template")?,
        pricing_category: row.try_get("pricing_category")?,
        at_ms: row.try_get("at_ms")?,
        delivered_ms: row.try_get("delivered_ms")?,
        read_ms: row.try_get("read_ms")?,
        failed_ms: row.try_get("failed_ms")?,
        error_code: row.try_get("error_code")?,
        replied: row.try_get("replied")?,
        clicked: row.try_get("clicked")?,
    })
}

fn user_of_row(row: &sqlx::postgres::PgRow) -> Result<UserState, StoreError> {
    let last: Option<String> = row.try_get("last_direction")?;
    Ok(UserState {
        number: row.try_get("number")?,
        user: row.try_get::<i64, _>("user_hash")? as u64,
        last_direction: last.as_deref().and_then(Direction::parse),
        turn_started_ms: row.try_get("turn_started_ms")?,
        session_started_ms: row.try_get("session_started_ms")?,
        session_last_ms: row.try_get("session_last_ms")?,
    })
}

async fn write_facts(tx: &mut Transaction<'_, Postgres>, facts: &[Fact]) -> Result<(), StoreError> {
    if facts.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&Fact) -> Option<i64>| facts.iter().map(f).collect::<Vec<_>>();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO facts ({FACT_COLUMNS})
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[],
             $12::bigint[], $13::bigint[], $14::bool[], $15::bool[])
         ON CONFLICT (key) DO UPDATE SET wamid = EXCLUDED.wamid, user_hash = EXCLUDED.user_hash,
             message_type = EXCLUDED.message_type, template = EXCLUDED.template,
             pricing_category = EXCLUDED.pricing_category, at_ms = EXCLUDED.at_ms,
             delivered_ms = EXCLUDED.delivered_ms, read_ms = EXCLUDED.read_ms,
             failed_ms = EXCLUDED.failed_ms, error_code = EXCLUDED.error_code,
             replied = EXCLUDED.replied, clicked = EXCLUDED.clicked"
    )))
    .bind(facts.iter().map(|f| f.key.as_str()).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.wamid.as_deref()).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.number.as_str()).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.user as i64).collect::<Vec<_>>())
    .bind(
        facts
            .iter()
            .map(|f| f.direction.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        facts
            .iter()
            .map(|f| f.message_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        facts
            .iter()
            .map(|f| f.template.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        facts
            .iter()
            .map(|f| f.pricing_category.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(col(|f| f.at_ms))
    .bind(col(|f| f.delivered_ms))
    .bind(col(|f| f.read_ms))
    .bind(col(|f| f.failed_ms))
    .bind(facts.iter().map(|f| f.error_code).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.replied).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.clicked).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_users(
    tx: &mut Transaction<'_, Postgres>,
    users: &[UserState],
) -> Result<(), StoreError> {
    if users.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO users (number, user_hash, last_direction, turn_started_ms,
             session_started_ms, session_last_ms)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
             $6::bigint[])
         ON CONFLICT (number, user_hash) DO UPDATE SET last_direction = EXCLUDED.last_direction,
             turn_started_ms = EXCLUDED.turn_started_ms,
             session_started_ms = EXCLUDED.session_started_ms,
             session_last_ms = EXCLUDED.session_last_ms",
    )
    .bind(users.iter().map(|u| u.number.as_str()).collect::<Vec<_>>())
    .bind(users.iter().map(|u| u.user as i64).collect::<Vec<_>>())
    .bind(
        users
            .iter()
            .map(|u| u.last_direction.map(Direction::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(users.iter().map(|u| u.turn_started_ms).collect::<Vec<_>>())
    .bind(
        users
            .iter()
            .map(|u| u.session_started_ms)
            .collect::<Vec<_>>(),
    )
    .bind(users.iter().map(|u| u.session_last_ms).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_message_rollups(
    tx: &mut Transaction<'_, Postgres>,
    changes: &HashMap<crate::rollup::MessageKey, MessageCounts>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    // In key order, so two writers could never wait on each other's rows in a cycle.
    let mut rows: Vec<_> = changes.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let count = |f: fn(&MessageCounts) -> i64| rows.iter().map(|(_, c)| f(c)).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO message_rollups (grain, bucket_ms, number, direction, message_type, template,
             pricing_category, error_code, messages_in, messages_out, delivered, read, failed,
             rejected, replied, clicked)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
             $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[])
         ON CONFLICT (grain, bucket_ms, number, direction, message_type, template,
             pricing_category, error_code) DO UPDATE SET
             messages_in = message_rollups.messages_in + EXCLUDED.messages_in,
             messages_out = message_rollups.messages_out + EXCLUDED.messages_out,
             delivered = message_rollups.delivered + EXCLUDED.delivered,
             read = message_rollups.read + EXCLUDED.read,
             failed = message_rollups.failed + EXCLUDED.failed,
             rejected = message_rollups.rejected + EXCLUDED.rejected,
             replied = message_rollups.replied + EXCLUDED.replied,
             clicked = message_rollups.clicked + EXCLUDED.clicked",
    )
    .bind(
        rows.iter()
            .map(|(k, _)| k.grain.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|(k, _)| k.bucket_ms).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|(k, _)| k.dims.number.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(k, _)| k.dims.direction)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(k, _)| k.dims.message_type.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(k, _)| k.dims.template.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(k, _)| k.dims.pricing_category.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|(k, _)| k.dims.error_code)
            .collect::<Vec<_>>(),
    )
    .bind(count(|c| c.messages_in))
    .bind(count(|c| c.messages_out))
    .bind(count(|c| c.delivered))
    .bind(count(|c| c.read))
    .bind(count(|c| c.failed))
    .bind(count(|c| c.rejected))
    .bind(count(|c| c.replied))
    .bind(count(|c| c.clicked))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Conversation rollups: counters added in SQL, sketches merged here with the stored ones
/// (locked first).
async fn write_conversations(
    tx: &mut Transaction<'_, Postgres>,
    changes: &HashMap<NumberKey, crate::rollup::ConversationDelta>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&NumberKey> = changes.keys().collect();
    keys.sort();
    let (grains, buckets, numbers) = key_columns(&keys);
    let stored = sqlx::query(
        "SELECT c.grain, c.bucket_ms, c.number, response_ms, users FROM conversation_rollups c
         JOIN unnest($1::text[], $2::bigint[], $3::text[]) AS k(grain, bucket_ms, number)
             ON c.grain = k.grain AND c.bucket_ms = k.bucket_ms AND c.number = k.number
         ORDER BY c.grain, c.bucket_ms, c.number FOR UPDATE OF c",
    )
    .bind(&grains)
    .bind(&buckets)
    .bind(&numbers)
    .fetch_all(&mut **tx)
    .await?;
    let mut sketches: HashMap<(String, i64, String), (Quantiles, Distinct)> = HashMap::new();
    for row in &stored {
        sketches.insert(
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?),
            (
                Quantiles::decode(row.try_get::<&[u8], _>(3)?)?,
                Distinct::decode(row.try_get::<&[u8], _>(4)?)?,
            ),
        );
    }
    let mut response = Vec::with_capacity(keys.len());
    let mut users = Vec::with_capacity(keys.len());
    for key in &keys {
        let delta = &changes[*key];
        let (mut q, mut d) = sketches
            .remove(&(
                key.grain.as_str().to_owned(),
                key.bucket_ms,
                key.number.clone(),
            ))
            .unwrap_or_default();
        q.merge(&delta.response_ms);
        d.merge(&delta.users);
        response.push(q.encode());
        users.push(d.encode());
    }
    let count = |f: fn(&ConversationCounts) -> i64| {
        keys.iter()
            .map(|k| f(&changes[*k].counts))
            .collect::<Vec<_>>()
    };
    sqlx::query(
        "INSERT INTO conversation_rollups (grain, bucket_ms, number, user_turns,
             user_turns_answered, business_turns, business_turns_answered, sessions, session_ms,
             response_ms, users)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[],
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bytea[], $11::bytea[])
         ON CONFLICT (grain, bucket_ms, number) DO UPDATE SET
             user_turns = conversation_rollups.user_turns + EXCLUDED.user_turns,
             user_turns_answered = conversation_rollups.user_turns_answered + EXCLUDED.user_turns_answered,
             business_turns = conversation_rollups.business_turns + EXCLUDED.business_turns,
             business_turns_answered = conversation_rollups.business_turns_answered
                 + EXCLUDED.business_turns_answered,
             sessions = conversation_rollups.sessions + EXCLUDED.sessions,
             session_ms = conversation_rollups.session_ms + EXCLUDED.session_ms,
             response_ms = EXCLUDED.response_ms, users = EXCLUDED.users",
    )
    .bind(&grains)
    .bind(&buckets)
    .bind(&numbers)
    .bind(count(|c| c.user_turns))
    .bind(count(|c| c.user_turns_answered))
    .bind(count(|c| c.business_turns))
    .bind(count(|c| c.business_turns_answered))
    .bind(count(|c| c.sessions))
    .bind(count(|c| c.session_ms))
    .bind(&response)
    .bind(&users)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Delivery-time sketches, merged here with the stored ones (locked first).
async fn write_delivery(
    tx: &mut Transaction<'_, Postgres>,
    changes: &HashMap<(NumberKey, String), Quantiles>,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&(NumberKey, String)> = changes.keys().collect();
    keys.sort();
    let numbers_keys: Vec<&NumberKey> = keys.iter().map(|(k, _)| k).collect();
    let (grains, buckets, numbers) = key_columns(&numbers_keys);
    let templates: Vec<&str> = keys.iter().map(|(_, t)| t.as_str()).collect();
    let stored = sqlx::query(
        "SELECT d.grain, d.bucket_ms, d.number, d.template, sketch FROM delivery_sketches d
         JOIN unnest($1::text[], $2::bigint[], $3::text[], $4::text[])
             AS k(grain, bucket_ms, number, template)
             ON d.grain = k.grain AND d.bucket_ms = k.bucket_ms AND d.number = k.number
                 AND d.template = k.template
         ORDER BY d.grain, d.bucket_ms, d.number, d.template FOR UPDATE OF d",
    )
    .bind(&grains)
    .bind(&buckets)
    .bind(&numbers)
    .bind(&templates)
    .fetch_all(&mut **tx)
    .await?;
    let mut sketches: HashMap<(String, i64, String, String), Quantiles> = HashMap::new();
    for row in &stored {
        sketches.insert(
            (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            ),
            Quantiles::decode(row.try_get::<&[u8], _>(4)?)?,
        );
    }
    let merged: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| {
            let (k, template) = key;
            let mut q = sketches
                .remove(&(
                    k.grain.as_str().to_owned(),
                    k.bucket_ms,
                    k.number.clone(),
                    template.clone(),
                ))
                .unwrap_or_default();
            q.merge(&changes[*key]);
            q.encode()
        })
        .collect();
    sqlx::query(
        "INSERT INTO delivery_sketches (grain, bucket_ms, number, template, sketch)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[])
         ON CONFLICT (grain, bucket_ms, number, template) DO UPDATE SET sketch = EXCLUDED.sketch",
    )
    .bind(&grains)
    .bind(&buckets)
    .bind(&numbers)
    .bind(&templates)
    .bind(&merged)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn key_columns(keys: &[&NumberKey]) -> (Vec<&'static str>, Vec<i64>, Vec<String>) {
    (
        keys.iter().map(|k| k.grain.as_str()).collect(),
        keys.iter().map(|k| k.bucket_ms).collect(),
        keys.iter().map(|k| k.number.clone()).collect(),
    )
}
