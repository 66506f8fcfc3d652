//! The event log on SQLite: reading it, and appending events inside a write transaction (one
//! writer at a time, so the head's numbers are in commit order by themselves).
use async_trait::async_trait;
use sqlx::SqliteConnection;

use super::SqliteStore;
use crate::store::StoreError;
use crate::store::events::{EventLog, LoggedEvent, NewLogEvent};

/// Appends `events` inside the caller's write transaction.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    events: &[NewLogEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len() as i64;
    let base: i64 =
        sqlx::query_scalar("UPDATE event_log_head SET seq = seq + ?1 RETURNING seq - ?1")
            .bind(n)
            .fetch_one(&mut *conn)
            .await?;
    for (i, e) in events.iter().enumerate() {
        sqlx::query(
            "INSERT INTO event_log (seq, kind, committed_at_ms, business_phone_number_id, contact_id, wamid,
                 message_id, outbound_id, type, status, error_code, template_name, pricing_category,
                 timestamp_s, context_wamid, reply_id, traceparent, tracestate)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(base + i as i64 + 1)
        .bind(e.kind)
        .bind(now_ms)
        .bind(&e.business_phone_number_id)
        .bind(&e.contact_id)
        .bind(e.wamid.as_deref())
        .bind(e.message_id)
        .bind(e.outbound_id)
        .bind(e.message_type.as_deref())
        .bind(e.status.as_deref())
        .bind(e.error_code)
        .bind(e.template_name.as_deref())
        .bind(e.pricing_category.as_deref())
        .bind(e.timestamp_s)
        .bind(e.context_wamid.as_deref())
        .bind(e.reply_id.as_deref())
        .bind(e.traceparent.as_deref())
        .bind(e.tracestate.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn read_events(
        &self,
        after_seq: i64,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM event_log
             WHERE seq > ?1 AND (json_array_length(?2) = 0 OR kind IN (SELECT value FROM json_each(?2)))
             ORDER BY seq LIMIT ?3",
        )
        .bind(after_seq)
        .bind(serde_json::to_string(kinds).unwrap_or_else(|_| "[]".to_owned()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn last_event_seq(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT seq FROM event_log_head")
            .fetch_one(&self.pool)
            .await?)
    }
}
