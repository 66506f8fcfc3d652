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

/// rate-limit in memory on port 0, one bucket (`load:test` of scope `waba`) 90% used.
async fn rate_limit_90_percent_used() -> (String, Shutdown) {
    use wamesh_proto::ratelimit::v1 as rl;
    let ratelimit = wamesh_ratelimit::RateLimit::build(&wamesh_ratelimit::RateLimitConfig {
        redis_url: None,
        redis_prefix: String::new(),
        limiter: wamesh_ratelimit::LimiterConfig::default(),
    })
    .await
    .expect("rate-limit in memory");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Shutdown::new();
    tokio::spawn(ratelimit.serve(listener, stop.clone()));
    let mut client = rl::rate_limiter_client::RateLimiterClient::new(
        Channel::from_shared(url.clone()).unwrap().connect_lazy(),
    );
    let bucket = rl::policy::Kind::TokenBucket(rl::TokenBucket {
        capacity: 10.0,
        refill_per_second: 1e-6,
    });
    client
        .set_policy(rl::SetPolicyRequest {
            selector: "load:test".into(),
            policy: Some(rl::Policy { kind: Some(bucket) }),
            remove: false,
        })
        .await
        .expect("SetPolicy");
    let taken = client
        .acquire(rl::AcquireRequest {
            scope: "waba".into(),
            buckets: vec![rl::BucketRequest {
                key: "load:test".into(),
                cost: 9.0,
                ..Default::default()
            }],
        })
        .await
        .expect("Acquire")
        .into_inner();
    assert!(taken.allowed);
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_rate_limit_reports_is_the_overviews_peak() {
    let (url, rate_limit) = rate_limit_90_percent_used().await;
    let started = wamesh_analytics::now_ms();
    let (mut client, stop) = serve(&[], &[], Some(url)).await;
    let last_24h = Some(pb::Period {
        period: Some(pb::period::Period::Named("24h".into())),
    });
    // The evaluator asks rate-limit at once, and writes the first peak it sees at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let peaks = loop {
        let o = client
            .get_overview(pb::GetOverviewRequest {
                period: last_24h.clone(),
                business_phone_number_id: String::new(),
            })
            .await
            .expect("GetOverview")
            .into_inner();
        if !o.rate_limit_peaks.is_empty() {
            break o.rate_limit_peaks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no peak within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(peaks.len(), 1, "{peaks:?}");
    let peak = &peaks[0];
    assert_eq!(
        (peak.scope.as_str(), peak.key.as_str()),
        ("waba", "load:test")
    );
    assert!((peak.usage_ratio - 0.9).abs() < 1e-3, "{peak:?}");
    assert!(
        (started..=wamesh_analytics::now_ms()).contains(&peak.at_unix_ms),
        "{peak:?}"
    );
    stop.cancel();
    rate_limit.cancel();
}

async fn overview_of(client: &mut AnalyticsClient<Channel>, from: i64) -> pb::Overview {
    client
        .get_overview(pb::GetOverviewRequest {
            period: Some(pb::Period {
                period: Some(pb::period::Period::Range(pb::TimeRange {
                    from_unix_ms: from,
                    to_unix_ms: from + DAY_MS,
                })),
            }),
            business_phone_number_id: String::new(),
        })
        .await
        .expect("GetOverview")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_what_is_older_than_the_limit_and_nothing_else() {
    // The day of traffic, and a message the day after it.
    let mut events = day_of_traffic();
    let mut next_day = event(
        events.len() as i64 + 1,
        EventKind::MessageReceived,
        DAY + DAY_MS + 2 * HOUR,
        555,
    );
    next_day.wamid = "wamid.NEXT".into();
    events.push(next_day);
    // A retention that keeps the day after and everything since, and not the day.
    let today = wamesh_analytics::now_ms().div_euclid(DAY_MS);
    let retention_days = u32::try_from(today - (DAY + DAY_MS) / DAY_MS).unwrap();
    assert_eq!(
        wamesh_analytics::retention_cutoff(wamesh_analytics::now_ms(), retention_days),
        DAY + DAY_MS
    );
    let (mut client, stop) =
        serve_keeping(&events, &peaks_of_the_day(), None, retention_days).await;

    // The purge runs as analytics starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while overview_of(&mut client, DAY).await.messages_in > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old day was never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = overview_of(&mut client, DAY).await;
    assert_eq!((old.messages_out, old.failed, old.sessions), (0, 0, 0));
    assert!(old.rate_limit_peaks.is_empty());
    assert_eq!(old.delivery_time.unwrap().count, 0);
    let kept = overview_of(&mut client, DAY + DAY_MS).await;
    assert_eq!(kept.messages_in, 1, "the day after is kept");
    assert_eq!(kept.active_users, 1);
    assert_eq!(kept.rate_limit_peaks.len(), 1);
    let facts = export(
        &mut client,
        pb::ExportDataset::Messages,
        pb::ExportFormat::Json,
    )
    .await;
    assert_eq!(facts, "", "no fact of the purged day is left");
    stop.cancel();
}

/// A `/metrics` on port 0 answering whatever `text` holds at the time; its URL.
async fn metrics_server(text: std::sync::Arc<std::sync::Mutex<String>>) -> (String, Shutdown) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = text.clone();
            async move { text.lock().unwrap().clone() }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = Shutdown::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    (url, stop)
}

/// The counters of a gateway and a messaging sharing one `/metrics`, as in `wamesh dev`.
fn exposition(
    ok: u64,
    not_found: u64,
    unavailable: u64,
    grpc_ok: u64,
    invalid: u64,
    internal: u64,
) -> String {
    format!(
        r#"# HELP http_server_requests_total HTTP requests answered.
# TYPE http_server_requests_total counter
http_server_requests_total{{service="gateway",method="POST",route="/api/webhooks/whatsapp",status="200"}} {ok}
http_server_requests_total{{service="gateway",method="GET",route="other",status="404"}} {not_found}
http_server_requests_total{{service="gateway",method="POST",route="/api/webhooks/whatsapp",status="503"}} {unavailable}
# TYPE rpc_server_requests_total counter
rpc_server_requests_total{{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="OK"}} {grpc_ok}
rpc_server_requests_total{{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="INVALID_ARGUMENT"}} {invalid}
rpc_server_requests_total{{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="INTERNAL"}} {internal}
# TYPE rpc_server_duration_seconds histogram
rpc_server_duration_seconds_bucket{{service="messaging",rpc_service="x",rpc_method="y",le="+Inf"}} 99
"#
    )
}

/// The scraped services of a health report: (service, total, errors), in order.
fn scraped(health: &pb::SystemHealth) -> Vec<(String, u64, u64)> {
    health
        .errors
        .iter()
        .filter(|e| !e.service.contains('.'))
        .map(|e| (e.service.clone(), e.total, e.errors))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rates_per_service_are_the_metrics_increase_over_the_window() {
    let text = std::sync::Arc::new(std::sync::Mutex::new(exposition(100, 5, 2, 40, 3, 1)));
    let (url, metrics) = metrics_server(text.clone()).await;
    // Nothing listens on port 9.
    let unreachable = "http://127.0.0.1:9/metrics".to_owned();
    let (client, stop) = serve_scraping(&[], &[], None, 3650, vec![url, unreachable.clone()]).await;
    let health = || {
        let mut client = client.clone();
        async move {
            client
                .get_system_health(pb::GetSystemHealthRequest {})
                .await
                .expect("GetSystemHealth")
                .into_inner()
        }
    };

    // The first read is the baseline: both services seen, nothing counted yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let h = health().await;
        if scraped(&h).len() == 2 && !h.unavailable.iter().all(|u| !u.contains(&unreachable)) {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never scraped: {h:?}"
        );
        tokio::time::sleep(SCRAPE_EVERY).await;
    };
    assert_eq!(
        scraped(&first),
        [("gateway".to_owned(), 0, 0), ("messaging".to_owned(), 0, 0)]
    );
    let services: Vec<&str> = first.errors.iter().map(|e| e.service.as_str()).collect();
    assert_eq!(
        services,
        ["messaging.send", "meta.delivery", "gateway", "messaging"]
    );
    let prefix = format!("metrics {unreachable}: ");
    assert!(
        first.unavailable.iter().any(|u| u.starts_with(&prefix)),
        "{:?}",
        first.unavailable
    );

    // gateway: 20 more answered (15 + 2 + 3), 3 of them 503 (a 404 is the client's);
    // messaging: 10 more calls (2 + 4 + 4), 4 INTERNAL (INVALID_ARGUMENT is the client's).
    *text.lock().unwrap() = exposition(115, 7, 5, 42, 7, 5);
    let want = [
        ("gateway".to_owned(), 20, 3),
        ("messaging".to_owned(), 10, 4),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let later = loop {
        let h = health().await;
        if scraped(&h) == want {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted: {h:?}"
        );
        tokio::time::sleep(SCRAPE_EVERY).await;
    };
    let gateway = later
        .errors
        .iter()
        .find(|e| e.service == "gateway")
        .unwrap();
    assert!(
        (gateway.error_rate - 3.0 / 20.0).abs() < 1e-9,
        "{gateway:?}"
    );

    // messaging restarted: its counters start again from zero, and what it counted since
    // adds to the window's increase.
    *text.lock().unwrap() = exposition(115, 7, 5, 1, 0, 1);
    let want = [
        ("gateway".to_owned(), 20, 3),
        ("messaging".to_owned(), 12, 5),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = health().await;
        if scraped(&h) == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reset not counted: {h:?}"
        );
        tokio::time::sleep(SCRAPE_EVERY).await;
    }
    stop.cancel();
    metrics.cancel();
}
