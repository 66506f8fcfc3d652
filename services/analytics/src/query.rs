//! Answering from the rollups: which buckets a range reads ([`Range::selection`]), and the
//! overview, time series and template performance assembled from the store's sums and sketches.
use std::collections::BTreeMap;

use crate::rollup::{ALL_TEMPLATES, ConversationCounts, DAY_MS, Grain, MessageCounts};
use crate::sketch::Quantiles;
use crate::store::peaks::UsagePeak;
use crate::store::{GroupBy, Selection, Store, StoreError};

/// A range of time `[from_ms, to_ms)`, on bucket boundaries of the aggregation interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Why a question cannot be answered as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("period: {0:?} is not one of 24h, 7d, 30d")]
    Period(String),
    #[error("range: from ({from}) must be before to ({to})")]
    Range { from: i64, to: i64 },
    #[error("range: at most {max_days} days at a time")]
    TooLong { max_days: i64 },
    #[error("metric: {0:?} is not a metric (one of {1})")]
    Metric(String, String),
    #[error("sort_by: {0:?} is not a column (one of {1})")]
    SortBy(String, String),
}

/// The longest range one question may cover (a year and a bit).
const MAX_RANGE_DAYS: i64 = 400;

impl Range {
    /// The named period ending now: "24h", "7d" or "30d", the current bucket included.
    pub fn named(name: &str, now_ms: i64, interval_ms: i64) -> Result<Self, QueryError> {
        let hours = match name {
            "24h" => 24,
            "7d" => 7 * 24,
            "30d" => 30 * 24,
            _ => return Err(QueryError::Period(name.to_owned())),
        };
        let to_ms = ceil(now_ms, interval_ms);
        Ok(Self {
            from_ms: to_ms - hours * 3_600_000,
            to_ms,
        })
    }

    /// A custom range, widened to whole buckets.
    pub fn custom(from_ms: i64, to_ms: i64, interval_ms: i64) -> Result<Self, QueryError> {
        if from_ms >= to_ms {
            return Err(QueryError::Range {
                from: from_ms,
                to: to_ms,
            });
        }
        if to_ms - from_ms > MAX_RANGE_DAYS * DAY_MS {
            return Err(QueryError::TooLong {
                max_days: MAX_RANGE_DAYS,
            });
        }
        Ok(Self {
            from_ms: from_ms.div_euclid(interval_ms) * interval_ms,
            to_ms: ceil(to_ms, interval_ms),
        })
    }

    /// The spans that read the range: its whole days from the daily rollups, its edges from
    /// the hourly ones.
    pub fn spans(&self) -> Vec<(Grain, i64, i64)> {
        let first_day = ceil(self.from_ms, DAY_MS);
        let last_day = self.to_ms.div_euclid(DAY_MS) * DAY_MS;
        if first_day >= last_day {
            return vec![(Grain::Hour, self.from_ms, self.to_ms)];
        }
        let mut spans = vec![(Grain::Day, first_day, last_day)];
        if self.from_ms < first_day {
            spans.push((Grain::Hour, self.from_ms, first_day));
        }
        if last_day < self.to_ms {
            spans.push((Grain::Hour, last_day, self.to_ms));
        }
        spans
    }
}

fn ceil(at_ms: i64, width: i64) -> i64 {
    (at_ms + width - 1).div_euclid(width) * width
}

/// Percentiles of a sketch (0 when empty).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    pub fn of(sketch: &Quantiles) -> Self {
        let q = |q: f64| sketch.quantile(q).unwrap_or(0.0);
        Self {
            count: sketch.count(),
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
        }
    }
}

/// The headline numbers of a range.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Overview {
    pub range: Option<Range>,
    pub messages: MessageCounts,
    /// Failed messages by Meta's code, most first.
    pub failures_by_code: Vec<(i64, i64)>,
    pub delivery_time: Percentiles,
    pub response_time: Percentiles,
    pub conversations: ConversationCounts,
    pub active_users: u64,
    /// The highest usage seen per rate-limit bucket, highest first, at most [`OVERVIEW_PEAKS`]
    /// (of every bucket, whichever number was asked: a bucket belongs to no one number).
    pub rate_limit_peaks: Vec<UsagePeak>,
}

