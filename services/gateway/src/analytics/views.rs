//! The operator API's JSON answers, made from analytics' protos: field names in snake_case,
//! every time as Unix ms (`*_unix_ms`) and, beside it, as RFC 3339 in UTC; rates are 0..1 (the
//! engagement score is 0..100, as analytics defines it); enums are lower-case words.
use serde::Serialize;
use wamesh_proto::analytics::v1 as pb;

use crate::rfc3339;

/// `[from, to)`.
#[derive(Debug, Serialize)]
pub struct Range {
    pub from_unix_ms: i64,
    pub to_unix_ms: i64,
    pub from: String,
    pub to: String,
}

impl From<pb::TimeRange> for Range {
    fn from(r: pb::TimeRange) -> Self {
        Self {
            from_unix_ms: r.from_unix_ms,
            to_unix_ms: r.to_unix_ms,
            from: rfc3339::format(r.from_unix_ms),
            to: rfc3339::format(r.to_unix_ms),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CodeCount {
    /// Meta's error code (0: a failure without one).
    pub code: i64,
    pub count: u64,
}

fn codes(list: Vec<pb::CodeCount>) -> Vec<CodeCount> {
    list.into_iter()
        .map(|c| CodeCount {
            code: c.code,
            count: c.count,
        })
        .collect()
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    /// How many values they are computed from.
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl From<Option<pb::Percentiles>> for Percentiles {
    fn from(p: Option<pb::Percentiles>) -> Self {
        p.map(|p| Self {
            count: p.count,
            p50_ms: p.p50_ms,
            p90_ms: p.p90_ms,
            p95_ms: p.p95_ms,
            p99_ms: p.p99_ms,
        })
        .unwrap_or_default()
    }
}

#[derive(Debug, Serialize)]
pub struct RateLimitPeak {
    pub scope: String,
    pub key: String,
    pub usage_ratio: f64,
    pub at_unix_ms: i64,
    pub at: String,
}

/// `GET /api/analytics/overview`.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub range: Option<Range>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub delivery_rate: f64,
    pub read_rate: f64,
    pub error_rate: f64,
    pub failures_by_code: Vec<CodeCount>,
    pub delivery_time: Percentiles,
    pub response_time: Percentiles,
    pub active_users: u64,
    pub response_rate: f64,
    pub user_response_rate: f64,
    pub engagement_score: f64,
    pub sessions: u64,
    pub average_session_ms: f64,
    pub rate_limit_peaks: Vec<RateLimitPeak>,
}

impl From<pb::Overview> for Overview {
    fn from(o: pb::Overview) -> Self {
        Self {
            range: o.range.map(Range::from),
            messages_in: o.messages_in,
            messages_out: o.messages_out,
            delivered: o.delivered,
            read: o.read,
            failed: o.failed,
            delivery_rate: o.delivery_rate,
            read_rate: o.read_rate,
            error_rate: o.error_rate,
            failures_by_code: codes(o.failures_by_code),
            delivery_time: o.delivery_time.into(),
            response_time: o.response_time.into(),
            active_users: o.active_users,
            response_rate: o.response_rate,
            user_response_rate: o.user_response_rate,
            engagement_score: o.engagement_score,
            sessions: o.sessions,
            average_session_ms: o.average_session_ms,
            rate_limit_peaks: o
                .rate_limit_peaks
                .into_iter()
                .map(|p| RateLimitPeak {
                    at: rfc3339::format(p.at_unix_ms),
                    scope: p.scope,
                    key: p.key,
                    usage_ratio: p.usage_ratio,
                    at_unix_ms: p.at_unix_ms,
                })
                .collect(),
        }
    }
}

/// `GET /api/analytics/timeseries`: one point per bucket, empty ones included.
#[derive(Debug, Serialize)]
pub struct TimeSeries {
    pub metric: String,
    /// `hour` or `day`.
    pub granularity: &'static str,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize)]
pub struct Point {
    /// The start of the bucket.
    pub at_unix_ms: i64,
    pub at: String,
    pub value: f64,
}

impl From<pb::TimeSeries> for TimeSeries {
    fn from(t: pb::TimeSeries) -> Self {
        Self {
            granularity: match pb::Granularity::try_from(t.granularity) {
                Ok(pb::Granularity::Day) => "day",
                _ => "hour",
            },
            metric: t.metric,
            points: t
                .points
                .into_iter()
                .map(|p| Point {
                    at_unix_ms: p.at_unix_ms,
                    at: rfc3339::format(p.at_unix_ms),
                    value: p.value,
                })
                .collect(),
        }
    }
}

/// `GET /api/analytics/templates`, in the order asked for.
#[derive(Debug, Serialize)]
pub struct TemplatePerformance {
    pub range: Option<Range>,
    pub templates: Vec<TemplateStats>,
}

#[derive(Debug, Serialize)]
pub struct TemplateStats {
    pub template_name: String,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    pub replied: u64,
    pub clicked: u64,
    pub failed: u64,
    pub failures_by_code: Vec<CodeCount>,
    pub delivery_rate: f64,
    pub read_rate: f64,
    pub reply_rate: f64,
    pub click_rate: f64,
    pub median_time_to_delivered_ms: f64,
}

impl From<pb::TemplatePerformance> for TemplatePerformance {
    fn from(t: pb::TemplatePerformance) -> Self {
        Self {
            range: t.range.map(Range::from),
            templates: t
                .templates
                .into_iter()
                .map(|s| TemplateStats {
                    template_name: s.template_name,
                    sent: s.sent,
                    delivered: s.delivered,
                    read: s.read,
                    replied: s.replied,
                    clicked: s.clicked,
                    failed: s.failed,
                    failures_by_code: codes(s.failures_by_code),
                    delivery_rate: s.delivery_rate,
                    read_rate: s.read_rate,
                    reply_rate: s.reply_rate,
                    click_rate: s.click_rate,
                    median_time_to_delivered_ms: s.median_time_to_delivered_ms,
                })
                .collect(),
        }
    }
}

/// `GET /api/analytics/alerts`, newest first.
#[derive(Debug, Serialize)]
pub struct Alerts {
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Serialize)]
pub struct Alert {
    pub id: i64,
    /// `error_rate`, `response_time`, `rate_limit` (or `unspecified`).
    pub kind: &'static str,
    /// A business number, a rate-limit bucket (`scope/key`), or `all`.
    pub subject: String,
    /// `firing` or `resolved` (or `unspecified`).
    pub state: &'static str,
    pub value: f64,
    pub peak: f64,
    pub threshold: f64,
    pub fired_at_unix_ms: i64,
    pub fired_at: String,
    /// `null` while firing.
    pub resolved_at_unix_ms: Option<i64>,
    pub resolved_at: Option<String>,
    pub summary: String,
}

impl From<pb::ListAlertsResponse> for Alerts {
    fn from(list: pb::ListAlertsResponse) -> Self {
        Self {
            alerts: list.alerts.into_iter().map(alert).collect(),
        }
    }
}

fn alert(a: pb::Alert) -> Alert {
    let resolved = (a.resolved_at_unix_ms != 0).then_some(a.resolved_at_unix_ms);
    Alert {
        id: a.id,
        kind: match pb::AlertKind::try_from(a.kind) {
            Ok(pb::AlertKind::ErrorRate) => "error_rate",
            Ok(pb::AlertKind::ResponseTime) => "response_time",
            Ok(pb::AlertKind::RateLimit) => "rate_limit",
            _ => "unspecified",
        },
        state: match pb::AlertState::try_from(a.state) {
            Ok(pb::AlertState::Firing) => "firing",
            Ok(pb::AlertState::Resolved) => "resolved",
            _ => "unspecified",
        },
        subject: a.subject,
        value: a.value,
        peak: a.peak,
        threshold: a.threshold,
        fired_at_unix_ms: a.fired_at_unix_ms,
        fired_at: rfc3339::format(a.fired_at_unix_ms),
        resolved_at_unix_ms: resolved,
        resolved_at: resolved.map(rfc3339::format),
        summary: a.summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_read_as_words_and_firing_ones_have_no_resolution() {
        let alerts = Alerts::from(pb::ListAlertsResponse {
            alerts: vec![pb::Alert {
                id: 3,
                kind: pb::AlertKind::ErrorRate as i32,
                state: pb::AlertState::Firing as i32,
                subject: "all".into(),
                value: 0.2,
                fired_at_unix_ms: 1_000,
                ..Default::default()
            }],
        });
        let json = serde_json::to_value(&alerts).unwrap();
        let alert = &json["alerts"][0];
        assert_eq!(alert["kind"], "error_rate");
        assert_eq!(alert["state"], "firing");
        assert_eq!(alert["fired_at"], "1970-01-01T00:00:01.000Z");
        assert!(alert["resolved_at_unix_ms"].is_null());
        assert!(alert["resolved_at"].is_null());
    }
}
