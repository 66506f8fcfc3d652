//! Rate-limit usage peaks on Postgres: one upsert per batch (arrays unnested), `GREATEST`
//! against the locked stored row.
use async_trait::async_trait;
use sqlx::Row;

use super::PgStore;
use crate::rollup::Buckets;
use crate::store::peaks::{PeakStore, UsagePeak, merge_peaks, peak_rows};
use crate::store::{Selection, StoreError, sql};

#[async_trait]
impl PeakStore for PgStore {
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
        let grains: Vec<&str> = rows.iter().map(|r| r.grain.as_str()).collect();
        let bucket_ms: Vec<i64> = rows.iter().map(|r| r.bucket_ms).collect();
        let scopes: Vec<&str> = rows.iter().map(|r| r.peak.scope.as_str()).collect();
        let keys: Vec<&str> = rows.iter().map(|r| r.peak.key.as_str()).collect();
        let ratios: Vec<f64> = rows.iter().map(|r| r.peak.usage_ratio).collect();
        let at_ms: Vec<i64> = rows.iter().map(|r| r.peak.at_ms).collect();
        // SET reads the stored row as it was: `at_ms` moves only with a peak that beats it.
        sqlx::query(
            "INSERT INTO ratelimit_peaks (grain, bucket_ms, scope, key, usage_ratio, at_ms)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],
                 $5::float8[], $6::bigint[])
             ON CONFLICT (grain, bucket_ms, scope, key) DO UPDATE SET
                 usage_ratio = GREATEST(ratelimit_peaks.usage_ratio, EXCLUDED.usage_ratio),
                 at_ms = CASE
                     WHEN EXCLUDED.usage_ratio > ratelimit_peaks.usage_ratio
                         OR (EXCLUDED.usage_ratio = ratelimit_peaks.usage_ratio
                             AND EXCLUDED.at_ms < ratelimit_peaks.at_ms)
                     THEN EXCLUDED.at_ms ELSE ratelimit_peaks.at_ms END",
        )
        .bind(&grains)
        .bind(&bucket_ms)
        .bind(&scopes)
        .bind(&keys)
        .bind(&ratios)
        .bind(&at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(spans = selection.spans.len(), limit))]
    async fn peaks(
        &self,
        selection: &Selection,
        limit: usize,
    ) -> Result<Vec<UsagePeak>, StoreError> {
        let (clause, binds) = sql::where_clause(selection, &[], |n| format!("${n}"));
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
