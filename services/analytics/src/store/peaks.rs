//! Where rate-limit usage peaks are kept: the highest usage ratio seen of each rate-limit
//! bucket (scope, key), with when it was seen, per hour bucket (the aggregation interval) and
//! per day bucket, like the other rollups: a range reads its whole days from the daily peaks
//! and its edges from the hourly ones, and a retention purge removes them with the rest.
//!
//! A peak only ever rises: both backends upsert with `GREATEST`/`max` evaluated against the
//! stored row, so writers in any order (two replicas, a retry after a failure) end with the
//! highest. At equal usage the earlier time stays, which makes the result independent of that
//! order too.
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

use super::{Selection, StoreError};
use crate::rollup::{Buckets, Grain};

/// One rate-limit bucket's usage seen at a moment; stored, the highest of its bucket of time.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePeak {
    pub scope: String,
    pub key: String,
    /// Level / capacity, 0..1.
    pub usage_ratio: f64,
    /// When it was seen (Unix ms).
    pub at_ms: i64,
}

impl UsagePeak {
    /// Whether `self` is the peak over `other`: higher, or as high and seen earlier.
    pub fn beats(&self, other: &UsagePeak) -> bool {
        self.usage_ratio > other.usage_ratio
            || (self.usage_ratio == other.usage_ratio && self.at_ms < other.at_ms)
    }

    /// Whether it is worth keeping: a finite ratio above 0 (an idle bucket has no peak).
    pub fn is_usage(&self) -> bool {
        self.usage_ratio.is_finite() && self.usage_ratio > 0.0
    }
}

#[async_trait]
pub trait PeakStore: Send + Sync {
    /// Keeps each observation as the peak of its (scope, key) in its hour bucket and in its
    /// day bucket (`buckets` says where a moment falls), where it beats the stored one. A
    /// lower observation changes nothing; ratios that are not finite or not above 0 are
    /// ignored.
    async fn record_peaks(
        &self,
        buckets: Buckets,
        observations: &[UsagePeak],
    ) -> Result<(), StoreError>;

    /// The peaks of `selection`'s spans, merged to the highest per (scope, key), by usage
    /// (highest first) then scope and key; at most `limit` (0: all). The selection's filters
    /// do not apply: a rate-limit bucket belongs to no one number or template.
    async fn peaks(
        &self,
        selection: &Selection,
        limit: usize,
    ) -> Result<Vec<UsagePeak>, StoreError>;
}

/// One row a batch upserts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PeakRow<'a> {
    pub grain: Grain,
    pub bucket_ms: i64,
    pub peak: &'a UsagePeak,
}

/// The rows a batch upserts: each observation in its hour and its day bucket, only the peak
/// per row (one statement may not update a row twice), in key order (so that concurrent
/// writers lock rows in the same order).
pub(super) fn peak_rows(buckets: Buckets, observations: &[UsagePeak]) -> Vec<PeakRow<'_>> {
    let mut rows: BTreeMap<(Grain, i64, &str, &str), &UsagePeak> = BTreeMap::new();
    for peak in observations.iter().filter(|p| p.is_usage()) {
        for (grain, bucket_ms) in buckets.of(peak.at_ms) {
            rows.entry((grain, bucket_ms, &peak.scope, &peak.key))
                .and_modify(|kept| {
                    if peak.beats(kept) {
                        *kept = peak;
                    }
                })
                .or_insert(peak);
        }
    }
    rows.into_iter()
        .map(|((grain, bucket_ms, ..), peak)| PeakRow {
            grain,
            bucket_ms,
            peak,
        })
        .collect()
}

/// Stored peaks merged to the peak per (scope, key), sorted by usage (highest first) then
/// scope and key, at most `limit` (0: all).
pub(super) fn merge_peaks(stored: Vec<UsagePeak>, limit: usize) -> Vec<UsagePeak> {
    let mut merged: HashMap<(String, String), UsagePeak> = HashMap::new();
    for peak in stored {
        match merged.get_mut(&(peak.scope.clone(), peak.key.clone())) {
            Some(kept) if peak.beats(kept) => *kept = peak,
            Some(_) => {}
            None => {
                merged.insert((peak.scope.clone(), peak.key.clone()), peak);
            }
        }
    }
    let mut list: Vec<UsagePeak> = merged.into_values().collect();
    list.sort_by(|a, b| {
        b.usage_ratio
            .total_cmp(&a.usage_ratio)
            .then_with(|| a.scope.cmp(&b.scope))
            .then_with(|| a.key.cmp(&b.key))
    });
    if limit > 0 {
        list.truncate(limit);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::DAY_MS;

    const HOUR: i64 = 3_600_000;

    fn peak(key: &str, usage_ratio: f64, at_ms: i64) -> UsagePeak {
        UsagePeak {
            scope: "waba".into(),
            key: key.into(),
            usage_ratio,
            at_ms,
        }
    }

    #[test]
    fn a_batch_upserts_one_row_per_bucket_holding_its_peak() {
        let day = 20_000 * DAY_MS;
        let batch = [
            peak("a", 0.5, day + 10),
            peak("a", 0.7, day + 20),
            peak("a", 0.7, day + 30),
            peak("a", 0.6, day + HOUR),
            peak("b", 0.0, day),
            peak("b", f64::NAN, day),
        ];
        let rows: Vec<(Grain, i64, f64, i64)> = peak_rows(Buckets { interval_ms: HOUR }, &batch)
            .iter()
            .map(|r| (r.grain, r.bucket_ms, r.peak.usage_ratio, r.peak.at_ms))
            .collect();
        assert_eq!(
            rows,
            [
                (Grain::Hour, day, 0.7, day + 20),
                (Grain::Hour, day + HOUR, 0.6, day + HOUR),
                (Grain::Day, day, 0.7, day + 20),
            ]
        );
    }

    #[test]
    fn merging_keeps_the_peak_per_bucket_sorted_and_limited() {
        let merged = merge_peaks(
            vec![
                peak("b", 0.5, 3),
                peak("a", 0.5, 2),
                peak("c", 0.9, 5),
                peak("a", 0.4, 1),
                peak("c", 0.9, 4),
            ],
            2,
        );
        assert_eq!(merged, [peak("c", 0.9, 4), peak("a", 0.5, 2)]);
    }
}