/// How many rate-limit buckets an overview lists, the most used first.
pub const OVERVIEW_PEAKS: usize = 20;

impl Overview {
    pub fn delivery_rate(&self) -> f64 {
        ratio(self.messages.delivered, self.messages.messages_out)
    }
    pub fn read_rate(&self) -> f64 {
        ratio(self.messages.read, self.messages.messages_out)
    }
    /// Failed / attempted (sent, or refused before Meta took them).
    pub fn error_rate(&self) -> f64 {
        ratio(
            self.messages.failed,
            self.messages.messages_out + self.messages.rejected,
        )
    }
    /// Users' turns we answered / users' turns.
    pub fn response_rate(&self) -> f64 {
        ratio(
            self.conversations.user_turns_answered,
            self.conversations.user_turns,
        )
    }
    /// Our turns users answered / our turns.
    pub fn user_response_rate(&self) -> f64 {
        ratio(
            self.conversations.business_turns_answered,
            self.conversations.business_turns,
        )
    }
    /// 0 to 100: half the read rate, half the users' response rate. Both say whether users
    /// engage with what the business sends: they open it, and they answer it.
    pub fn engagement_score(&self) -> f64 {
        100.0 * (0.5 * self.read_rate() + 0.5 * self.user_response_rate())
    }
    pub fn average_session_ms(&self) -> f64 {
        ratio(self.conversations.session_ms, self.conversations.sessions)
    }
}

pub fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The overview of `range` for one business number or all.
pub async fn overview(
    store: &dyn Store,
    range: Range,
    number: Option<String>,
) -> Result<Overview, StoreError> {
    let selection = Selection {
        spans: range.spans(),
        number,
        ..Selection::default()
    };
    let by_code = GroupBy {
        error_code: true,
        ..GroupBy::default()
    };
    let all_templates = Selection {
        template: Some(ALL_TEMPLATES.to_owned()),
        ..selection.clone()
    };
    let (sums, delivery, conversations, rate_limit_peaks) = tokio::try_join!(
        store.message_sums(&selection, by_code),
        store.delivery_sketches(&all_templates, false, false),
        store.conversation_sums(&selection, false),
        store.peaks(&selection, OVERVIEW_PEAKS),
    )?;
    let mut overview = Overview {
        range: Some(range),
        rate_limit_peaks,
        ..Overview::default()
    };
    for row in &sums {
        overview.messages += row.counts;
        if row.counts.failed != 0 {
            overview
                .failures_by_code
                .push((row.error_code, row.counts.failed));
        }
    }
    overview
        .failures_by_code
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(d) = delivery.first() {
        overview.delivery_time = Percentiles::of(&d.sketch);
    }
    if let Some(c) = conversations.first() {
        overview.conversations = c.counts;
        overview.response_time = Percentiles::of(&c.response_ms);
        overview.active_users = c.users.estimate();
    }
    Ok(overview)
}

/// The metrics a time series can show.
pub const METRICS: [&str; 14] = [
    "messages_in",
    "messages_out",
    "delivered",
    "read",
    "failed",
    "delivery_rate",
    "read_rate",
    "error_rate",
    "delivery_time_p50",
    "delivery_time_p95",
    "response_time_p50",
    "response_time_p95",
    "active_users",
    "sessions",
];

