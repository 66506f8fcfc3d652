//! analytics' store on SQLite (the embedded default): one writer, a batch written row by row
//! inside one `BEGIN IMMEDIATE` transaction.
mod alerts;
mod peaks;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow as _, Sqlite, SqliteConnection};

use super::rows::{
    ConversationRow, DeliveryRow, FACT_COLUMNS, FactRow, MessageRollupRow, SumsRow, UserRow,
};
use super::sql::{self, Bind};
use super::{
    Commit, ConversationSums, Cursor, DeliverySketch, GroupBy, MessageSums, Purged, RollupRow,
    Selection, Store, StoreError,
};
use crate::apply::Needs;
use crate::facts::{Direction, Fact, UserState};
use crate::rollup::{ConversationDelta, Grain, MessageCounts, MessageKey, NumberKey};
use crate::sketch::{Distinct, Quantiles};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(StoreError::Unavailable)?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for SqliteStore {
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
            "SELECT {FACT_COLUMNS} FROM facts
             WHERE key IN (SELECT value FROM json_each(?1))
                OR wamid IN (SELECT value FROM json_each(?2))"
        )))
        .bind(json(&needs.fact_keys))
        .bind(json(&needs.wamids))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| FactRow::from_row(row).map(Fact::from))
        .collect::<Result<_, _>>()?;
        let pairs: Vec<(&str, i64)> = needs
            .users
            .iter()
            .map(|(number, user)| (number.as_str(), *user as i64))
            .collect();
        let users = sqlx::query(
            "SELECT number, user_hash, last_direction, turn_started_ms, session_started_ms,
                 session_last_ms
             FROM users WHERE (number, user_hash) IN
                 (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]')
                  FROM json_each(?1))",
        )
        .bind(json(&pairs))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| UserRow::from_row(row).map(UserState::from))
        .collect::<Result<_, _>>()?;
        Ok((facts, users))
    }

    async fn commit(&self, commit: Commit) -> Result<Cursor, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::Unavailable)?;
        let moved: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE consumer SET cursor = ?1, events_applied = events_applied + ?2,
                 updated_at_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
             WHERE cursor = ?3 RETURNING cursor, events_applied",
        )
        .bind(commit.to_seq)
        .bind(commit.events)
        .bind(commit.from.seq)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((seq, events_applied)) = moved else {
            return Err(StoreError::CursorMoved);
        };
        for fact in &commit.facts {
            write_fact(&mut tx, fact).await?;
        }
        for user in &commit.users {
            write_user(&mut tx, user).await?;
        }
        for (key, counts) in &commit.rollups.messages {
            write_message_rollup(&mut tx, key, counts).await?;
        }
        for (key, delta) in &commit.rollups.conversations {
            write_conversation(&mut tx, key, delta).await?;
        }
        for ((key, template), sketch) in &commit.rollups.delivery {
            write_delivery(&mut tx, key, template, sketch).await?;
        }
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
        let (clause, binds) = sql::where_clause(selection, &sql::MESSAGE_DIMS, |n| format!("?{n}"));
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
            sql::where_clause(selection, &sql::CONVERSATION_DIMS, |n| format!("?{n}"));
        let text = format!(
            "SELECT bucket_ms, user_turns, user_turns_answered, business_turns,
                 business_turns_answered, sessions, session_ms, response_ms, users
             FROM conversation_rollups WHERE {clause}"
        );
        let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(text)), &binds)
            .fetch_all(&self.pool)
            .await?;
        let mut sums = Vec::new();
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
            sql::where_clause(selection, &sql::DELIVERY_DIMS, |n| format!("?{n}"));
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
             WHERE grain = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3
                 AND (?4 IS NULL OR number = ?4)
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
             WHERE coalesce(at_ms, failed_ms) >= ?1 AND coalesce(at_ms, failed_ms) < ?2
                 AND (?3 IS NULL OR number = ?3)
                 AND (coalesce(at_ms, failed_ms) > ?4
                      OR (coalesce(at_ms, failed_ms) = ?4 AND key > ?5))
             ORDER BY coalesce(at_ms, failed_ms), key LIMIT ?6"
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
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::Unavailable)?;
        let mut rollups = 0;
        for table in [
            "message_rollups",
            "conversation_rollups",
            "delivery_sketches",
            "ratelimit_peaks",
        ] {
            rollups += sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE bucket_ms < ?1"
            )))
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let facts = sqlx::query("DELETE FROM facts WHERE coalesce(at_ms, failed_ms) < ?1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let users = sqlx::query("DELETE FROM users WHERE session_last_ms < ?1")
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
        "sqlite"
    }
}

/// A list as a JSON array, the way SQLite takes one (`json_each`).
fn json<T: serde::Serialize>(list: &[T]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Int(i) => query.bind(*i),
        };
    }
    query
}

