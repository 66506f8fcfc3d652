//! The Postgres store (production). A batch is a handful of statements whatever its size: every
//! table is written with one `INSERT ... SELECT FROM UNNEST(arrays)`, so group commit turns many
//! webhooks into few round trips and one WAL flush.
use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::plan::{BatchPlan, errors_json};
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
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool, for tests and benchmarks that need to look underneath.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(&self, batch: &[IncomingWebhook], stored_at_ms: i64) -> Result<Vec<IngestOutcome>, StoreError> {
        let plan = BatchPlan::new(batch);
        let mut tx = self.pool.begin().await.map_err(StoreError::connecting)?;

        let delivery_ids: Vec<i64> = sqlx::query_scalar(
            "SELECT nextval('webhook_deliveries_id_seq') FROM generate_series(1, $1)",
        )
        .bind(batch.len() as i32)
        .fetch_all(&mut *tx)
        .await?;

        let new_bodies: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO webhook_bodies (sha256, body, first_seen_ms)
             SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bigint[])
             ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
        )
        .bind(plan.bodies.iter().map(|b| b.0).collect::<Vec<_>>())
        .bind(plan.bodies.iter().map(|b| b.1).collect::<Vec<_>>())
        .bind(plan.bodies.iter().map(|b| b.2).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();

        let new_message_slots = insert_messages(&mut tx, &plan, batch, &delivery_ids).await?;
        let new_status_slots = insert_statuses(&mut tx, &plan, batch, &delivery_ids).await?;
        advance_states(&mut tx, &plan, stored_at_ms).await?;
        upsert_contacts(&mut tx, &plan).await?;
        insert_events(&mut tx, &plan, batch, &delivery_ids).await?;

        let outcomes = BatchPlan::outcomes(batch, &delivery_ids, &new_bodies, &new_message_slots, &new_status_slots);
        insert_deliveries(&mut tx, batch, &outcomes, stored_at_ms).await?;
        tx.commit().await?;
        Ok(outcomes)
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

    async fn status_timeline(&self, wamid: &str) -> Result<Vec<StoredStatus>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT wamid, status, timestamp_s, received_at_ms, errors_json, pricing_category, conversation_id
             FROM message_statuses WHERE wamid = $1 ORDER BY timestamp_s, received_at_ms, status",
        )
        .bind(wamid)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn list_messages(&self, phone_number_id: &str, contact_id: &str, before: Option<MessageCursor>, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        let before = before.unwrap_or(MessageCursor { timestamp_s: i64::MAX, id: i64::MAX });
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

    async fn list_contacts(&self, phone_number_id: &str, after: Option<ContactCursor>, limit: u32) -> Result<Vec<StoredContact>, StoreError> {
        let after = after.unwrap_or(ContactCursor { last_seen_ms: i64::MAX, business_phone_number_id: String::new(), contact_id: String::new() });
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

    async fn get_contact(&self, phone_number_id: &str, contact_id: &str) -> Result<Option<StoredContact>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM contacts WHERE business_phone_number_id = $1 AND contact_id = $2")
            .bind(phone_number_id)
            .bind(contact_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn get_delivery(&self, id: i64) -> Result<Option<StoredDelivery>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT d.*, b.body FROM webhook_deliveries d JOIN webhook_bodies b ON b.sha256 = d.body_sha256 WHERE d.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn list_events(&self, field: &str, after_id: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
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

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Postgres>;

/// Inserts the batch's messages; answers the slots of those that were new. A message known
/// until now only from its statuses (origin `external`) gets its content; its state stays.
async fn insert_messages(tx: &mut Tx<'_>, plan: &BatchPlan<'_>, batch: &[IncomingWebhook], ids: &[i64]) -> Result<Vec<usize>, StoreError> {
    let rows = &plan.messages;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&MessageUpdate) -> Option<&str>| rows.iter().map(|(_, m)| f(m)).collect::<Vec<_>>();
    let media = |f: fn(&wamesh_whatsapp::Media) -> &str| {
        rows.iter().map(|(_, m)| m.media.as_ref().map(f)).collect::<Vec<_>>()
    };
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
             timestamp_s, received_at_ms, delivery_id, text_body, media_id, media_mime_type, media_sha256,
             media_caption, media_filename, media_url, latitude, longitude, location_name, location_address,
             reply_id, reply_title, target_message_id, reaction_emoji, context_message_id, forwarded,
             errors_json, raw_json)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[],
             $14::text[], $15::text[], $16::text[], $17::float8[], $18::float8[], $19::text[], $20::text[],
             $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], $26::bool[],
             $27::text[], $28::text[])
         ON CONFLICT (wamid, direction) DO UPDATE SET origin = EXCLUDED.origin,
             business_phone_number_id = EXCLUDED.business_phone_number_id, contact_id = EXCLUDED.contact_id,
             type = EXCLUDED.type, timestamp_s = EXCLUDED.timestamp_s, received_at_ms = EXCLUDED.received_at_ms,
             delivery_id = EXCLUDED.delivery_id, text_body = EXCLUDED.text_body, media_id = EXCLUDED.media_id,
             media_mime_type = EXCLUDED.media_mime_type, media_sha256 = EXCLUDED.media_sha256,
             media_caption = EXCLUDED.media_caption, media_filename = EXCLUDED.media_filename,
             media_url = EXCLUDED.media_url, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
             location_name = EXCLUDED.location_name, location_address = EXCLUDED.location_address,
             reply_id = EXCLUDED.reply_id, reply_title = EXCLUDED.reply_title,
             target_message_id = EXCLUDED.target_message_id, reaction_emoji = EXCLUDED.reaction_emoji,
             context_message_id = EXCLUDED.context_message_id, forwarded = EXCLUDED.forwarded,
             errors_json = EXCLUDED.errors_json, raw_json = EXCLUDED.raw_json
         WHERE messages.origin = 'external'
         RETURNING wamid, direction",
    )
    .bind(rows.iter().map(|(_, m)| Direction::from(m.direction).as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.wamid.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.origin).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.business_phone_number_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.contact_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.timestamp).collect::<Vec<_>>())
    .bind(rows.iter().map(|(slot, _)| batch[*slot].received_at_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|(slot, _)| ids[*slot]).collect::<Vec<_>>())
    .bind(col(|m| m.text.as_deref()))
    .bind(media(|x| &x.id))
    .bind(media(|x| &x.mime_type))
    .bind(media(|x| &x.sha256))
    .bind(media(|x| &x.caption))
    .bind(media(|x| &x.filename))
    .bind(media(|x| &x.url))
    .bind(rows.iter().map(|(_, m)| m.latitude).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.longitude).collect::<Vec<_>>())
    .bind(col(|m| m.location_name.as_deref()))
    .bind(col(|m| m.location_address.as_deref()))
    .bind(col(|m| m.reply_id.as_deref()))
    .bind(col(|m| m.reply_title.as_deref()))
    .bind(col(|m| m.target_message_id.as_deref()))
    .bind(col(|m| m.reaction_emoji.as_deref()))
    .bind(col(|m| m.context_message_id.as_deref()))
    .bind(rows.iter().map(|(_, m)| m.forwarded).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| errors_json(&m.errors)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, m)| m.raw.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let inserted: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(rows
        .iter()
        .filter(|(_, m)| inserted.contains(&(m.wamid.clone(), Direction::from(m.direction).as_str().to_owned())))
        .map(|(slot, _)| *slot)
        .collect())
}

