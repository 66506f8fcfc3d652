//! The SQLite store (the embedded default). SQLite has one writer, so a batch is plain
//! per-row statements in one `BEGIN IMMEDIATE` transaction; WAL with `synchronous = FULL` keeps
//! every committed batch across crashes and power loss.
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod events;
mod outbound;

use super::events::{NewLogEvent, kind};
use super::plan::{BatchPlan, NewRows, errors_json};
use super::*;

/// SQLite behind a small pool (one writer at a time; readers run beside it in WAL mode).
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    /// Opens (creating the file when missing) and runs the migrations.
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
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// A write transaction: `BEGIN IMMEDIATE` takes the write lock at once, so two writers
    /// queue for it instead of failing on an upgrade from a read lock.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::connecting)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(
        &self,
        batch: &[IncomingWebhook],
        stored_at_ms: i64,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let plan = BatchPlan::new(batch);
        let mut tx = self.begin_write().await?;

        let last_id: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM webhook_deliveries")
                .fetch_one(&mut *tx)
                .await?;
        let delivery_ids: Vec<i64> = (1..=batch.len() as i64).map(|n| last_id + n).collect();

        let mut new = NewRows::default();
        // (slot, part, order) sorts them as Postgres does: by webhook, then messages,
        // statuses and other events.
        let mut events: Vec<((usize, u8, i64), NewLogEvent)> = Vec::new();
        for ((slot, m), trace) in plan.messages.iter().zip(&plan.message_traces) {
            let media = m.media.as_ref();
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
                     timestamp_s, received_at_ms, delivery_id, text_body, media_id, media_mime_type, media_sha256,
                     media_caption, media_filename, media_url, latitude, longitude, location_name, location_address,
                     reply_id, reply_title, target_message_id, reaction_emoji, context_message_id, forwarded,
                     errors_json, raw_json, traceparent)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (wamid, direction) DO UPDATE SET origin = excluded.origin,
                     business_phone_number_id = excluded.business_phone_number_id, contact_id = excluded.contact_id,
                     type = excluded.type, timestamp_s = excluded.timestamp_s, received_at_ms = excluded.received_at_ms,
                     delivery_id = excluded.delivery_id, text_body = excluded.text_body, media_id = excluded.media_id,
                     media_mime_type = excluded.media_mime_type, media_sha256 = excluded.media_sha256,
                     media_caption = excluded.media_caption, media_filename = excluded.media_filename,
                     media_url = excluded.media_url, latitude = excluded.latitude, longitude = excluded.longitude,
                     location_name = excluded.location_name, location_address = excluded.location_address,
                     reply_id = excluded.reply_id, reply_title = excluded.reply_title,
                     target_message_id = excluded.target_message_id, reaction_emoji = excluded.reaction_emoji,
                     context_message_id = excluded.context_message_id, forwarded = excluded.forwarded,
                     errors_json = excluded.errors_json, raw_json = excluded.raw_json,
                     traceparent = excluded.traceparent
                 WHERE messages.origin = 'external'
                 RETURNING id",
            )
            .bind(Direction::from(m.direction).as_str())
            .bind(&m.wamid)
            .bind(m.origin)
            .bind(&m.business_phone_number_id)
            .bind(&m.contact_id)
            .bind(&m.kind)
            .bind(m.timestamp)
            .bind(batch[*slot].received_at_ms)
            .bind(delivery_ids[*slot])
            .bind(m.text.as_deref())
            .bind(media.map(|x| x.id.as_str()))
            .bind(media.map(|x| x.mime_type.as_str()))
            .bind(media.map(|x| x.sha256.as_str()))
            .bind(media.map(|x| x.caption.as_str()))
            .bind(media.map(|x| x.filename.as_str()))
            .bind(media.map(|x| x.url.as_str()))
            .bind(m.latitude)
            .bind(m.longitude)
            .bind(m.location_name.as_deref())
            .bind(m.location_address.as_deref())
            .bind(m.reply_id.as_deref())
            .bind(m.reply_title.as_deref())
            .bind(m.target_message_id.as_deref())
            .bind(m.reaction_emoji.as_deref())
            .bind(m.context_message_id.as_deref())
            .bind(m.forwarded)
            .bind(errors_json(&m.errors))
            .bind(&m.raw)
            .bind(*trace)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = inserted {
                new.message_slots.push(*slot);
                let kind = match m.direction {
                    wamesh_whatsapp::Direction::Inbound => kind::MESSAGE_RECEIVED,
                    wamesh_whatsapp::Direction::Outbound => kind::MESSAGE_ECHOED,
                };
                let event = NewLogEvent {
                    kind,
                    business_phone_number_id: m.business_phone_number_id.clone(),
                    contact_id: m.contact_id.clone(),
                    wamid: Some(m.wamid.clone()),
                    message_id: Some(id),
                    message_type: Some(m.kind.clone()),
                    timestamp_s: Some(m.timestamp),
                    context_wamid: m.context_message_id.clone(),
                    reply_id: m.reply_id.clone(),
                    traceparent: trace.map(str::to_owned),
                    ..NewLogEvent::default()
                };
                events.push(((*slot, 1, id), event));
            }
        }

        let statuses = plan
            .statuses
            .iter()
            .zip(&plan.status_traces)
            .zip(&plan.status_outbound);
        for (n, (((slot, s), trace), outbound_id)) in statuses.enumerate() {
            let done = sqlx::query(
                "INSERT INTO message_statuses (wamid, status, timestamp_s, received_at_ms, delivery_id,
                     business_phone_number_id, recipient_id, errors_json, pricing_category, conversation_id, raw_json,
                     callback_data, outbound_id, traceparent)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (wamid, status) DO NOTHING",
            )
            .bind(&s.wamid)
            .bind(&s.status)
            .bind(s.timestamp)
            .bind(batch[*slot].received_at_ms)
            .bind(delivery_ids[*slot])
            .bind(&s.business_phone_number_id)
            .bind(&s.recipient_id)
            .bind(errors_json(&s.errors))
            .bind(s.pricing_category.as_deref())
            .bind(s.conversation_id.as_deref())
            .bind(&s.raw)
            .bind(s.callback_data.as_deref())
            .bind(*outbound_id)
            .bind(*trace)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                new.status_slots.push(*slot);
                let event = NewLogEvent {
                    kind: kind::STATUS_UPDATED,
                    business_phone_number_id: s.business_phone_number_id.clone(),
                    contact_id: s.recipient_id.clone(),
                    wamid: Some(s.wamid.clone()),
                    outbound_id: *outbound_id,
                    status: Some(s.status.clone()),
                    error_code: s.errors.first().map_or(0, |e| e.code),
                    pricing_category: s.pricing_category.clone(),
                    timestamp_s: Some(s.timestamp),
                    traceparent: trace.map(str::to_owned),
                    ..NewLogEvent::default()
                };
                events.push(((*slot, 2, n as i64), event));
            }
        }

        for state in &plan.states {
            sqlx::query(
                "INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
                     timestamp_s, received_at_ms, forwarded, errors_json, raw_json, status, status_rank)
                 VALUES ('outbound', ?, 'external', ?, ?, '', ?, ?, false, '[]', '{}', ?, ?)
                 ON CONFLICT (wamid, direction) DO UPDATE SET status = excluded.status, status_rank = excluded.status_rank
                 WHERE messages.status_rank < excluded.status_rank",
            )
            .bind(state.wamid)
            .bind(state.business_phone_number_id)
            .bind(state.recipient_id)
            .bind(state.timestamp_s)
            .bind(stored_at_ms)
            .bind(state.status.map(|x| x.as_str()))
            .bind(state.status.map_or(0, |x| x.rank()))
            .execute(&mut *tx)
            .await?;
        }

        for c in &plan.contacts {
            sqlx::query(
                "INSERT INTO contacts (business_phone_number_id, contact_id, wa_id, user_id, profile_name,
                     first_seen_ms, last_seen_ms, last_inbound_s)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (business_phone_number_id, contact_id) DO UPDATE SET
                     wa_id = COALESCE(excluded.wa_id, contacts.wa_id),
                     user_id = COALESCE(excluded.user_id, contacts.user_id),
                     profile_name = COALESCE(excluded.profile_name, contacts.profile_name),
                     last_seen_ms = MAX(contacts.last_seen_ms, excluded.last_seen_ms),
                     last_inbound_s = MAX(contacts.last_inbound_s, excluded.last_inbound_s)",
            )
            .bind(&c.business_phone_number_id)
            .bind(&c.contact_id)
            .bind(c.wa_id.as_deref())
            .bind(c.user_id.as_deref())
            .bind(c.profile_name.as_deref())
            .bind(c.seen_at_ms)
            .bind(c.seen_at_ms)
            .bind(c.last_inbound_s)
            .execute(&mut *tx)
            .await?;
        }

        for e in &plan.events {
            let inserted: Option<i64> = sqlx::query_scalar(
                "INSERT INTO webhook_events (dedup_key, delivery_id, received_at_ms, waba_id, business_phone_number_id,
                     field, kind, error_code, raw_json)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
            )
            .bind(e.dedup_key)
            .bind(delivery_ids[e.slot])
            .bind(batch[e.slot].received_at_ms)
            .bind(e.waba_id)
            .bind(e.business_phone_number_id)
            .bind(e.field)
            .bind(e.kind)
            .bind(e.error_code)
            .bind(e.raw_json)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = inserted {
                new.event_slots.push(e.slot);
                let event = NewLogEvent {
                    kind: kind::WEBHOOK_EVENT,
                    business_phone_number_id: e.business_phone_number_id.to_owned(),
                    message_type: Some(e.field.to_owned()),
                    error_code: e.error_code,
                    traceparent: batch[e.slot].traces.webhook.clone(),
                    ..NewLogEvent::default()
                };
                events.push(((e.slot, 3, id), event));
            }
        }

        let outcomes = BatchPlan::outcomes(batch, &delivery_ids, &new);
        for (webhook, o) in batch.iter().zip(&outcomes) {
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, body, body_sha256, received_at_ms, stored_at_ms, size_bytes,
                     duplicate, verified_by, messages, statuses, contacts, errors, other_fields, new_messages,
                     new_statuses, new_events)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(o.delivery_id)
            .bind(&webhook.raw_body)
            .bind(&webhook.body_sha256)
            .bind(webhook.received_at_ms)
            .bind(stored_at_ms)
            .bind(webhook.raw_body.len() as i64)
            .bind(o.duplicate)
            .bind(&webhook.verified_by)
            .bind(o.counts.messages)
            .bind(o.counts.statuses)
            .bind(o.counts.contacts)
            .bind(o.counts.errors)
            .bind(o.counts.other_fields)
            .bind(o.new_messages)
            .bind(o.new_statuses)
            .bind(o.new_events)
            .execute(&mut *tx)
            .await?;
        }
        events.sort_by_key(|(order, _)| *order);
        let mut events: Vec<NewLogEvent> = events.into_iter().map(|(_, e)| e).collect();
        for event in events.iter_mut().filter(|e| e.kind == kind::STATUS_UPDATED) {
            event.message_id = sqlx::query_scalar(
                "SELECT id FROM messages WHERE wamid = ? AND direction = 'outbound'",
            )
            .bind(event.wamid.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
        }
        events::append(&mut tx, &events, stored_at_ms).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn get_message(&self, key: &MessageKey) -> Result<Option<StoredMessage>, StoreError> {
        let query = match key {
            MessageKey::Id(id) => sqlx::query_as("SELECT * FROM messages WHERE id = ?").bind(*id),
            MessageKey::Wamid(wamid, direction) => sqlx::query_as(
                "SELECT * FROM messages WHERE wamid = ?1 AND (?2 IS NULL OR direction = ?2)
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
             FROM message_statuses WHERE wamid IN (SELECT value FROM json_each(?))
             ORDER BY wamid, timestamp_s,
                 CASE status WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2 WHEN 'read' THEN 3
                     WHEN 'played' THEN 4 WHEN 'failed' THEN 5 ELSE 6 END,
                 received_at_ms, status",
        )
        .bind(serde_json::to_string(wamids).unwrap_or_else(|_| "[]".to_owned()))
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
             WHERE business_phone_number_id = ?1 AND contact_id = ?2 AND (timestamp_s, id) < (?3, ?4)
             ORDER BY timestamp_s DESC, id DESC LIMIT ?5",
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
             WHERE (?1 = '' OR business_phone_number_id = ?1)
               AND (last_seen_ms < ?2 OR (last_seen_ms = ?2 AND (business_phone_number_id, contact_id) > (?3, ?4)))
             ORDER BY last_seen_ms DESC, business_phone_number_id, contact_id LIMIT ?5",
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
            "SELECT * FROM contacts WHERE business_phone_number_id = ? AND contact_id = ?",
        )
        .bind(phone_number_id)
        .bind(contact_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn get_delivery(&self, id: i64) -> Result<Option<StoredDelivery>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM webhook_deliveries WHERE id = ?")
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
             FROM webhook_events WHERE (?1 = '' OR field = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
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
        "sqlite"
    }
}