/// One value per bucket of `range` at `grain` (empty buckets 0), for `metric`; an hour bucket
/// is `interval_ms` wide.
pub async fn time_series(
    store: &dyn Store,
    metric: &str,
    grain: Grain,
    interval_ms: i64,
    range: Range,
    mut selection: Selection,
) -> Result<Result<Vec<(i64, f64)>, QueryError>, StoreError> {
    if !METRICS.contains(&metric) {
        return Ok(Err(QueryError::Metric(
            metric.to_owned(),
            METRICS.join(", "),
        )));
    }
    let width = match grain {
        Grain::Hour => interval_ms,
        Grain::Day => DAY_MS,
    };
    let from = range.from_ms.div_euclid(width) * width;
    selection.spans = vec![(grain, from, range.to_ms)];
    let mut values: BTreeMap<i64, f64> = BTreeMap::new();
    match metric {
        "delivery_time_p50" | "delivery_time_p95" => {
            let q = if metric.ends_with("p50") { 0.5 } else { 0.95 };
            let mut selection = selection.clone();
            if selection.template.is_none() {
                selection.template = Some(ALL_TEMPLATES.to_owned());
            }
            for d in store.delivery_sketches(&selection, true, false).await? {
                values.insert(d.bucket_ms, d.sketch.quantile(q).unwrap_or(0.0));
            }
        }
        "response_time_p50" | "response_time_p95" | "active_users" | "sessions" => {
            let q = if metric.ends_with("p50") { 0.5 } else { 0.95 };
            for c in store.conversation_sums(&selection, true).await? {
                let value = match metric {
                    "active_users" => c.users.estimate() as f64,
                    "sessions" => c.counts.sessions as f64,
                    _ => c.response_ms.quantile(q).unwrap_or(0.0),
                };
                values.insert(c.bucket_ms, value);
            }
        }
        _ => {
            let by_bucket = GroupBy {
                bucket: true,
                ..GroupBy::default()
            };
            for row in store.message_sums(&selection, by_bucket).await? {
                let c = row.counts;
                let value = match metric {
                    "messages_in" => c.messages_in as f64,
                    "messages_out" => c.messages_out as f64,
                    "delivered" => c.delivered as f64,
                    "read" => c.read as f64,
                    "failed" => c.failed as f64,
                    "delivery_rate" => ratio(c.delivered, c.messages_out),
                    "read_rate" => ratio(c.read, c.messages_out),
                    _ => ratio(c.failed, c.messages_out + c.rejected),
                };
                values.insert(row.bucket_ms, value);
            }
        }
    }
    let points = (0..)
        .map(|i| from + i * width)
        .take_while(|at| *at < range.to_ms)
        .map(|at| (at, values.get(&at).copied().unwrap_or(0.0)))
        .collect();
    Ok(Ok(points))
}

/// One template's numbers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TemplateStats {
    pub template: String,
    pub counts: MessageCounts,
    pub failures_by_code: Vec<(i64, i64)>,
    pub median_time_to_delivered_ms: f64,
}

impl TemplateStats {
    pub fn rate(&self, part: i64) -> f64 {
        ratio(part, self.counts.messages_out)
    }

    /// The value a column sorts by.
    fn column(&self, column: &str) -> f64 {
        let c = &self.counts;
        match column {
            "delivered" => c.delivered as f64,
            "read" => c.read as f64,
            "replied" => c.replied as f64,
            "clicked" => c.clicked as f64,
            "failed" => c.failed as f64,
            "delivery_rate" => self.rate(c.delivered),
            "read_rate" => self.rate(c.read),
            "reply_rate" => self.rate(c.replied),
            "click_rate" => self.rate(c.clicked),
            _ => c.messages_out as f64,
        }
    }
}

/// The columns template performance sorts by.
pub const TEMPLATE_COLUMNS: [&str; 11] = [
    "sent",
    "delivered",
    "read",
    "replied",
    "clicked",
    "failed",
    "delivery_rate",
    "read_rate",
    "reply_rate",
    "click_rate",
    "name",
];