/// Inserts the batch's status events; answers the slots of those that were new.
async fn insert_statuses(tx: &mut Tx<'_>, plan: &BatchPlan<'_>, batch: &[IncomingWebhook], ids: &[i64]) -> Result<Vec<usize>, StoreError> {
    let rows = &plan.statuses;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO message_statuses (wamid, status, timestamp_s, received_at_ms, delivery_id,
             business_phone_number_id, recipient_id, errors_json, pricing_category, conversation_id, raw_json)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
         ON CONFLICT (wamid, status) DO NOTHING RETURNING wamid, status",
    )
    .bind(rows.iter().map(|(_, s)| s.wamid.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.status.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.timestamp).collect::<Vec<_>>())
    .bind(rows.iter().map(|(slot, _)| batch[*slot].received_at_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|(slot, _)| ids[*slot]).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.business_phone_number_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.recipient_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| errors_json(&s.errors)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.pricing_category.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.conversation_id.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, s)| s.raw.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let inserted: HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(rows
        .iter()
        .filter(|(_, s)| inserted.contains(&(s.wamid.clone(), s.status.clone())))
        .map(|(slot, _)| *slot)
        .collect())
}

/// Creates outbound messages known only by their statuses, and moves states forward, never back.
async fn advance_states(tx: &mut Tx<'_>, plan: &BatchPlan<'_>, stored_at_ms: i64) -> Result<(), StoreError> {
    let rows = &plan.states;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
             timestamp_s, received_at_ms, forwarded, errors_json, raw_json, status, status_rank)
         SELECT 'outbound', w, 'external', p, r, '', t, $6, false, '[]', '{}', s, k
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $7::int[]) AS u(w, p, r, t, s, k)
         ON CONFLICT (wamid, direction) DO UPDATE SET status = EXCLUDED.status, status_rank = EXCLUDED.status_rank
         WHERE messages.status_rank < EXCLUDED.status_rank",
    )
    .bind(rows.iter().map(|s| s.wamid).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.business_phone_number_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.recipient_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.timestamp_s).collect::<Vec<_>>())
    .bind(rows.iter().map(|s| s.status.map(|x| x.as_str())).collect::<Vec<_>>())
    .bind(stored_at_ms)
    .bind(rows.iter().map(|s| s.status.map_or(0, |x| x.rank())).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_contacts(tx: &mut Tx<'_>, plan: &BatchPlan<'_>) -> Result<(), StoreError> {
    let rows = &plan.contacts;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO contacts (business_phone_number_id, contact_id, wa_id, user_id, profile_name,
             first_seen_ms, last_seen_ms, last_inbound_s)
         SELECT p, c, w, u, n, s, s, i
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
             AS x(p, c, w, u, n, s, i)
         ON CONFLICT (business_phone_number_id, contact_id) DO UPDATE SET
             wa_id = COALESCE(EXCLUDED.wa_id, contacts.wa_id),
             user_id = COALESCE(EXCLUDED.user_id, contacts.user_id),
             profile_name = COALESCE(EXCLUDED.profile_name, contacts.profile_name),
             last_seen_ms = GREATEST(contacts.last_seen_ms, EXCLUDED.last_seen_ms),
             last_inbound_s = GREATEST(contacts.last_inbound_s, EXCLUDED.last_inbound_s)",
    )
    .bind(rows.iter().map(|c| c.business_phone_number_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.contact_id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.wa_id.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.user_id.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.profile_name.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.seen_at_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|c| c.last_inbound_s).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_events(tx: &mut Tx<'_>, plan: &BatchPlan<'_>, batch: &[IncomingWebhook], ids: &[i64]) -> Result<(), StoreError> {
    let rows = &plan.events;
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_events (dedup_key, delivery_id, received_at_ms, waba_id, business_phone_number_id,
             field, kind, error_code, raw_json)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[],
             $7::text[], $8::bigint[], $9::text[])
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(rows.iter().map(|e| e.dedup_key).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| ids[e.slot]).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| batch[e.slot].received_at_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.waba_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.business_phone_number_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.field).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.kind).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.error_code).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.raw_json).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_deliveries(tx: &mut Tx<'_>, batch: &[IncomingWebhook], outcomes: &[IngestOutcome], stored_at_ms: i64) -> Result<(), StoreError> {
    let count = |f: fn(&IngestOutcome) -> u32| outcomes.iter().map(|o| f(o) as i32).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, body_sha256, received_at_ms, stored_at_ms, size_bytes, duplicate_body,
             verified_by, messages, statuses, contacts, errors, other_fields, new_messages, new_statuses)
         SELECT i, h, r, $14, z, d, v, m, s, c, e, o, nm, ns
         FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bool[], $6::text[], $7::int[],
             $8::int[], $9::int[], $10::int[], $11::int[], $12::int[], $13::int[])
             AS x(i, h, r, z, d, v, m, s, c, e, o, nm, ns)",
    )
    .bind(outcomes.iter().map(|o| o.delivery_id).collect::<Vec<_>>())
    .bind(batch.iter().map(|w| w.body_sha256.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|w| w.received_at_ms).collect::<Vec<_>>())
    .bind(batch.iter().map(|w| w.raw_body.len() as i64).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.duplicate_body).collect::<Vec<_>>())
    .bind(batch.iter().map(|w| w.verified_by.as_str()).collect::<Vec<_>>())
    .bind(count(|o| o.counts.messages))
    .bind(count(|o| o.counts.statuses))
    .bind(count(|o| o.counts.contacts))
    .bind(count(|o| o.counts.errors))
    .bind(count(|o| o.counts.other_fields))
    .bind(count(|o| o.new_messages))
    .bind(count(|o| o.new_statuses))
    .bind(stored_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

use wamesh_whatsapp::MessageUpdate;
