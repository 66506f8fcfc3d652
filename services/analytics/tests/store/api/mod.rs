//! The gRPC API over a real store: known counts committed, then read back through the real
//! server on port 0. The export's CSV parses and sums to the overview. The usage a real
//! rate-limit (in memory, port 0) reports is recorded by the alert evaluator and listed among
//! the overview's peaks. The error rates per service read from a real `/metrics` (port 0) are
//! the counters' increase over the window.
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh_analytics::apply::{State, apply, needs};
use wamesh_analytics::consumer::ConsumerConfig;
use wamesh_analytics::event::{Event, EventKind};
use wamesh_analytics::rollup::{Buckets, DAY_MS};
use wamesh_analytics::store::peaks::UsagePeak;
use wamesh_analytics::store::{Commit, Cursor};
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_proto::analytics::v1 as pb;
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;
use wamesh_runtime::Shutdown;

const HOUR: i64 = 3_600_000;
/// 2025-11-30 00:00 UTC.
const DAY: i64 = 20_422 * DAY_MS;
const NUMBER: &str = "106540352242922";

fn event(seq: i64, kind: EventKind, at_ms: i64, user: u64) -> Event {
    Event {
        seq,
        kind,
        at_ms,
        number: NUMBER.into(),
        user,
        wamid: String::new(),
        outbound_id: 0,
        message_type: "text".into(),
        status: String::new(),
        error_code: 0,
        template: String::new(),
        pricing_category: String::new(),
        timestamp_s: 0,
        context_wamid: String::new(),
        reply_id: String::new(),
    }
}

/// A day of traffic: 12 users write, one an hour; we answer each with a template after 1 s,
/// delivered after 800 ms; every third fails instead (131026); every second one delivered is
/// read. One send is refused before Meta took it.
fn day_of_traffic() -> Vec<Event> {
    let mut events = Vec::new();
    let mut seq = 0;
    let mut next = |kind, at| {
        seq += 1;
        (seq, kind, at)
    };
    for n in 0..12_i64 {
        let at = DAY + n * HOUR + 60_000;
        let user = 100 + n as u64;
        let (s, k, t) = next(EventKind::MessageReceived, at);
        let mut received = event(s, k, t, user);
        received.wamid = format!("wamid.IN{n}");
        events.push(received);
        let (s, k, t) = next(EventKind::SendAccepted, at + 1_000);
        let mut accepted = event(s, k, t, user);
        accepted.outbound_id = n + 1;
        accepted.wamid = format!("wamid.OUT{n}");
        accepted.message_type = "template".into();
        accepted.template = if n % 2 == 0 {
            "welcome"
        } else {
            "order_update"
        }
        .into();
        events.push(accepted);
        let failed = n % 3 == 2;
        let (s, k, t) = next(EventKind::StatusUpdated, at + 1_800);
        let mut status = event(s, k, t, user);
        status.outbound_id = n + 1;
        status.wamid = format!("wamid.OUT{n}");
        status.status = if failed { "failed" } else { "delivered" }.into();
        status.error_code = if failed { 131_026 } else { 0 };
        status.pricing_category = "utility".into();
        events.push(status);
        if !failed && n % 2 == 0 {
            let (s, k, t) = next(EventKind::StatusUpdated, at + 5_000);
            let mut read = event(s, k, t, user);
            read.outbound_id = n + 1;
            read.wamid = format!("wamid.OUT{n}");
            read.status = "read".into();
            events.push(read);
        }
    }
    let (s, k, t) = next(EventKind::SendFailed, DAY + 20 * HOUR);
    let mut refused = event(s, k, t, 999);
    refused.outbound_id = 100;
    refused.template = "promo".into();
    refused.error_code = 132_001;
    events.push(refused);
    events
}

/// Rate-limit usage peaks seen during the day (and one the day after).
fn peaks_of_the_day() -> Vec<UsagePeak> {
    let peak = |key: &str, usage_ratio: f64, at_ms: i64| UsagePeak {
        scope: "waba".into(),
        key: key.into(),
        usage_ratio,
        at_ms,
    };
    vec![
        peak("throughput:106540352242922", 0.55, DAY + 2 * HOUR),
        peak("throughput:106540352242922", 0.85, DAY + 9 * HOUR + 1),
        peak("pair:106540352242922:100", 0.25, DAY + 3 * HOUR),
        peak("throughput:106540352242922", 1.0, DAY + DAY_MS + HOUR),
    ]
}

/// analytics serving on port 0 over a fresh Postgres database holding `events` and `peaks`,
/// asking rate-limit at `ratelimit_url` if given.
async fn serve(
    events: &[Event],
    peaks: &[UsagePeak],
    ratelimit_url: Option<String>,
) -> (AnalyticsClient<Channel>, Shutdown) {
    serve_keeping(events, peaks, ratelimit_url, 3650).await
}

