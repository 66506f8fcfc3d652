//! Alerts on SQLite.
use async_trait::async_trait;

use super::SqliteStore;
use crate::alerts::{Alert, NewAlert};
use crate::store::StoreError;
use crate::store::alerts::{ALERT_COLUMNS, AlertRow, AlertStore, alert_of_row, insert_error};

#[async_trait]
impl AlertStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(kind = alert.kind.as_str(), subject = %alert.subject))]
    async fn insert_alert(&self, alert: &NewAlert) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO alerts (kind, subject, value, peak, threshold, fired_at_ms, summary)
             VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6) RETURNING id",
        )
        .bind(alert.kind.as_str())
        .bind(&alert.subject)
        .bind(alert.value)
        .bind(alert.threshold)
        .bind(alert.fired_at_ms)
        .bind(&alert.summary)
        .fetch_one(&self.pool)
        .await
        .map_err(insert_error)
    }

    #[tracing::instrument(skip(self))]
    async fn raise_alert_peak(&self, id: i64, peak: f64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE alerts SET peak = ?2
             WHERE id = ?1 AND resolved_at_ms IS NULL AND peak < ?2",
        )
        .bind(id)
        .bind(peak)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn resolve_alert(&self, id: i64, resolved_at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE alerts SET resolved_at_ms = ?2 WHERE id = ?1 AND resolved_at_ms IS NULL",
        )
        .bind(id)
        .bind(resolved_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip(self))]
    async fn list_alerts(&self, firing_only: bool, limit: u32) -> Result<Vec<Alert>, StoreError> {
        let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE NOT ?1 OR resolved_at_ms IS NULL
             ORDER BY fired_at_ms DESC, id DESC LIMIT ?2"
        )))
        .bind(firing_only)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(alert_of_row).collect()
    }

    #[tracing::instrument(skip(self))]
    async fn firing_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        let rows: Vec<AlertRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE resolved_at_ms IS NULL
             ORDER BY fired_at_ms, id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(alert_of_row).collect()
    }
}
