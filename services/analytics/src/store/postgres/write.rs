//! Writing a counted batch on Postgres: one statement per table, arrays unnested; sketches
//! merged here with the stored ones, under a row lock.
use std::collections::HashMap;

use sqlx::{Postgres, Row, Transaction};

use crate::facts::{Direction, Fact, UserState};
use crate::rollup::{ConversationCounts, MessageCounts, NumberKey};
use crate::sketch::{Distinct, Quantiles};
use crate::store::StoreError;
use crate::store::rows::FACT_COLUMNS;

pub(super) async fn facts(
    tx: &mut Transaction<'_, Postgres>,
    facts: &[Fact],
) -> Result<(), StoreError> {
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

pub(super) async fn users(
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

pub(super) async fn message_rollups(
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
pub(super) async fn conversations(
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
pub(super) async fn delivery(
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
