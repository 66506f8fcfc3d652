//! The outbound queue and template registry on Postgres. Every batch operation is one
//! statement over arrays (one round trip); claims use `FOR UPDATE SKIP LOCKED`, so workers of
//! every replica claim disjoint rows without waiting on each other.
use std::collections::HashMap;

use async_trait::async_trait;

use super::{PgStore, events};
use crate::store::StoreError;
use crate::store::events::NewLogEvent;
use crate::store::outbound::*;

#[async_trait]
impl OutboundStore for PgStore {
    async fn enqueue(
        &self,
        batch: &[NewOutbound],
        now_ms: i64,
    ) -> Result<Vec<Enqueued>, StoreError> {
        // Sorted by key, so that concurrent batches take the unique index's locks in one order.
        let mut unique: Vec<&NewOutbound> = batch.iter().collect();
        unique.sort_by(|a, b| key_of(a).cmp(&key_of(b)));
        unique.dedup_by(|a, b| key_of(a) == key_of(b));
        let col = |f: fn(&NewOutbound) -> Option<&str>| -> Vec<Option<&str>> {
            unique.iter().map(|m| f(m)).collect()
        };
        let mut tx = self.pool.begin().await.map_err(StoreError::connecting)?;
        let inserted: Vec<OutboundRow> = sqlx::query_as(
            "INSERT INTO outbound_messages (business_phone_number_id, idempotency_key, request_digest,
                 recipient, type, template_name, template_language, preview, payload, fallback_json, state,
                 next_attempt_at_ms, queued_at_ms, traceparent, tracestate)
             SELECT phone, key, digest, recipient, type, tname, tlang, preview, payload, fallback, 'queued',
                 $13, $13, traceparent, tracestate
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                 $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) WITH ORDINALITY
                 AS t(phone, key, digest, recipient, type, tname, tlang, preview, payload, fallback, traceparent,
                      tracestate, ord)
             ORDER BY ord
             ON CONFLICT (business_phone_number_id, idempotency_key) DO NOTHING
             RETURNING *",
        )
        .bind(col(|m| Some(&m.business_phone_number_id)))
        .bind(col(|m| Some(&m.idempotency_key)))
        .bind(col(|m| Some(&m.request_digest)))
        .bind(col(|m| Some(&m.recipient)))
        .bind(col(|m| Some(&m.kind)))
        .bind(col(|m| m.template.as_ref().map(|t| t.0.as_str())))
        .bind(col(|m| m.template.as_ref().map(|t| t.1.as_str())))
        .bind(col(|m| m.preview.as_deref()))
        .bind(col(|m| Some(&m.payload)))
        .bind(col(|m| m.fallback_json.as_deref()))
        .bind(col(|m| m.traceparent.as_deref()))
        .bind(col(|m| m.tracestate.as_deref()))
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut rows: HashMap<(String, String), Enqueued> = inserted
            .into_iter()
            .map(|row| {
                let key = (
                    row.business_phone_number_id.clone(),
                    row.idempotency_key.clone(),
                );
                (
                    key,
                    Enqueued {
                        row,
                        duplicate: false,
                    },
                )
            })
            .collect();
        if rows.len() < unique.len() {
            let known: Vec<OutboundRow> = sqlx::query_as(
                "SELECT * FROM outbound_messages
                 WHERE (business_phone_number_id, idempotency_key) IN
                     (SELECT * FROM unnest($1::text[], $2::text[]))",
            )
            .bind(col(|m| Some(&m.business_phone_number_id)))
            .bind(col(|m| Some(&m.idempotency_key)))
            .fetch_all(&mut *tx)
            .await?;
            for row in known {
                let key = (
                    row.business_phone_number_id.clone(),
                    row.idempotency_key.clone(),
                );
                rows.entry(key).or_insert(Enqueued {
                    row,
                    duplicate: true,
                });
            }
        }
        events::append(&mut tx, &queued_events(&rows), now_ms).await?;
        tx.commit().await?;
        in_input_order(batch, &rows)
    }

    async fn get_outbound(&self, key: &OutboundKey) -> Result<Option<OutboundRow>, StoreError> {
        let query = match key {
            OutboundKey::Id(id) => {
                sqlx::query_as("SELECT * FROM outbound_messages WHERE id = $1").bind(*id)
            }
            OutboundKey::Idempotency {
                business_phone_number_id,
                key,
            } => sqlx::query_as(
                "SELECT * FROM outbound_messages
                 WHERE business_phone_number_id = $1 AND idempotency_key = $2",
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
        Ok(sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM outbound_messages
                 WHERE state = 'queued' AND next_attempt_at_ms <= $1
                 ORDER BY next_attempt_at_ms, id LIMIT $2
                 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE outbound_messages o
                 SET state = 'sending', claim_token = $3, claimed_by = $4, lease_until_ms = $5
                 FROM due WHERE o.id = due.id
                 RETURNING o.id, o.business_phone_number_id, o.recipient, o.type, o.payload, o.attempts,
                     o.traceparent, o.tracestate)
             SELECT c.*, COALESCE(ct.last_inbound_s, 0) AS last_inbound_s
             FROM claimed c LEFT JOIN contacts ct
                 ON ct.business_phone_number_id = c.business_phone_number_id AND ct.contact_id = c.recipient
             ORDER BY c.id",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(claim_token)
        .bind(worker)
        .bind(lease_until_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn settle(&self, batch: &[Settle], now_ms: i64) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let columns = SettleColumns::of(batch);
        let mut tx = self.pool.begin().await.map_err(StoreError::connecting)?;
        let settled: Vec<Settled> = sqlx::query_as(
            "WITH s AS (
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                     $6::bigint[], $7::text[], $9::text[]) AS t(id, token, kind, wamid, next_at, code, error, trace)),
             upd AS (
                 UPDATE outbound_messages o SET
                     state = CASE s.kind WHEN 'accepted' THEN 'sent' WHEN 'deferred' THEN 'queued'
                                         WHEN 'retry' THEN 'queued' ELSE s.kind END,
                     attempts = o.attempts + CASE WHEN s.kind = 'deferred' THEN 0 ELSE 1 END,
                     wamid = COALESCE(s.wamid, o.wamid),
                     accepted_at_ms = CASE WHEN s.kind = 'accepted' THEN $8 ELSE o.accepted_at_ms END,
                     next_attempt_at_ms = COALESCE(s.next_at, o.next_attempt_at_ms),
                     in_doubt_since_ms = CASE WHEN s.kind = 'in_doubt' THEN $8 END,
                     error_code = COALESCE(s.code, o.error_code),
                     error_json = COALESCE(s.error, o.error_json),
                     lease_until_ms = NULL
                 FROM s
                 -- `o.id = ANY($1)`: the rows by primary key; the planner cannot size an
                 -- unnest, and joined to it alone it scanned the whole table.
                 WHERE o.id = ANY($1) AND o.id = s.id AND o.claim_token = s.token
                   AND o.state IN ('sending', 'in_doubt')
                 RETURNING o.id, o.wamid, o.business_phone_number_id, o.recipient, o.type, o.preview,
                     o.payload, o.template_name, o.error_code, coalesce(s.trace, o.traceparent) AS traceparent,
                     s.kind),
             history AS (
                 INSERT INTO messages (direction, wamid, origin, business_phone_number_id, contact_id, type,
                     timestamp_s, received_at_ms, text_body, forwarded, errors_json, raw_json, traceparent)
                 SELECT 'outbound', wamid, 'api', business_phone_number_id, recipient, type, $8 / 1000, $8,
                     preview, false, '[]', payload, traceparent
                 FROM upd WHERE kind = 'accepted' ORDER BY wamid
                 ON CONFLICT (wamid, direction) DO UPDATE SET origin = 'api',
                     business_phone_number_id = EXCLUDED.business_phone_number_id,
                     contact_id = EXCLUDED.contact_id, type = EXCLUDED.type,
                     timestamp_s = EXCLUDED.timestamp_s, received_at_ms = EXCLUDED.received_at_ms,
                     text_body = EXCLUDED.text_body, raw_json = EXCLUDED.raw_json,
                     traceparent = EXCLUDED.traceparent
                 WHERE messages.origin = 'external')
             SELECT id, kind, business_phone_number_id, recipient, wamid, type, template_name, error_code,
                 traceparent
             FROM upd",
        )
        .bind(&columns.ids)
        .bind(&columns.tokens)
        .bind(&columns.kinds)
        .bind(&columns.wamids)
        .bind(&columns.next_at)
        .bind(&columns.codes)
        .bind(&columns.errors)
        .bind(now_ms)
        .bind(&columns.traces)
        .fetch_all(&mut *tx)
        .await?;
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
        let mut tx = self.pool.begin().await.map_err(StoreError::connecting)?;
        let expired: Vec<Settled> = sqlx::query_as(
            "UPDATE outbound_messages SET state = 'in_doubt', in_doubt_since_ms = $1, error_code = 0,
                 error_json = $2, lease_until_ms = NULL
             WHERE state = 'sending' AND lease_until_ms < $1
             RETURNING id, 'in_doubt' AS kind, business_phone_number_id, recipient, wamid, type,
                 template_name, error_code, traceparent",
        )
        .bind(now_ms)
        .bind(EXPIRED_CLAIM)
        .fetch_all(&mut *tx)
        .await?;
        let doubts: Vec<NewLogEvent> = expired.iter().filter_map(settled_event).collect();
        events::append(&mut tx, &doubts, now_ms).await?;
        tx.commit().await?;
        let expired = expired.len() as u64;
        let proven: Vec<(i64, i64, String, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT ON (o.id) o.id, o.claim_token, s.wamid, s.traceparent
             FROM outbound_messages o
             JOIN message_statuses s ON s.outbound_id = o.id
             WHERE o.state = 'in_doubt' AND o.claim_token IS NOT NULL
             ORDER BY o.id, s.received_at_ms",
        )
        .fetch_all(&self.pool)
        .await?;
        let proven_sent = self.settle(&proven_settles(proven), now_ms).await?;
        let requeued = sqlx::query(
            "UPDATE outbound_messages o SET state = 'queued', next_attempt_at_ms = $1,
                 in_doubt_since_ms = NULL
             WHERE o.state = 'in_doubt' AND o.in_doubt_since_ms < $2
               AND NOT EXISTS (SELECT 1 FROM message_statuses s WHERE s.outbound_id = o.id)",
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
                "SELECT q.queued, q.due, q.oldest, u.sending, u.in_doubt, d.dead FROM
                     (SELECT count(*) AS queued, count(*) FILTER (WHERE next_attempt_at_ms <= $1) AS due,
                          min(queued_at_ms) AS oldest
                      FROM outbound_messages WHERE state = 'queued') AS q,
                     (SELECT count(*) FILTER (WHERE state = 'sending') AS sending,
                          count(*) FILTER (WHERE state = 'in_doubt') AS in_doubt
                      FROM outbound_messages WHERE state IN ('sending', 'in_doubt')) AS u,
                     (SELECT count(*) AS dead FROM outbound_messages WHERE state = 'dead') AS d",
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
        sqlx::query(UPSERT_WORKER)
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
            "SELECT * FROM send_workers WHERE reported_at_ms >= $1 ORDER BY worker_id",
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
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (waba_id, name, language) DO NOTHING",
            ),
            Put::Update => sqlx::query(
                "UPDATE templates SET category = $4, status = $5, components_json = $6,
                     fallback_template_name = $7, fallback_template_language = $8, fallback_text = $9,
                     updated_at_ms = $10
                 WHERE waba_id = $1 AND name = $2 AND language = $3",
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
            "SELECT * FROM templates WHERE waba_id = $1 AND name = $2 AND language = $3",
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
            "SELECT * FROM templates WHERE ($1 = '' OR waba_id = $1) AND ($2 = '' OR name = $2)
             ORDER BY waba_id, name, language",
        )
        .bind(waba_id)
        .bind(name)
        .fetch_all(&self.pool)
        .await?)
    }
}

