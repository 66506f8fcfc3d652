//! The day's numbers, checked the same way whichever way they came: analytics' gRPC answers
//! are turned into the JSON of the operators' REST API (the field names it documents), and
//! both go through the same checks.
use futures::StreamExt as _;
use serde_json::{Value, json};
use tonic::transport::Channel;
use wamesh_proto::analytics::v1 as an;
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;

use super::DELIVERED_AFTER_MS;
use super::log::{Log, median};
use super::operators::Operators;
use crate::sending::harness::PHONE;

/// How much later than Meta's delay a delivery may be counted (webhook batching, the gateway,
/// messaging's commit), or earlier (our record of the send committed after Meta took it).
const SLACK_LATE_MS: f64 = 1_500.0;
const SLACK_EARLY_MS: f64 = 100.0;

/// Messages in, out, delivered, read, failed; active users; sessions.
const COUNTS: [u64; 7] = [19, 15, 12, 9, 4, 12, 12];
const COUNT_NAMES: [&str; 7] = [
    "messages_in",
    "messages_out",
    "delivered",
    "read",
    "failed",
    "active_users",
    "sessions",
];
/// Per template, in name order: sent, delivered, read, replied, clicked, failed; its one
/// failure code and how many.
const TEMPLATES: [(&str, [u64; 6], (i64, u64)); 3] = [
    ("order_update", [5, 4, 2, 2, 1, 1], (131_026, 1)),
    ("promo_gone", [0, 0, 0, 0, 0, 1], (132_001, 1)),
    ("welcome", [7, 5, 4, 3, 2, 2], (131_026, 2)),
];
const TEMPLATE_COLUMNS: [&str; 6] = ["sent", "delivered", "read", "replied", "clicked", "failed"];
/// The rollups' sums: in, out, delivered, read, failed, rejected, replied, clicked (a list
/// row picked is a reply and a click outside any template).
const ROLLUP_SUMS: [i64; 8] = [19, 15, 12, 9, 4, 1, 6, 4];
const ROLLUP_COLUMNS: [&str; 8] = [
    "messages_in",
    "messages_out",
    "delivered",
    "read",
    "failed",
    "rejected",
    "replied",
    "clicked",
];
/// Message facts: 19 in, 15 sent, 1 refused.
const FACTS: usize = 35;

/// What the day's numbers are checked against: messaging's log, and the range asked about.
pub struct Day {
    pub log: Log,
    pub range: an::TimeRange,
}

