//! The event log on Postgres: reading it, and appending the send path's events (ingest
//! appends its own inside `wamesh_ingest_batch`). An append takes the head row last in its
//! transaction and holds it to commit: sequence numbers in commit order, without gaps.
use async_trait::async_trait;
use sqlx::PgConnection;

use super::PgStore;
use crate::store::StoreError;
use crate::store::events::{EventLog, LoggedEvent, NewLogEvent};

/// Appends `events` in one statement; call it last in the transaction of their change.
pub(super) async fn append(
    conn: &mut PgConnection,
    events: &[NewLogEvent],
    now_ms: i64,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&NewLogEvent) -> Option<&str>| -> Vec<Option<&str>> {
        events.iter().map(f).collect()
    };
    let int =
        |f: fn(&NewLogEvent) -> Option<i64>| -> Vec<Option<i64>> { events.iter().map(f).collect() };
    sqlx::query(
        "WITH head AS (
             UPDATE event_log_head SET seq = seq + $1 RETURNING seq - $1 AS base)
         INSERT INTO event_log (seq, kind, committed_at_ms, business_phone_number_id, contact_id, wamid,
             message_id, outbound_id, type, status, error_code, template_name, pricing_category,
             timestamp_s, context_wamid, reply_id, traceparent, tracestate)
         SELECT head.base + t.n, t.kind, $2, t.phone, t.contact, t.wamid, t.message_id, t.outbound_id,
             t.type, t.status, t.error_code, t.template, t.pricing, t.ts, t.context, t.reply_id,
             t.traceparent, t.tracestate
         FROM head, unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[],
             $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::bigint[], $15::text[],
             $16::text[], $17::text[], $18::text[]) WITH ORDINALITY
             AS t(kind, phone, contact, wamid, message_id, outbound_id, type, status, error_code, template,
                  pricing, ts, context, reply_id, traceparent, tracestate, n)",
    )
    .bind(events.len() as i64)
    .bind(now_ms)
    .bind(text(|e| Some(e.kind)))
    .bind(text(|e| Some(&e.business_phone_number_id)))
    .bind(text(|e| Some(&e.contact_id)))
    .bind(text(|e| e.wamid.as_deref()))
    .bind(int(|e| e.message_id))
    .bind(int(|e| e.outbound_id))
    .bind(text(|e| e.message_type.as_deref()))
    .bind(text(|e| e.status.as_deref()))
    .bind(int(|e| Some(e.error_code)))
    .bind(text(|e| e.template_name.as_deref()))
    .bind(text(|e| e.pricing_category.as_deref()))
    .bind(int(|e| e.timestamp_s))
    .bind(text(|e| e.context_wamid.as_deref()))
    .bind(text(|e| e.reply_id.as_deref()))
    .bind(text(|e| e.traceparent.as_deref()))
    .bind(text(|e| e.tracestate.as_deref()))
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait]
impl EventLog for PgStore {
    async fn read_events(
        &self,
        after_seq: i64,
        kinds: &[String],
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM event_log
             WHERE seq > $1 AND (cardinality($2::text[]) = 0 OR kind = ANY($2))
             ORDER BY seq LIMIT $3",
        )
        .bind(after_seq)
        .bind(kinds)
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
