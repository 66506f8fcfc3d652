//! The Postgres store (production). A whole batch is ONE call of the `wamesh_ingest_batch`
//! function (migrations 0002, 0003, 0005, 0006, 0007) with one array per column, which writes every table
//! with `INSERT ... SELECT` over the arrays' subscripts in the call's implicit transaction: one
//! round trip and one WAL flush per batch, whatever its size.
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};

mod events;
mod outbound;

use super::plan::{BatchPlan, NewRows, errors_json};
use super::*;

/// Postgres behind a connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl PgStore {
    /// Connects (failing fast when Postgres is down) and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(2))
            // No ping before each use: it was a round trip per batch, a third of a commit's
            // time under load. A dead connection fails its query (503) and is dropped.
            .test_before_acquire(false)
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(
        &self,
        batch: &[IncomingWebhook],
        stored_at_ms: i64,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let plan = BatchPlan::new(batch);
        let mut conn = self.pool.acquire().await.map_err(StoreError::connecting)?;
        // One statement, so one implicit transaction and one round trip (migration 0005).
        let rows: Vec<(String, i32, i64)> = bind_batch(INGEST_BATCH, &plan, batch, stored_at_ms)
            .fetch_all(&mut *conn)
            .await?;
        let mut delivery_ids = vec![0; batch.len()];
        let mut new = NewRows::default();
        for (kind, slot, id) in rows {
            let slot = slot as usize;
            match kind.as_str() {
                "delivery" => delivery_ids[slot] = id,
                "message" => new.message_slots.push(slot),
                "status" => new.status_slots.push(slot),
                _ => new.event_slots.push(slot),
            }
        }
        Ok(BatchPlan::outcomes(batch, &delivery_ids, &new))
    }

    async fn get_message(&self, key: &MessageKey) -> Result<Option<StoredMessage>, StoreError> {
        let query = match key {
            MessageKey::Id(id) => sqlx::query_as("SELECT * FROM messages WHERE id = $1").bind(*id),
            MessageKey::Wamid(wamid, direction) => sqlx::query_as(
                "SELECT * FROM messages WHERE wamid = $1 AND ($2::text IS NULL OR direction = $2)
                 ORDER BY direction DESC LIMIT 1",
            )
            .bind(wamid.clone())
            .bind(direction.map(Direction::as_str)),
        };
        Ok(query.fetch_optional(&self.pool).await?)
    }

    async fn status_timelines(&self, wamids: &[&str]) -> Result<Vec<StoredStatus>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT wamid, status, timestamp_s, received_at_ms, errors_json, pricing_category, conversation_id
             FROM message_statuses WHERE wamid = ANY($1)
             ORDER BY wamid, timestamp_s,
                 CASE status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                     WHEN 'played' THEN 4 WHEN 'failed' THEN 5 ELSE 6 END,
                 received_at_ms, status",
        )
        .bind(wamids)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn list_messages(
        &self,
        phone_number_id: &str,
        contact_id: &str,
        before: Option<MessageCursor>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let before = before.unwrap_or(MessageCursor {
            timestamp_s: i64::MAX,
            id: i64::MAX,
        });
        Ok(sqlx::query_as(
            "SELECT * FROM messages
             WHERE business_phone_number_id = $1 AND contact_id = $2 AND (timestamp_s, id) < ($3, $4)
             ORDER BY timestamp_s DESC, id DESC LIMIT $5",
        )
        .bind(phone_number_id)
        .bind(contact_id)
        .bind(before.timestamp_s)
        .bind(before.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn list_contacts(
        &self,
        phone_number_id: &str,
        after: Option<ContactCursor>,
        limit: u32,
    ) -> Result<Vec<StoredContact>, StoreError> {
        let after = after.unwrap_or(ContactCursor {
            last_seen_ms: i64::MAX,
            business_phone_number_id: String::new(),
            contact_id: String::new(),
        });
        Ok(sqlx::query_as(
            "SELECT * FROM contacts
             WHERE ($1 = '' OR business_phone_number_id = $1)
               AND (last_seen_ms < $2 OR (last_seen_ms = $2 AND (business_phone_number_id, contact_id) > ($3, $4)))
             ORDER BY last_seen_ms DESC, business_phone_number_id, contact_id LIMIT $5",
        )
        .bind(phone_number_id)
        .bind(after.last_seen_ms)
        .bind(after.business_phone_number_id)
        .bind(after.contact_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn get_contact(
        &self,
        phone_number_id: &str,
        contact_id: &str,
    ) -> Result<Option<StoredContact>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM contacts WHERE business_phone_number_id = $1 AND contact_id = $2",
        )
        .bind(phone_number_id)
        .bind(contact_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn get_delivery(&self, id: i64) -> Result<Option<StoredDelivery>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM webhook_deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn list_events(
        &self,
        field: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, delivery_id, received_at_ms, waba_id, business_phone_number_id, field, kind, error_code, raw_json
             FROM webhook_events WHERE ($1 = '' OR field = $1) AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(field)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::connecting)?;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }

    fn pool_stats(&self) -> PoolStats {
        PoolStats::of(&self.pool)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

const INGEST_BATCH: &str = "SELECT kind, slot, id FROM wamesh_ingest_batch(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
    $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39, $40,
    $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52, $53, $54, $55, $56, $57, $58, $59, $60,
    $61, $62, $63, $64, $65, $66, $67, $68, $69, $70, $71, $72, $73, $74, $75, $76, $77)";

type BatchQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, (String, i32, i64), sqlx::postgres::PgArguments>;

/// Binds a planned batch as the arrays `wamesh_ingest_batch` takes, in its parameter order.
fn bind_batch<'q>(
    sql: &'static str,
    plan: &'q BatchPlan<'q>,
    batch: &'q [IncomingWebhook],
    stored_at_ms: i64,
) -> BatchQuery<'q> {
    let counts = |i: usize| column(batch, |w| w.updates.counts()[i] as i32);
    let query = sqlx::query_as(sql)
        .bind(column(batch, |w| w.body_sha256.as_str()))
        .bind(column(batch, |w| w.raw_body.as_slice()))
        .bind(column(batch, |w| w.received_at_ms))
        .bind(column(batch, |w| w.raw_body.len() as i64))
        .bind(column(batch, |w| w.verified_by.as_str()))
        .bind(counts(0))
        .bind(counts(1))
        .bind(counts(2))
        .bind(counts(3))
        .bind(counts(4))
        .bind(column(batch, |w| w.traces.webhook.as_deref()))
        .bind(stored_at_ms);

    let rows = &plan.messages;
    let text = |f: fn(&MessageUpdate) -> Option<&str>| column(rows, |(_, m)| f(m));
    let media =
        |f: fn(&wamesh_whatsapp::Media) -> &str| column(rows, |(_, m)| m.media.as_ref().map(f));
    let query = query
        .bind(column(rows, |(slot, _)| *slot as i32))
        .bind(column(rows, |(_, m)| Direction::from(m.direction).as_str()))
        .bind(column(rows, |(_, m)| m.wamid.as_str()))
        .bind(column(rows, |(_, m)| m.origin))
        .bind(column(rows, |(_, m)| m.business_phone_number_id.as_str()))
        .bind(column(rows, |(_, m)| m.contact_id.as_str()))
        .bind(column(rows, |(_, m)| m.kind.as_str()))
        .bind(column(rows, |(_, m)| m.timestamp))
        .bind(column(rows, |(slot, _)| batch[*slot].received_at_ms))
        .bind(text(|m| m.text.as_deref()))
        .bind(media(|x| &x.id))
        .bind(media(|x| &x.mime_type))
        .bind(media(|x| &x.sha256))
        .bind(media(|x| &x.caption))
        .bind(media(|x| &x.filename))
        .bind(media(|x| &x.url))
        .bind(column(rows, |(_, m)| m.latitude))
        .bind(column(rows, |(_, m)| m.longitude))
        .bind(text(|m| m.location_name.as_deref()))
        .bind(text(|m| m.location_address.as_deref()))
        .bind(text(|m| m.reply_id.as_deref()))
        .bind(text(|m| m.reply_title.as_deref()))
        .bind(text(|m| m.target_message_id.as_deref()))
        .bind(text(|m| m.reaction_emoji.as_deref()))
        .bind(text(|m| m.context_message_id.as_deref()))
        .bind(column(rows, |(_, m)| m.forwarded))
        .bind(column(rows, |(_, m)| errors_json(&m.errors)))
        .bind(column(rows, |(_, m)| m.raw.as_str()))
        .bind(&plan.message_traces);

    let rows = &plan.statuses;
    let query = query
        .bind(column(rows, |(slot, _)| *slot as i32))
        .bind(column(rows, |(_, s)| s.wamid.as_str()))
        .bind(column(rows, |(_, s)| s.status.as_str()))
        .bind(column(rows, |(_, s)| s.timestamp))
        .bind(column(rows, |(slot, _)| batch[*slot].received_at_ms))
        .bind(column(rows, |(_, s)| s.business_phone_number_id.as_str()))
        .bind(column(rows, |(_, s)| s.recipient_id.as_str()))
        .bind(column(rows, |(_, s)| errors_json(&s.errors)))
        .bind(column(rows, |(_, s)| s.pricing_category.as_deref()))
        .bind(column(rows, |(_, s)| s.conversation_id.as_deref()))
        .bind(column(rows, |(_, s)| s.raw.as_str()))
        .bind(column(rows, |(_, s)| s.callback_data.as_deref()))
        .bind(&plan.status_outbound)
        .bind(&plan.status_traces);

    let rows = &plan.states;
    let query = query
        .bind(column(rows, |s| s.wamid))
        .bind(column(rows, |s| s.business_phone_number_id))
        .bind(column(rows, |s| s.recipient_id))
        .bind(column(rows, |s| s.timestamp_s))
        .bind(column(rows, |s| s.status.map(|x| x.as_str())))
        .bind(column(rows, |s| s.status.map_or(0, |x| x.rank())));

    let rows = &plan.contacts;
    let query = query
        .bind(column(rows, |c| c.business_phone_number_id.as_str()))
        .bind(column(rows, |c| c.contact_id.as_str()))
        .bind(column(rows, |c| c.wa_id.as_deref()))
        .bind(column(rows, |c| c.user_id.as_deref()))
        .bind(column(rows, |c| c.profile_name.as_deref()))
        .bind(column(rows, |c| c.seen_at_ms))
        .bind(column(rows, |c| c.last_inbound_s));

    let rows = &plan.events;
    query
        .bind(column(rows, |e| e.slot as i32))
        .bind(column(rows, |e| e.dedup_key))
        .bind(column(rows, |e| batch[e.slot].received_at_ms))
        .bind(column(rows, |e| e.waba_id))
        .bind(column(rows, |e| e.business_phone_number_id))
        .bind(column(rows, |e| e.field))
        .bind(column(rows, |e| e.kind))
        .bind(column(rows, |e| e.error_code))
        .bind(column(rows, |e| e.raw_json))
}

use wamesh_whatsapp::MessageUpdate;

/// One column of a batch: `f` applied to every row, as the array Postgres takes.
fn column<'a, T, U>(rows: &'a [T], f: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(f).collect()
}