/// [`serve`] with a retention of `retention_days`.
async fn serve_keeping(
    events: &[Event],
    peaks: &[UsagePeak],
    ratelimit_url: Option<String>,
    retention_days: u32,
) -> (AnalyticsClient<Channel>, Shutdown) {
    serve_scraping(events, peaks, ratelimit_url, retention_days, Vec::new()).await
}

/// How often the `/metrics` test reads its URLs.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// [`serve_keeping`] reading `metrics_urls` every [`SCRAPE_EVERY`].
async fn serve_scraping(
    events: &[Event],
    peaks: &[UsagePeak],
    ratelimit_url: Option<String>,
    retention_days: u32,
    metrics_urls: Vec<String>,
) -> (AnalyticsClient<Channel>, Shutdown) {
    let config = AnalyticsConfig {
        database_url: wamesh_testkit::fresh_postgres_url().await,
        max_db_connections: 4,
        // Nothing listens there: the consumer keeps retrying, which is fine here.
        messaging_url: "http://127.0.0.1:9".into(),
        aggregation_interval_ms: HOUR,
        retention_days,
        consumer: ConsumerConfig {
            retry: Duration::from_secs(5),
            ..ConsumerConfig::default()
        },
        alerts: wamesh_analytics::alerts::AlertConfig {
            ratelimit_url,
            ..Default::default()
        },
        metrics_urls,
    };
    let analytics = Analytics::build(config)
        .await
        .expect("analytics")
        .scrape_every(SCRAPE_EVERY);
    let store = analytics.store();
    let (facts, users) = store.load(&needs(events)).await.unwrap();
    let mut state = State::new(facts, users);
    let rollups = apply(Buckets { interval_ms: HOUR }, events, &mut state);
    let (facts, users) = state.into_changed();
    store
        .commit(Commit {
            from: Cursor::default(),
            to_seq: events.len() as i64,
            events: events.len() as i64,
            facts,
            users,
            rollups,
        })
        .await
        .unwrap();
    store
        .record_peaks(Buckets { interval_ms: HOUR }, peaks)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Shutdown::new();
    tokio::spawn(analytics.serve(listener, stop.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    (AnalyticsClient::new(channel), stop)
}

fn day_range() -> pb::TimeRange {
    pb::TimeRange {
        from_unix_ms: DAY,
        to_unix_ms: DAY + DAY_MS,
    }
}

fn day_period() -> Option<pb::Period> {
    Some(pb::Period {
        period: Some(pb::period::Period::Range(day_range())),
    })
}

async fn export(
    client: &mut AnalyticsClient<Channel>,
    dataset: pb::ExportDataset,
    format: pb::ExportFormat,
) -> String {
    let mut stream = client
        .export(pb::ExportRequest {
            dataset: dataset as i32,
            format: format as i32,
            range: Some(day_range()),
            granularity: pb::Granularity::Hour as i32,
            business_phone_number_id: String::new(),
        })
        .await
        .expect("Export")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("a chunk") {
        bytes.extend(chunk.data);
    }
    String::from_utf8(bytes).expect("UTF-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_traffic_reads_back_exactly_through_every_rpc() {
    let (mut client, stop) = serve(&day_of_traffic(), &peaks_of_the_day(), None).await;
    let o = client
        .get_overview(pb::GetOverviewRequest {
            period: day_period(),
            business_phone_number_id: String::new(),
        })
        .await
        .expect("GetOverview")
        .into_inner();
    assert_eq!(
        (o.messages_in, o.messages_out, o.delivered, o.read, o.failed),
        (12, 12, 8, 4, 5)
    );
    assert_eq!(o.failures_by_code.len(), 2);
    assert_eq!(
        (o.failures_by_code[0].code, o.failures_by_code[0].count),
        (131_026, 4)
    );
    assert!((o.delivery_rate - 8.0 / 12.0).abs() < 1e-9);
    assert!((o.read_rate - 4.0 / 12.0).abs() < 1e-9);
    assert!((o.error_rate - 5.0 / 13.0).abs() < 1e-9, "{}", o.error_rate);
    let delivery = o.delivery_time.unwrap();
    assert_eq!(delivery.count, 8);
    assert!((delivery.p50_ms - 800.0).abs() <= 8.0, "{delivery:?}");
    let response = o.response_time.unwrap();
    assert_eq!(response.count, 12);
    assert!((response.p99_ms - 1_000.0).abs() <= 10.0, "{response:?}");
    assert_eq!(o.active_users, 12);
    assert_eq!(o.response_rate, 1.0);
    assert_eq!(o.user_response_rate, 0.0, "no user answered us");
    assert!((o.engagement_score - 100.0 * 0.5 * (4.0 / 12.0)).abs() < 1e-9);
    assert_eq!(o.sessions, 12);
    assert_eq!(o.average_session_ms, 1_000.0);
    let peaks: Vec<(&str, f64, i64)> = o
        .rate_limit_peaks
        .iter()
        .map(|p| (p.key.as_str(), p.usage_ratio, p.at_unix_ms))
        .collect();
    assert_eq!(
        peaks,
        [
            ("throughput:106540352242922", 0.85, DAY + 9 * HOUR + 1),
            ("pair:106540352242922:100", 0.25, DAY + 3 * HOUR),
        ],
        "the day's peaks, highest first; not the next day's"
    );
    assert!(o.rate_limit_peaks.iter().all(|p| p.scope == "waba"));

    let series = client
        .get_time_series(pb::GetTimeSeriesRequest {
            metric: "messages_in".into(),
            granularity: pb::Granularity::Hour as i32,
            range: Some(day_range()),
            filters: None,
        })
        .await
        .expect("GetTimeSeries")
        .into_inner();
    assert_eq!(
        series.points.len(),
        24,
        "one point per hour, empty ones too"
    );
    let values: Vec<f64> = series.points.iter().map(|p| p.value).collect();
    assert_eq!(values[..12], [1.0; 12]);
    assert_eq!(values[12..], [0.0; 12]);

    let templates = client
        .get_template_performance(pb::GetTemplatePerformanceRequest {
            period: day_period(),
            sort_by: "read_rate".into(),
            ..Default::default()
        })
        .await
        .expect("GetTemplatePerformance")
        .into_inner()
        .templates;
    let names: Vec<&str> = templates.iter().map(|t| t.template_name.as_str()).collect();
    assert_eq!(names, ["welcome", "order_update", "promo"], "by read rate");
    let welcome = &templates[0];
    assert_eq!((welcome.sent, welcome.delivered, welcome.read), (6, 4, 4));
    assert_eq!(welcome.failed, 2);
    assert!((welcome.median_time_to_delivered_ms - 800.0).abs() <= 8.0);

    let bad = client
        .get_time_series(pb::GetTimeSeriesRequest {
            metric: "happiness".into(),
            range: Some(day_range()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("happiness"), "{}", bad.message());
    let bad = client
        .get_overview(pb::GetOverviewRequest {
            period: Some(pb::Period {
                period: Some(pb::period::Period::Named("1y".into())),
            }),
            business_phone_number_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // Nothing listens where messaging should be, and no rate-limit is configured: health says
    // so rather than guessing.
    let health = client
        .get_system_health(pb::GetSystemHealthRequest {})
        .await
        .expect("GetSystemHealth")
        .into_inner();
    assert_eq!(health.unavailable.len(), 2, "{:?}", health.unavailable);
    assert!(health.unavailable[0].starts_with("messaging: "));
    assert!(health.unavailable[1].starts_with("rate-limit: not configured"));
    let services: Vec<&str> = health.errors.iter().map(|e| e.service.as_str()).collect();
    assert_eq!(services, ["messaging.send", "meta.delivery"]);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_export_parses_and_sums_to_the_overview() {
    let (mut client, stop) = serve(&day_of_traffic(), &[], None).await;
    let overview = client
        .get_overview(pb::GetOverviewRequest {
            period: day_period(),
            business_phone_number_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let csv = export(
        &mut client,
        pb::ExportDataset::Rollups,
        pb::ExportFormat::Csv,
    )
    .await;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut sums = [0_u64; 5];
    let mut rows = 0;
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        assert_eq!(cells[column("grain")], "hour");
        for (i, name) in ["messages_in", "messages_out", "delivered", "read", "failed"]
            .iter()
            .enumerate()
        {
            sums[i] += cells[column(name)].parse::<u64>().expect("a count");
        }
        rows += 1;
    }
    assert!(rows > 12, "{rows} rows");
    assert_eq!(
        sums,
        [
            overview.messages_in,
            overview.messages_out,
            overview.delivered,
            overview.read,
            overview.failed
        ]
    );

    let json = export(
        &mut client,
        pb::ExportDataset::Messages,
        pb::ExportFormat::Json,
    )
    .await;
    let facts: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        facts.len(),
        12 + 12 + 1,
        "every message in and out, and the refused one"
    );
    assert!(
        facts
            .iter()
            .all(|f| f["user_hash"].as_str().is_some_and(|h| h.len() == 16)),
        "users only as hashes"
    );
    let times: Vec<i64> = facts
        .iter()
        .map(|f| f["at_ms"].as_i64().or(f["failed_ms"].as_i64()).unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");

    let templates = export(
        &mut client,
        pb::ExportDataset::Templates,
        pb::ExportFormat::Csv,
    )
    .await;
    assert_eq!(templates.lines().count(), 1 + 3);
    assert!(
        templates
            .lines()
            .nth(3)
            .unwrap()
            .starts_with("welcome,6,4,4,")
    );

    let bad = client
        .export(pb::ExportRequest {
            dataset: pb::ExportDataset::Rollups as i32,
            format: 7,
            range: Some(day_range()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("format"), "{}", bad.message());
    stop.cancel();
}

mod health;
mod retention;
