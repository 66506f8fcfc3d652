//! The outbound queue and template registry on SQLite. SQLite has one writer: a claim is one
//! `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING` inside `BEGIN IMMEDIATE`, so two
//! workers can never claim the same row; batches are per-row statements in one transaction.
use std::collections::HashMap;

use async_trait::async_trait;

use super::{SqliteStore, events};
use crate::store::StoreError;
use crate::store::events::NewLogEvent;
use crate::store::outbound::*;

#[async_trait]
impl OutboundStore for SqliteStore {
    async fn enqueue(
        &self,
        batch: &[NewOutbound],
        now_ms: i64,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut rows: HashMap<(String, String), Enqueued> = HashMap::new();
        for m in batch {
            let key = (
                m.business_phone_number_id.clone(),
                m.idempotency_key.clone(),
            );
            if rows.contains_key(&key) {
                continue;
            }
            let inserted: Option<OutboundRow> = sqlx::query_as(
                "INSERT INTO outbound_messages (business_phone_number_id, idempotency_key, request_digest,
                     recipient, type, template_name, template_language, preview, payload, fallback_json, state,
                     next_attempt_at_ms, queued_at_ms, traceparent, tracestate)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)
                 ON CONFLICT (business_phone_number_id, idempotency_key) DO NOTHING
                 RETURNING *",
            )
            .bind(&m.business_phone_number_id)
            .bind(&m.idempotency_key)
            .bind(&m.request_digest)
            .bind(&m.recipient)
            .bind(&m.kind)
            .bind(m.template.as_ref().map(|t| t.0.as_str()))
            .bind(m.template.as_ref().map(|t| t.1.as_str()))
            .bind(m.preview.as_deref())
            .bind(&m.payload)
            .bind(m.fallback_json.as_deref())
            .bind(now_ms)
            .bind(now_ms)
            .bind(m.traceparent.as_deref())
            .bind(m.tracestate.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
            let enqueued = match inserted {
                Some(row) => Enqueued {
                    row,
                    duplicate: false,
                },
                None => Enqueued {
                    row: sqlx::query_as(
                        "SELECT * FROM outbound_messages
                         WHERE business_phone_number_id = ? AND idempotency_key = ?",
                    )
                    .bind(&m.business_phone_number_id)
                    .bind(&m.idempotency_key)
                    .fetch_one(&mut *tx)
                    .await?,
                    duplicate: true,
                },
            };
            rows.insert(key, enqueued);
        }
        events::append(&mut tx, &queued_events(&rows), now_ms).await?;
        tx.commit().await?;
        in_input_order(batch, &rows)
    }

    async fn get_outbound(&self, key: &OutboundKey) -> Result<Option<OutboundRow>, StoreError> {
        let query = match key {
            OutboundKey::Id(id) => {
                sqlx::query_as("SELECT * FROM outbound_messages WHERE id = ?").bind(*id)
            }
            OutboundKey::Idempotency {
                business_phone_number_id,
                key,
            } => sqlx::query_as(
                "SELECT * FROM outbound_messages
                 WHERE business_phone_number_id = ? AND idempotency_key = ?",
            )
            .bind(business_phone_number_id.clone())
            .bind(key.clone()),
        };
        Ok(query.fetch_optional(&self.pool).await?)
    }

    async fn claim(
        &self,
        worker: &str,
        claim_token: i64,
        limit: u32,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut claimed: Vec<Claimed> = sqlx::query_as(
            "UPDATE outbound_messages
             SET state = 'sending', claim_token = ?, claimed_by = ?, lease_until_ms = ?
             WHERE id IN (SELECT id FROM outbound_messages
                          WHERE state = 'queued' AND next_attempt_at_ms <= ?
                          ORDER BY next_attempt_at_ms, id LIMIT ?)
             RETURNING id, business_phone_number_id, recipient, type, payload, attempts, traceparent,
                 tracestate, 0 AS last_inbound_s",
        )
        .bind(claim_token)
        .bind(worker)
        .bind(lease_until_ms)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        for c in &mut claimed {
            c.last_inbound_s = sqlx::query_scalar(
                "SELECT last_inbound_s FROM contacts WHERE business_phone_number_id = ? AND contact_id = ?",
            )
            .bind(&c.business_phone_number_id)
            .bind(&c.recipient)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        }
        tx.commit().await?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    async fn settle(&self, batch: &[Settle], now_ms: i64) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut settled = Vec::new();
        for s in batch {
            let (kind, wamid, next_at, error) = s.result.columns();
            let row: Option<(Settled, Option<String>, String)> = sqlx::query_as(
                "UPDATE outbound_messages SET
                         state = CASE ?1 WHEN 'accepted' THEN 'sent' WHEN 'deferred' THEN 'queued'
                                         WHEN 'retry' THEN 'queued' ELSE ?1 END,
                         attempts = attempts + CASE WHEN ?1 = 'deferred' THEN 0 ELSE 1 END,
                         wamid = COALESCE(?2, wamid),
                         accepted_at_ms = CASE WHEN ?1 = 'accepted' THEN ?3 ELSE accepted_at_ms END,
                         next_attempt_at_ms = COALESCE(?4, next_attempt_at_ms),
                         in_doubt_since_ms = CASE WHEN ?1 = 'in_doubt' THEN ?3 END,
                         error_code = COALESCE(?5, error_code),
                         error_json = COALESCE(?6, error_json),
                         lease_until_ms = NULL
                     WHERE id = ?7 AND claim_token = ?8 AND state IN ('sending', 'in_doubt')
                     RETURNING id, ?1 AS kind, business_phone_number_id, recipient, wamid, type, template_name,
                         error_code, COALESCE(?9, traceparent) AS traceparent, preview, payload",
            )
            .bind(kind)
            .bind(wamid)
            .bind(now_ms)
            .bind(next_at)
            .bind(error.map(|e| e.code))
            .bind(error.map(|e| e.json.as_str()))
            .bind(s.id)
            .bind(s.claim_token)
            .bind(s.traceparent.as_deref())
            .fetch_optional(&mut *tx)
            .await?
            .map(|row: SettledRow| (row.settled, row.preview, row.payload));
            let Some((row, preview, payload)) = row else {
                continue; // no longer held by this claim
            };
            if let (Some(wamid), "accepted") = (&row.wamid, kind) {
                sqlx::query(
                    "INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
                         timestamp_s, received_at_ms, text_body, forwarded, errors_json, raw_json, traceparent)
                     VALUES ('outbound', ?1, 'api', ?2, ?3, ?4, ?5 / 1000, ?5, ?6, 0, '[]', ?7, ?8)
                     ON CONFLICT (wamid, direction) DO UPDATE SET origin = 'api',
                         business_phone_number_id = excluded.business_phone_number_id,
                         contact_id = excluded.contact_id, type = excluded.type,
                         timestamp_s = excluded.timestamp_s, received_at_ms = excluded.received_at_ms,
                         text_body = excluded.text_body, raw_json = excluded.raw_json,
                         traceparent = excluded.traceparent
                     WHERE messages.origin = 'external'",
                )
                .bind(wamid)
                .bind(&row.business_phone_number_id)
                .bind(&row.recipient)
                .bind(&row.message_type)
                .bind(now_ms)
                .bind(preview)
                .bind(payload)
                .bind(row.traceparent.as_deref())
                .execute(&mut *tx)
                .await?;
            }
            settled.push(row);
        }
        let outcomes: Vec<NewLogEvent> = settled.iter().filter_map(settled_event).collect();
        events::append(&mut tx, &outcomes, now_ms).await?;
        tx.commit().await?;
        Ok(settled.len() as u64)
    }

    async fn reconcile(
        &self,
        now_ms: i64,
        evidence_before_ms: i64,
    ) -> Result<Reconciled, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut expired: Vec<Settled> = sqlx::query_as(
            "UPDATE outbound_messages SET state = 'in_doubt', in_doubt_since_ms = ?1, error_code = 0,
                 error_json = ?2, lease_until_ms = NULL
             WHERE state = 'sending' AND lease_until_ms < ?1
             RETURNING id, 'in_doubt' AS kind, business_phone_number_id, recipient, wamid, type,
                 template_name, error_code, traceparent",
        )
        .bind(now_ms)
        .bind(EXPIRED_CLAIM)
        .fetch_all(&mut *tx)
        .await?;
        expired.sort_by_key(|row| row.id);
        let doubts: Vec<NewLogEvent> = expired.iter().filter_map(settled_event).collect();
        events::append(&mut tx, &doubts, now_ms).await?;
        tx.commit().await?;
        let expired = expired.len() as u64;
        let proven: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT o.id, o.claim_token, s.wamid, s.traceparent
             FROM outbound_messages o
             JOIN message_statuses s ON s.rowid = (SELECT rowid FROM message_statuses
                 WHERE outbound_id = o.id ORDER BY received_at_ms LIMIT 1)
             WHERE o.state = 'in_doubt' AND o.claim_token IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        let proven_sent = self.settle(&proven_settles(proven), now_ms).await?;
        let requeued = sqlx::query(
            "UPDATE outbound_messages SET state = 'queued', next_attempt_at_ms = ?1, in_doubt_since_ms = NULL
             WHERE state = 'in_doubt' AND in_doubt_since_ms < ?2
               AND NOT EXISTS (SELECT 1 FROM message_statuses s
                               WHERE s.outbound_id = outbound_messages.id)",
        )
        .bind(now_ms)
        .bind(evidence_before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Reconciled {
            expired,
            proven_sent,
            requeued,
        })
    }

    async fn queue_counts(&self, now_ms: i64) -> Result<QueueCounts, StoreError> {
        let (queued, due, oldest, sending, in_doubt, dead): (i64, i64, Option<i64>, i64, i64, i64) =
            sqlx::query_as(
                "SELECT
                     (SELECT count(*) FROM outbound_messages WHERE state = 'queued'),
                     (SELECT count(*) FROM outbound_messages WHERE state = 'queued' AND next_attempt_at_ms <= ?),
                     (SELECT min(queued_at_ms) FROM outbound_messages WHERE state = 'queued'),
                     (SELECT count(*) FROM outbound_messages WHERE state = 'sending'),
                     (SELECT count(*) FROM outbound_messages WHERE state = 'in_doubt'),
                     (SELECT count(*) FROM outbound_messages WHERE state = 'dead')",
            )
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(QueueCounts {
            queued: queued as u64,
            due: due as u64,
            sending: sending as u64,
            in_doubt: in_doubt as u64,
            dead: dead as u64,
            oldest_queued_at_ms: oldest,
        })
    }

    async fn report_worker(&self, r: &WorkerReport) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT OR REPLACE INTO send_workers (worker_id, started_at_ms, reported_at_ms, in_flight,
                 sent_last_minute, failed_last_minute, retried_last_minute, deferred_last_minute, sent_total,
                 failed_total, retried_total, last_error_code, last_error, last_error_at_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.worker_id)
        .bind(r.started_at_ms)
        .bind(r.reported_at_ms)
        .bind(r.in_flight)
        .bind(r.sent_last_minute)
        .bind(r.failed_last_minute)
        .bind(r.retried_last_minute)
        .bind(r.deferred_last_minute)
        .bind(r.sent_total)
        .bind(r.failed_total)
        .bind(r.retried_total)
        .bind(r.last_error_code)
        .bind(&r.last_error)
        .bind(r.last_error_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn worker_reports(&self, since_ms: i64) -> Result<Vec<WorkerReport>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM send_workers WHERE reported_at_ms >= ? ORDER BY worker_id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn put_template(&self, t: &TemplateRow, put: Put) -> Result<bool, StoreError> {
        let query = match put {
            Put::Create => sqlx::query(
                "INSERT INTO templates (waba_id, name, language, category, status, components_json,
                     fallback_template_name, fallback_template_language, fallback_text, updated_at_ms,
                     created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (waba_id, name, language) DO NOTHING",
            ),
            Put::Update => sqlx::query(
                "UPDATE templates SET category = ?4, status = ?5, components_json = ?6,
                     fallback_template_name = ?7, fallback_template_language = ?8, fallback_text = ?9,
                     updated_at_ms = ?10
                 WHERE waba_id = ?1 AND name = ?2 AND language = ?3",
            ),
        };
        let query = query
            .bind(&t.waba_id)
            .bind(&t.name)
            .bind(&t.language)
            .bind(&t.category)
            .bind(&t.status)
            .bind(&t.components_json)
            .bind(t.fallback_template_name.as_deref())
            .bind(t.fallback_template_language.as_deref())
            .bind(t.fallback_text.as_deref())
            .bind(t.updated_at_ms);
        let query = match put {
            Put::Create => query.bind(t.created_at_ms),
            Put::Update => query,
        };
        Ok(query.execute(&self.pool).await?.rows_affected() == 1)
    }

    async fn get_template(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
    ) -> Result<Option<TemplateRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM templates WHERE waba_id = ? AND name = ? AND language = ?",
        )
        .bind(waba_id)
        .bind(name)
        .bind(language)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn list_templates(
        &self,
        waba_id: &str,
        name: &str,
    ) -> Result<Vec<TemplateRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT * FROM templates WHERE (?1 = '' OR waba_id = ?1) AND (?2 = '' OR name = ?2)
             ORDER BY waba_id, name, language",
        )
        .bind(waba_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A settled row with what the conversation history needs of it.
#[derive(sqlx::FromRow)]
struct SettledRow {
    #[sqlx(flatten)]
    settled: Settled,
    preview: Option<String>,
    payload: String,
}