impl Day {
    /// Every read of analytics' gRPC API.
    pub async fn check_grpc(&self, client: &AnalyticsClient<Channel>) {
        let period = Some(an::Period {
            period: Some(an::period::Period::Range(self.range)),
        });
        let overview = client
            .clone()
            .get_overview(an::GetOverviewRequest {
                period: period.clone(),
                business_phone_number_id: PHONE.into(),
            })
            .await
            .expect("GetOverview")
            .into_inner();
        self.overview("GetOverview", &overview_json(&overview));
        for metric in ["messages_in", "messages_out"] {
            let series = client
                .clone()
                .get_time_series(an::GetTimeSeriesRequest {
                    metric: metric.into(),
                    granularity: an::Granularity::Hour as i32,
                    range: Some(self.range),
                    filters: Some(an::Filters {
                        business_phone_number_id: PHONE.into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("GetTimeSeries")
                .into_inner();
            let points: Vec<Value> = series
                .points
                .iter()
                .map(|p| json!({"at_unix_ms": p.at_unix_ms, "value": p.value}))
                .collect();
            self.series("GetTimeSeries", metric, &json!(points));
        }
        let templates = client
            .clone()
            .get_template_performance(an::GetTemplatePerformanceRequest {
                period,
                business_phone_number_id: PHONE.into(),
                sort_by: "name".into(),
                ascending: true,
                limit: 0,
            })
            .await
            .expect("GetTemplatePerformance")
            .into_inner();
        self.templates("GetTemplatePerformance", &templates_json(&templates));
        for (dataset, granularity) in [
            (an::ExportDataset::Rollups, an::Granularity::Hour),
            (an::ExportDataset::Templates, an::Granularity::Hour),
            (an::ExportDataset::Messages, an::Granularity::Unspecified),
        ] {
            let csv = export(client, dataset, granularity, self.range).await;
            self.export(&format!("Export {dataset:?}"), dataset, &csv);
        }
        for firing_only in [false, true] {
            let alerts = client
                .clone()
                .list_alerts(an::ListAlertsRequest {
                    firing_only,
                    limit: 0,
                })
                .await
                .expect("ListAlerts")
                .into_inner()
                .alerts;
            assert!(
                alerts.is_empty(),
                "ListAlerts: healthy traffic: {alerts:#?}"
            );
        }
    }

    /// The same through the gateway's REST API.
    pub async fn check_rest(&self, api: &Operators) {
        let range = format!(
            "from={}&to={}&number={PHONE}",
            self.range.from_unix_ms, self.range.to_unix_ms
        );
        let overview = api.json(&format!("/api/analytics/overview?{range}")).await;
        self.overview("/overview", &overview);
        for metric in ["messages_in", "messages_out"] {
            let series = api
                .json(&format!(
                    "/api/analytics/timeseries?metric={metric}&granularity=hour&{range}"
                ))
                .await;
            assert_eq!(series["metric"], metric);
            self.series("/timeseries", metric, &series["points"]);
        }
        let templates = api
            .json(&format!(
                "/api/analytics/templates?{range}&sort=name&order=asc"
            ))
            .await;
        self.templates("/templates", &templates);
        for (name, dataset) in [
            ("rollups", an::ExportDataset::Rollups),
            ("templates", an::ExportDataset::Templates),
            ("messages", an::ExportDataset::Messages),
        ] {
            let csv = api
                .text(&format!(
                    "/api/analytics/export?dataset={name}&format=csv&{range}"
                ))
                .await;
            self.export(&format!("/export {name}"), dataset, &csv);
        }
        for query in ["", "?firing=true"] {
            let alerts = api.json(&format!("/api/analytics/alerts{query}")).await;
            assert_eq!(
                alerts["alerts"],
                json!([]),
                "/alerts{query}: healthy traffic"
            );
        }
    }

    fn overview(&self, via: &str, o: &Value) {
        let counts = COUNT_NAMES.map(|name| {
            o[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{via}: no {name}: {o}"))
        });
        assert_eq!(counts, COUNTS, "{via}: {COUNT_NAMES:?}: {o:#}");
        assert_eq!(
            o["failures_by_code"],
            json!([{"code": 131026, "count": 3}, {"code": 132001, "count": 1}]),
            "{via}"
        );
        let read_rate = 9.0 / 15.0;
        let user_response_rate = 7.0 / 15.0;
        for (name, expected) in [
            ("delivery_rate", 12.0 / 15.0),
            ("read_rate", read_rate),
            ("error_rate", 4.0 / 16.0),
            ("response_rate", 15.0 / 19.0),
            ("user_response_rate", user_response_rate),
            (
                "engagement_score",
                100.0 * (0.5 * read_rate + 0.5 * user_response_rate),
            ),
        ] {
            assert!(
                approx(&o[name], expected),
                "{via}: {name} {expected}: {o:#}"
            );
        }
        assert!(
            o["average_session_ms"].as_f64().unwrap_or(0.0) > 0.0,
            "{via}: {o}"
        );
        let response = &o["response_time"];
        assert_eq!(response["count"], 15, "{via}: every answer timed");
        within_1pct(
            via,
            "response p50",
            &response["p50_ms"],
            median(&self.log.response_ms),
        );
        let delivery = &o["delivery_time"];
        assert_eq!(delivery["count"], 12, "{via}: every delivery timed");
        let true_p50 = median(&self.log.delivery_times(None));
        within_1pct(via, "delivery p50", &delivery["p50_ms"], true_p50);
        let after = DELIVERED_AFTER_MS as f64;
        assert!(
            (after - SLACK_EARLY_MS..=after + SLACK_LATE_MS).contains(&true_p50),
            "{via}: Meta delivers {after} ms after accepting; counted {true_p50} ms"
        );
        assert_eq!(
            (&o["range"]["from_unix_ms"], &o["range"]["to_unix_ms"]),
            (
                &json!(hour(self.range.from_unix_ms)),
                &json!(ceil_hour(self.range.to_unix_ms))
            ),
            "{via}: the range in whole hours"
        );
    }

    fn series(&self, via: &str, metric: &str, points: &Value) {
        let points = points
            .as_array()
            .unwrap_or_else(|| panic!("{via}: {points}"));
        let hours = (ceil_hour(self.range.to_unix_ms) - hour(self.range.from_unix_ms)) / HOUR;
        assert_eq!(points.len() as i64, hours, "{via}: one point per hour");
        let sum: f64 = points.iter().map(|p| p["value"].as_f64().unwrap()).sum();
        let expected = if metric == "messages_in" { 19.0 } else { 15.0 };
        assert_eq!(sum, expected, "{via} {metric}: {points:?}");
    }

    fn templates(&self, via: &str, answer: &Value) {
        let list = answer["templates"]
            .as_array()
            .unwrap_or_else(|| panic!("{via}: {answer}"));
        let names: Vec<&str> = list
            .iter()
            .map(|t| t["template_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, TEMPLATES.map(|(name, ..)| name), "{via}: by name");
        for (t, (name, counts, (code, failed))) in list.iter().zip(TEMPLATES) {
            let got = TEMPLATE_COLUMNS.map(|c| t[c].as_u64().unwrap());
            assert_eq!(got, counts, "{via} {name}: {TEMPLATE_COLUMNS:?}: {t:#}");
            assert_eq!(
                t["failures_by_code"],
                json!([{"code": code, "count": failed}]),
                "{via} {name}"
            );
            let sent = counts[0] as f64;
            for (rate, part) in [
                ("delivery_rate", 1),
                ("read_rate", 2),
                ("reply_rate", 3),
                ("click_rate", 4),
            ] {
                let expected = if sent > 0.0 {
                    counts[part] as f64 / sent
                } else {
                    0.0
                };
                assert!(approx(&t[rate], expected), "{via} {name}: {rate}: {t}");
            }
            let median_ms = median(&self.log.delivery_times(Some(name)));
            within_1pct(via, name, &t["median_time_to_delivered_ms"], median_ms);
        }
    }

    fn export(&self, via: &str, dataset: an::ExportDataset, csv: &str) {
        let rows = Csv::parse(via, csv);
        match dataset {
            an::ExportDataset::Rollups => {
                let sums = ROLLUP_COLUMNS.map(|c| {
                    rows.column(c)
                        .map(|v| v.parse::<i64>().expect("a count"))
                        .sum::<i64>()
                });
                assert_eq!(sums, ROLLUP_SUMS, "{via}: {ROLLUP_COLUMNS:?}");
                assert!(rows.column("grain").all(|g| g == "hour"), "{via}");
            }
            an::ExportDataset::Templates => {
                let names: Vec<&str> = rows.column("template").collect();
                assert_eq!(names, TEMPLATES.map(|(name, ..)| name), "{via}");
                for (i, (name, counts, (code, failed))) in TEMPLATES.iter().enumerate() {
                    let got = TEMPLATE_COLUMNS.map(|c| rows.cell(i, c).parse::<u64>().unwrap());
                    assert_eq!(&got, counts, "{via} {name}");
                    let failures = format!("{code}:{failed}");
                    assert_eq!(rows.cell(i, "failures_by_code"), failures, "{via} {name}");
                }
            }
            _ => {
                assert_eq!(rows.rows.len(), FACTS, "{via}: one fact per message");
                let inbound = rows.column("direction").filter(|d| *d == "inbound").count();
                assert_eq!(inbound, 19, "{via}");
            }
        }
    }
}

/// An export of `dataset` over `range`, as CSV.
async fn export(
    client: &AnalyticsClient<Channel>,
    dataset: an::ExportDataset,
    granularity: an::Granularity,
    range: an::TimeRange,
) -> String {
    let mut stream = client
        .clone()
        .export(an::ExportRequest {
            dataset: dataset as i32,
            format: an::ExportFormat::Csv as i32,
            range: Some(range),
            granularity: granularity as i32,
            business_phone_number_id: PHONE.into(),
        })
        .await
        .expect("Export")
        .into_inner();
    let mut csv = Vec::new();
    while let Some(chunk) = stream.next().await {
        csv.extend(chunk.expect("an export chunk").data);
    }
    String::from_utf8(csv).expect("UTF-8")
}

/// A CSV export: its header and rows (no cell of these holds a comma).
struct Csv<'a> {
    columns: Vec<&'a str>,
    rows: Vec<Vec<&'a str>>,
}

impl<'a> Csv<'a> {
    fn parse(via: &str, csv: &'a str) -> Self {
        let mut lines = csv.lines();
        let columns: Vec<&str> = lines.next().expect("a header").split(',').collect();
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        for row in &rows {
            assert_eq!(row.len(), columns.len(), "{via}: {row:?}");
        }
        Self { columns, rows }
    }

    fn index(&self, name: &str) -> usize {
        let found = self.columns.iter().position(|c| *c == name);
        found.unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    fn column(&self, name: &str) -> impl Iterator<Item = &'a str> + '_ {
        let i = self.index(name);
        self.rows.iter().map(move |row| row[i])
    }

    fn cell(&self, row: usize, name: &str) -> &'a str {
        self.rows[row][self.index(name)]
    }
}

const HOUR: i64 = 3_600_000;

fn hour(ms: i64) -> i64 {
    ms.div_euclid(HOUR) * HOUR
}

fn ceil_hour(ms: i64) -> i64 {
    hour(ms + HOUR - 1)
}

fn approx(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

/// A sketch's percentile is within 1% of the true value.
fn within_1pct(via: &str, what: &str, value: &Value, truth: f64) {
    let value = value
        .as_f64()
        .unwrap_or_else(|| panic!("{via}: {what}: {value}"));
    assert!(
        (value - truth).abs() <= 0.01 * truth + 1e-6,
        "{via}: {what} {value}, the true value {truth}"
    );
}

/// An overview as the REST API writes it.
fn overview_json(o: &an::Overview) -> Value {
    let percentiles = |p: &Option<an::Percentiles>| {
        let p = p.unwrap_or_default();
        json!({"count": p.count, "p50_ms": p.p50_ms})
    };
    let range = o.range.unwrap_or_default();
    json!({
        "range": {"from_unix_ms": range.from_unix_ms, "to_unix_ms": range.to_unix_ms},
        "messages_in": o.messages_in,
        "messages_out": o.messages_out,
        "delivered": o.delivered,
        "read": o.read,
        "failed": o.failed,
        "delivery_rate": o.delivery_rate,
        "read_rate": o.read_rate,
        "error_rate": o.error_rate,
        "failures_by_code": codes(&o.failures_by_code),
        "delivery_time": percentiles(&o.delivery_time),
        "response_time": percentiles(&o.response_time),
        "active_users": o.active_users,
        "response_rate": o.response_rate,
        "user_response_rate": o.user_response_rate,
        "engagement_score": o.engagement_score,
        "sessions": o.sessions,
        "average_session_ms": o.average_session_ms,
    })
}

fn templates_json(t: &an::TemplatePerformance) -> Value {
    let list: Vec<Value> = t
        .templates
        .iter()
        .map(|s| {
            json!({
                "template_name": s.template_name,
                "sent": s.sent,
                "delivered": s.delivered,
                "read": s.read,
                "replied": s.replied,
                "clicked": s.clicked,
                "failed": s.failed,
                "failures_by_code": codes(&s.failures_by_code),
                "delivery_rate": s.delivery_rate,
                "read_rate": s.read_rate,
                "reply_rate": s.reply_rate,
                "click_rate": s.click_rate,
                "median_time_to_delivered_ms": s.median_time_to_delivered_ms,
            })
        })
        .collect();
    json!({ "templates": list })
}

fn codes(list: &[an::CodeCount]) -> Value {
    list.iter()
        .map(|c| json!({"code": c.code, "count": c.count}))
        .collect()
}