async fn write_fact(conn: &mut SqliteConnection, f: &Fact) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT OR REPLACE INTO facts ({FACT_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
    )))
    .bind(&f.key)
    .bind(f.wamid.as_deref())
    .bind(&f.number)
    .bind(f.user as i64)
    .bind(f.direction.as_str())
    .bind(&f.message_type)
    .bind(&f.template)
    .bind(&f.pricing_category)
    .bind(f.at_ms)
    .bind(f.delivered_ms)
    .bind(f.read_ms)
    .bind(f.failed_ms)
    .bind(f.error_code)
    .bind(f.replied)
    .bind(f.clicked)
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_user(conn: &mut SqliteConnection, u: &UserState) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT OR REPLACE INTO users (number, user_hash, last_direction, turn_started_ms,
             session_started_ms, session_last_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&u.number)
    .bind(u.user as i64)
    .bind(u.last_direction.map(Direction::as_str))
    .bind(u.turn_started_ms)
    .bind(u.session_started_ms)
    .bind(u.session_last_ms)
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_message_rollup(
    conn: &mut SqliteConnection,
    k: &MessageKey,
    c: &MessageCounts,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO message_rollups (grain, bucket_ms, number, direction, message_type, template,
             pricing_category, error_code, messages_in, messages_out, delivered, read, failed,
             rejected, replied, clicked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (grain, bucket_ms, number, direction, message_type, template,
             pricing_category, error_code) DO UPDATE SET
             messages_in = messages_in + excluded.messages_in,
             messages_out = messages_out + excluded.messages_out,
             delivered = delivered + excluded.delivered, read = read + excluded.read,
             failed = failed + excluded.failed, rejected = rejected + excluded.rejected,
             replied = replied + excluded.replied,
             clicked = clicked + excluded.clicked",
    )
    .bind(k.grain.as_str())
    .bind(k.bucket_ms)
    .bind(&k.dims.number)
    .bind(k.dims.direction)
    .bind(&k.dims.message_type)
    .bind(&k.dims.template)
    .bind(&k.dims.pricing_category)
    .bind(k.dims.error_code)
    .bind(c.messages_in)
    .bind(c.messages_out)
    .bind(c.delivered)
    .bind(c.read)
    .bind(c.failed)
    .bind(c.rejected)
    .bind(c.replied)
    .bind(c.clicked)
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_conversation(
    conn: &mut SqliteConnection,
    k: &NumberKey,
    delta: &ConversationDelta,
) -> Result<(), StoreError> {
    let stored: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT response_ms, users FROM conversation_rollups
         WHERE grain = ?1 AND bucket_ms = ?2 AND number = ?3",
    )
    .bind(k.grain.as_str())
    .bind(k.bucket_ms)
    .bind(&k.number)
    .fetch_optional(&mut *conn)
    .await?;
    let (mut response, mut users) = match stored {
        Some((r, u)) => (Quantiles::decode(&r)?, Distinct::decode(&u)?),
        None => (Quantiles::default(), Distinct::default()),
    };
    response.merge(&delta.response_ms);
    users.merge(&delta.users);
    let c = &delta.counts;
    sqlx::query(
        "INSERT INTO conversation_rollups (grain, bucket_ms, number, user_turns,
             user_turns_answered, business_turns, business_turns_answered, sessions, session_ms,
             response_ms, users)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (grain, bucket_ms, number) DO UPDATE SET
             user_turns = user_turns + excluded.user_turns,
             user_turns_answered = user_turns_answered + excluded.user_turns_answered,
             business_turns = business_turns + excluded.business_turns,
             business_turns_answered = business_turns_answered + excluded.business_turns_answered,
             sessions = sessions + excluded.sessions, session_ms = session_ms + excluded.session_ms,
             response_ms = excluded.response_ms, users = excluded.users",
    )
    .bind(k.grain.as_str())
    .bind(k.bucket_ms)
    .bind(&k.number)
    .bind(c.user_turns)
    .bind(c.user_turns_answered)
    .bind(c.business_turns)
    .bind(c.business_turns_answered)
    .bind(c.sessions)
    .bind(c.session_ms)
    .bind(response.encode())
    .bind(users.encode())
    .execute(conn)
    .await?;
    Ok(())
}

async fn write_delivery(
    conn: &mut SqliteConnection,
    k: &NumberKey,
    template: &str,
    sketch: &Quantiles,
) -> Result<(), StoreError> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT sketch FROM delivery_sketches
         WHERE grain = ?1 AND bucket_ms = ?2 AND number = ?3 AND template = ?4",
    )
    .bind(k.grain.as_str())
    .bind(k.bucket_ms)
    .bind(&k.number)
    .bind(template)
    .fetch_optional(&mut *conn)
    .await?;
    let mut merged = match stored {
        Some(bytes) => Quantiles::decode(&bytes)?,
        None => Quantiles::default(),
    };
    merged.merge(sketch);
    sqlx::query(
        "INSERT OR REPLACE INTO delivery_sketches (grain, bucket_ms, number, template, sketch)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .bind(k.grain.as_str())
    .bind(k.bucket_ms)
    .bind(&k.number)
    .bind(template)
    .bind(merged.encode())
    .execute(conn)
    .await?;
    Ok(())
}
