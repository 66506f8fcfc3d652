//! Where alerts are kept: every alert that fired, firing until it has a `resolved_at`. The
//! database holds at most one firing alert per (kind, subject) (a partial unique index), so two
//! evaluators (or a restart) cannot fire the same alert twice.
use async_trait::async_trait;

use super::StoreError;
use crate::alerts::{Alert, AlertKind, NewAlert};

#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Stores a firing alert (its peak is its value) and answers its id;
    /// [`StoreError::AlertFiring`] (and nothing stored) when one of its kind and subject fires
    /// already.
    async fn insert_alert(&self, alert: &NewAlert) -> Result<i64, StoreError>;

    /// Raises a firing alert's peak to `peak` (a lower value, or a resolved alert, changes
    /// nothing).
    async fn raise_alert_peak(&self, id: i64, peak: f64) -> Result<(), StoreError>;

    /// Resolves a firing alert at `resolved_at_ms`; `false` when it was not firing (resolved
    /// already, or unknown), in which case nothing changes.
    async fn resolve_alert(&self, id: i64, resolved_at_ms: i64) -> Result<bool, StoreError>;

    /// Alerts newest first (by firing time, then id), at most `limit`; only the firing ones
    /// with `firing_only`.
    async fn list_alerts(&self, firing_only: bool, limit: u32) -> Result<Vec<Alert>, StoreError>;

    /// Every firing alert, oldest first.
    async fn firing_alerts(&self) -> Result<Vec<Alert>, StoreError>;
}

/// The columns both backends select, in the order of [`AlertRow`].
pub(super) const ALERT_COLUMNS: &str =
    "id, kind, subject, value, peak, threshold, fired_at_ms, resolved_at_ms, summary";

/// One row of `alerts`, as both backends read it.
pub(super) type AlertRow = (i64, String, String, f64, f64, f64, i64, Option<i64>, String);

/// The alert of a stored row.
pub(super) fn alert_of_row(row: AlertRow) -> Result<Alert, StoreError> {
    let (id, kind, subject, value, peak, threshold, fired_at_ms, resolved_at_ms, summary) = row;
    let kind = AlertKind::parse(&kind).ok_or(StoreError::UnknownAlertKind(kind))?;
    Ok(Alert {
        id,
        kind,
        subject,
        value,
        peak,
        threshold,
        fired_at_ms,
        resolved_at_ms,
        summary,
    })
}

/// `AlertFiring` when `e` is the one-firing-per-(kind, subject) index refusing a row.
pub(super) fn insert_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlertFiring,
        _ => e.into(),
    }
}
