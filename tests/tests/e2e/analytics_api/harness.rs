//! The services of a test and the known day of traffic analytics holds: analytics on port 0
//! over a fresh Postgres database (counts committed through its real store), the gateway on
//! port 0 in front of it, and an HTTP client.
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use wamesh_analytics::alerts::AlertConfig;
use wamesh_analytics::apply::{State, apply, needs};
use wamesh_analytics::consumer::ConsumerConfig;
use wamesh_analytics::event::{Event, EventKind};
use wamesh_analytics::rollup::{Buckets, DAY_MS};
use wamesh_analytics::store::{Commit, Cursor};
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_runtime::{Secret, Shutdown};

use crate::harness::init_tracing;

pub const HOUR: i64 = 3_600_000;
/// 2026-11-30 00:00 UTC.
pub const DAY: i64 = 20_787 * DAY_MS;
pub const NUMBER: &str = "106540352242922";
pub const KEY: &str = "op-key-3f9a1c";

pub fn event(seq: i64, kind: EventKind, at_ms: i64, user: u64) -> Event {
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

/// 12 users write, one in each of the day's first 12 hours; each is answered 1 s later with a
/// template (`welcome` for even hours, `order_update` for odd ones), delivered 800 ms after,
/// except every third (hours 2, 5, 8, 11), which fails with 131026. The delivered `welcome`s
/// (hours 0, 4, 6, 10) are read. At 20:00 a `promo` is refused before Meta takes it (132001).
///
/// So: 12 in, 12 out, 8 delivered, 4 read, 5 failed (4 × 131026, 1 × 132001); `welcome` sent 6,
/// read 4; `order_update` sent 6, read 0; `promo` sent 0.
pub fn day_of_traffic() -> Vec<Event> {
    let mut events = Vec::new();
    let mut push = |kind, at, user, edit: &dyn Fn(&mut Event)| {
        let mut e = event(events.len() as i64 + 1, kind, at, user);
        edit(&mut e);
        events.push(e);
    };
    for n in 0..12_i64 {
        let at = DAY + n * HOUR + 60_000;
        let user = 100 + n as u64;
        let wamid_out = format!("wamid.OUT{n}");
        push(EventKind::MessageReceived, at, user, &|e| {
            e.wamid = format!("wamid.IN{n}");
        });
        push(EventKind::SendAccepted, at + 1_000, user, &|e| {
            e.outbound_id = n + 1;
            e.wamid = wamid_out.clone();
            e.message_type = "template".into();
            e.template = if n % 2 == 0 {
                "welcome"
            } else {
                "order_update"
            }
            .into();
        });
        let failed = n % 3 == 2;
        push(EventKind::StatusUpdated, at + 1_800, user, &|e| {
            e.outbound_id = n + 1;
            e.wamid = wamid_out.clone();
            e.status = if failed { "failed" } else { "delivered" }.into();
            e.error_code = if failed { 131_026 } else { 0 };
            e.pricing_category = "utility".into();
        });
        if !failed && n % 2 == 0 {
            push(EventKind::StatusUpdated, at + 5_000, user, &|e| {
                e.outbound_id = n + 1;
                e.wamid = wamid_out.clone();
                e.status = "read".into();
            });
        }
    }
    push(EventKind::SendFailed, DAY + 20 * HOUR, 999, &|e| {
        e.outbound_id = 100;
        e.message_type = "template".into();
        e.template = "promo".into();
        e.error_code = 132_001;
    });
    events
}

/// A running service and its own shutdown token.
pub struct Running {
    stop: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self, name: &str) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{name} failed: {e:#}"),
            Ok(Err(e)) => panic!("{name} panicked: {e}"),
            Err(_) => panic!("{name} did not stop within 30 s"),
        }
    }
}

/// analytics on port 0 over a fresh Postgres database holding `events`; its gRPC URL.
pub async fn start_analytics(events: &[Event]) -> (String, Running) {
    let analytics = Analytics::build(AnalyticsConfig {
        database_url: wamesh_testkit::fresh_postgres_url().await,
        max_db_connections: 4,
        // Nothing listens there: the consumer keeps retrying, which does not matter here.
        messaging_url: closed_url().await,
        aggregation_interval_ms: HOUR,
        retention_days: 3650,
        consumer: ConsumerConfig {
            retry: Duration::from_secs(5),
            ..ConsumerConfig::default()
        },
        alerts: AlertConfig::default(),
        metrics_urls: Vec::new(),
    })
    .await
    .expect("build analytics");
    let store = analytics.store();
    let (facts, users) = store.load(&needs(events)).await.expect("load");
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
        .expect("commit the day of traffic");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stop = Shutdown::new();
    let task = tokio::spawn(analytics.serve(listener, stop.clone()));
    (url, Running { stop, task })
}

/// A URL where nothing listens (a port just bound and released).
pub async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("http://{}", listener.local_addr().expect("address"))
}

/// A gateway on port 0 in front of analytics (or none), accepting `keys`.
pub struct Api {
    url: String,
    http: reqwest::Client,
    gateway: Running,
    pub analytics: Option<Running>,
}

impl Api {
    /// analytics with the day of traffic, and the gateway with [`KEY`].
    pub async fn start() -> Self {
        let (url, analytics) = start_analytics(&day_of_traffic()).await;
        let mut api = Self::gateway(Some(url), vec![Secret::new(KEY)]).await;
        api.analytics = Some(analytics);
        api
    }

    /// The gateway alone.
    pub async fn gateway(analytics_url: Option<String>, keys: Vec<Secret>) -> Self {
        init_tracing();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let gateway = Gateway::build(GatewayConfig {
            numbers: Vec::new(),
            // messaging is not needed by the operator API.
            messaging_url: closed_url().await,
            ingest_timeout: Duration::from_secs(3),
            analytics_url,
            operator_api_keys: keys,
        })
        .expect("build the gateway");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let stop = Shutdown::new();
        let task = tokio::spawn(gateway.serve(listener, stop.clone()));
        Self {
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            gateway: Running { stop, task },
            analytics: None,
        }
    }

    /// GETs `path` with these headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GETs `path` with the right key; the status and the JSON answer.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        json(
            self.get_with(path, &[("authorization", &format!("Bearer {KEY}"))])
                .await,
        )
        .await
    }

    pub async fn stop(self) {
        self.gateway.stop("gateway").await;
        if let Some(analytics) = self.analytics {
            analytics.stop("analytics").await;
        }
    }
}

pub async fn json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("read the answer");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
    (status, value)
}

/// `[DAY, DAY + 24 h)` as query parameters.
pub fn the_day() -> String {
    format!("from={DAY}&to={}", DAY + DAY_MS)
}

pub fn approx(value: &Value, expected: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}