/// Every template's numbers over `range`, sorted by `sort_by` (most first unless `ascending`;
/// ties by name), at most `limit` (0: all).
pub async fn templates(
    store: &dyn Store,
    range: Range,
    number: Option<String>,
    sort_by: &str,
    ascending: bool,
    limit: usize,
) -> Result<Result<Vec<TemplateStats>, QueryError>, StoreError> {
    let sort_by = if sort_by.is_empty() { "sent" } else { sort_by };
    if !TEMPLATE_COLUMNS.contains(&sort_by) {
        return Ok(Err(QueryError::SortBy(
            sort_by.to_owned(),
            TEMPLATE_COLUMNS.join(", "),
        )));
    }
    let selection = Selection {
        spans: range.spans(),
        number,
        direction: Some("outbound".to_owned()),
        ..Selection::default()
    };
    let by = GroupBy {
        template: true,
        error_code: true,
        ..GroupBy::default()
    };
    let (sums, sketches) = tokio::try_join!(
        store.message_sums(&selection, by),
        store.delivery_sketches(&selection, false, true),
    )?;
    let mut stats: BTreeMap<String, TemplateStats> = BTreeMap::new();
    for row in sums.into_iter().filter(|r| !r.template.is_empty()) {
        let entry = stats
            .entry(row.template.clone())
            .or_insert_with(|| TemplateStats {
                template: row.template.clone(),
                ..TemplateStats::default()
            });
        entry.counts += row.counts;
        if row.counts.failed != 0 {
            entry
                .failures_by_code
                .push((row.error_code, row.counts.failed));
        }
    }
    for d in sketches.into_iter().filter(|d| d.template != ALL_TEMPLATES) {
        if let Some(entry) = stats.get_mut(&d.template) {
            entry.median_time_to_delivered_ms = d.sketch.quantile(0.5).unwrap_or(0.0);
        }
    }
    let mut list: Vec<TemplateStats> = stats.into_values().collect();
    for t in &mut list {
        t.failures_by_code
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    if sort_by == "name" {
        if !ascending {
            list.reverse();
        }
    } else {
        list.sort_by(|a, b| {
            let (x, y) = (a.column(sort_by), b.column(sort_by));
            let order = if ascending {
                x.total_cmp(&y)
            } else {
                y.total_cmp(&x)
            };
            order.then_with(|| a.template.cmp(&b.template))
        });
    }
    if limit > 0 {
        list.truncate(limit);
    }
    Ok(Ok(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn a_range_reads_whole_days_daily_and_its_edges_hourly() {
        let day = 20_000 * DAY_MS;
        let range = Range::custom(day - 3 * HOUR, day + 2 * DAY_MS + 5 * HOUR, HOUR).unwrap();
        assert_eq!(
            range.spans(),
            [
                (Grain::Day, day, day + 2 * DAY_MS),
                (Grain::Hour, day - 3 * HOUR, day),
                (Grain::Hour, day + 2 * DAY_MS, day + 2 * DAY_MS + 5 * HOUR),
            ]
        );
        let short = Range::custom(day + HOUR, day + 3 * HOUR, HOUR).unwrap();
        assert_eq!(short.spans(), [(Grain::Hour, day + HOUR, day + 3 * HOUR)]);
    }

    #[test]
    fn named_periods_end_with_the_current_bucket() {
        let now = 20_000 * DAY_MS + 90 * 60_000; // 01:30
        let range = Range::named("24h", now, HOUR).unwrap();
        assert_eq!(range.to_ms, 20_000 * DAY_MS + 2 * HOUR);
        assert_eq!(range.to_ms - range.from_ms, DAY_MS);
        assert_eq!(
            Range::named("30d", now, HOUR).unwrap().to_ms
                - Range::named("30d", now, HOUR).unwrap().from_ms,
            30 * DAY_MS
        );
        assert_eq!(
            Range::named("1y", now, HOUR),
            Err(QueryError::Period("1y".into()))
        );
    }

    #[test]
    fn custom_ranges_are_checked_and_widened_to_buckets() {
        assert!(matches!(
            Range::custom(10, 10, HOUR),
            Err(QueryError::Range { .. })
        ));
        assert!(matches!(
            Range::custom(0, 401 * DAY_MS, HOUR),
            Err(QueryError::TooLong { .. })
        ));
        let r = Range::custom(HOUR + 1, 2 * HOUR + 1, HOUR).unwrap();
        assert_eq!((r.from_ms, r.to_ms), (HOUR, 3 * HOUR));
    }
}