fn key_of(m: &NewOutbound) -> (&str, &str) {
    (&m.business_phone_number_id, &m.idempotency_key)
}

/// Settles as columns, the way the statement takes them.
struct SettleColumns {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    kinds: Vec<&'static str>,
    wamids: Vec<Option<String>>,
    next_at: Vec<Option<i64>>,
    codes: Vec<Option<i64>>,
    errors: Vec<Option<String>>,
    traces: Vec<Option<String>>,
}

impl SettleColumns {
    fn of(batch: &[Settle]) -> Self {
        let mut c = Self {
            ids: Vec::new(),
            tokens: Vec::new(),
            kinds: Vec::new(),
            wamids: Vec::new(),
            next_at: Vec::new(),
            codes: Vec::new(),
            errors: Vec::new(),
            traces: Vec::new(),
        };
        for s in batch {
            let (kind, wamid, next_at, error) = s.result.columns();
            c.ids.push(s.id);
            c.tokens.push(s.claim_token);
            c.kinds.push(kind);
            c.wamids.push(wamid);
            c.next_at.push(next_at);
            c.codes.push(error.map(|e| e.code));
            c.errors.push(error.map(|e| e.json.clone()));
            c.traces.push(s.traceparent.clone());
        }
        c
    }
}

const UPSERT_WORKER: &str = "INSERT INTO send_workers (worker_id, started_at_ms, reported_at_ms, in_flight,
        sent_last_minute, failed_last_minute, retried_last_minute, deferred_last_minute, sent_total,
        failed_total, retried_total, last_error_code, last_error, last_error_at_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (worker_id) DO UPDATE SET started_at_ms = EXCLUDED.started_at_ms,
        reported_at_ms = EXCLUDED.reported_at_ms, in_flight = EXCLUDED.in_flight,
        sent_last_minute = EXCLUDED.sent_last_minute, failed_last_minute = EXCLUDED.failed_last_minute,
        retried_last_minute = EXCLUDED.retried_last_minute,
        deferred_last_minute = EXCLUDED.deferred_last_minute, sent_total = EXCLUDED.sent_total,
        failed_total = EXCLUDED.failed_total, retried_total = EXCLUDED.retried_total,
        last_error_code = EXCLUDED.last_error_code, last_error = EXCLUDED.last_error,
        last_error_at_ms = EXCLUDED.last_error_at_ms";
