//! Rate-limit usage peaks on SQLite: a batch upserted row by row in one transaction, `max()`
//! against the stored row.
use async_trait::async_trait;
use sqlx::Row;

use super::SqliteStore;
use crate::rollup::Buckets;
use crate::store::peaks::{PeakStore, UsagePeak, merge_peaks, peak_rows};
use crate::store::{Selection, StoreError, sql};

#[async_trait]
impl PeakStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(observations = observations.len()))]
    async fn record_peaks(
        &self,
        buckets: Buckets,
        observations: &[UsagePeak],
    ) -> Result<(), StoreError> {
        let rows = peak_rows(buckets, observations);
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::Unavailable)?;
        for row in &rows {
            // SET reads the stored row as it was: `at_ms` moves only with a peak that beats it.
            sqlx::query(
                "INSERT INTO ratelimit_peaks (grain, bucket_ms, scope, key, usage_ratio, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (grain, bucket_ms, scope, key) DO UPDATE SET
                     usage_ratio = max(usage_ratio, excluded.usage_ratio),
                     at_ms = CASE
                         WHEN excluded.usage_ratio > usage_ratio
                             OR (excluded.usage_ratio = usage_ratio AND excluded.at_ms < at_ms)
                         THEN excluded.at_ms ELSE at_ms END",
            )
            .bind(row.grain.as_str())
            .bind(row.bucket_ms)
            .bind(&row.peak.scope)
            .bind(&row.peak.key)
            .bind(row.peak.usage_ratio)
            .bind(row.peak.at_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(spans = selection.spans.len(), limit))]
    async fn peaks(
        &self,
        selection: &Selection,
        limit: usize,
    ) -> Result<Vec<UsagePeak>, StoreError> {
        let (clause, binds) = sql::where_clause(selection, &[], |n| format!("?{n}"));
        let text =
            format!("SELECT scope, key, usage_ratio, at_ms FROM ratelimit_peaks WHERE {clause}");
        let rows = super::bind_all(sqlx::query(sqlx::AssertSqlSafe(text)), &binds)
            .fetch_all(&self.pool)
            .await?;
        let stored = rows
            .iter()
            .map(|row| {
                Ok(UsagePeak {
                    scope: row.try_get(0)?,
                    key: row.try_get(1)?,
                    usage_ratio: row.try_get(2)?,
                    at_ms: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(merge_peaks(stored, limit))
    }
}
