//! analytics' store on Postgres: a batch is written with one statement per table (arrays
//! unnested), sketches are merged in Rust under a row lock.
mod alerts;
mod peaks;
mod write;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{FromRow as _, Postgres};

use super::rows::{
    ConversationRow, DeliveryRow, FACT_COLUMNS, FactRow, MessageRollupRow, SumsRow, UserRow,
};
use super::sql::{self, Bind};
use super::{
    Commit, ConversationSums, Cursor, DeliverySketch, GroupBy, MessageSums, Purged, RollupRow,
    Selection, Store, StoreError,
};
use crate::apply::Needs;
use crate::facts::{Fact, UserState};
use crate::rollup::Grain;

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
        .map(|row| FactRow::from_row(row).map(Fact::from))
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
        .map(|row| UserRow::from_row(row).map(UserState::from))
        .collect::<Result<_, _>>()?;
        Ok((facts, users))
    }

    async fn commit(&self, commit: Commit) -> Result<Cursor, StoreError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::Unavailable)?;
        // No wait for the WAL flush: a crash of Postgres can lose the last moments of commits,
        // but each whole (its counts and its cursor together), so the consumer reads those
        // events again from messaging's log: still counted exactly once.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
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
        write::facts(&mut tx, &commit.facts).await?;
        write::users(&mut tx, &commit.users).await?;
        write::message_rollups(&mut tx, &commit.rollups.messages).await?;
        write::conversations(&mut tx, &commit.rollups.conversations).await?;
        write::delivery(&mut tx, &commit.rollups.delivery).await?;
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
        let mut sums = Vec::with_capacity(rows.len());
        for row in &rows {
            let one = MessageSums::from(SumsRow::from_row(row)?);
            if !one.counts.is_zero() {
                sums.push(one);
            }
        }
        Ok(sums)
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
            let one = ConversationSums::try_from(ConversationRow::from_row(row)?)?;
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
            let one = DeliverySketch::try_from(DeliveryRow::from_row(row)?)?;
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
        rows.iter()
            .map(|row| Ok(MessageRollupRow::from_row(row)?.into_rollup(grain)))
            .collect()
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
        rows.iter()
            .map(|row| Ok(FactRow::from_row(row)?.into()))
            .collect()
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
