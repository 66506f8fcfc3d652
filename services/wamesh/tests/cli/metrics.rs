//! Every service's `/metrics`, scraped from the four services running as separate processes:
//! after a user writes, the business answers and the answer is read, each scrape parses as
//! Prometheus text exposition format, and the series that traffic should move moved, with
//! bounded labels (no phone number, no wamid) and each process's own service name.
use std::time::{Duration, Instant};

use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_proto::ratelimit::v1 as rl;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use wamesh_testkit::prometheus::{Kind, Scrape};

use super::processes::{MeshOptions, MeshProcesses, PHONE_NUMBER_ID, Process};

/// The simulated user.
const USER: &str = "15550007777";

/// Scrapes `process`, parses it strictly, and checks what every scrape must hold: only its
/// own service name in `service` labels, no phone number and no wamid anywhere.
async fn scrape(process: &Process, service: &str) -> (Scrape, String) {
    let text = process.scrape_metrics().await;
    let scrape = wamesh_testkit::prometheus::parse(&text)
        .unwrap_or_else(|e| panic!("{service}'s /metrics is not exposition format: {e}\n{text}"));
    for family in ["http_server_requests_total", "rpc_server_requests_total"] {
        let services = scrape.label_values(family, "service");
        assert!(
            services.iter().all(|s| s == service),
            "{service}'s {family} has service labels {services:?}"
        );
    }
    assert!(
        !text.contains(USER),
        "a phone number in {service}'s metrics"
    );
    assert!(!text.contains("wamid"), "a wamid in {service}'s metrics");
    (scrape, text)
}

/// Asserts the series of `name` with `labels` add up to at least `at_least`.
fn moved(scrape: &Scrape, text: &str, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let value = scrape.sum(name, labels);
    assert!(
        value >= at_least,
        "{name}{labels:?} is {value}, expected at least {at_least}:\n{text}"
    );
}

/// Asserts `name` is a family of `kind` with at least one sample.
fn present(scrape: &Scrape, text: &str, name: &str, kind: Kind) {
    let family = scrape
        .family(name)
        .unwrap_or_else(|| panic!("no {name}:\n{text}"));
    assert_eq!(family.kind, kind, "{name}");
    assert!(!family.samples.is_empty(), "{name} has no samples");
}

/// Polls `check` every 50 ms until it holds (generously: the machine is slow and shared).
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_prometheus_metrics_that_move_with_traffic() {
    let mut mesh = MeshProcesses::start(MeshOptions::default()).await;
    let http = reqwest::Client::new();

    // A user writes (a signed webhook from the simulator to the gateway, stored by messaging).
    let inbound = http
        .post(format!("{}/_sim/inbound", mesh.simulator.url()))
        .json(&serde_json::json!({"phone_number_id": PHONE_NUMBER_ID, "from": USER, "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(inbound.status(), 200, "{:?}", inbound.text().await);
    // A webhook with a wrong signature is refused.
    let forged = http
        .post(format!("{}/api/webhooks/whatsapp", mesh.gateway.url()))
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(r#"{"object":"whatsapp_business_account","entry":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let channel = tonic::transport::Channel::from_shared(mesh.messaging.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut messaging = MessagingClient::new(channel);
    // The business answers once the user's message opened the window (until then messaging
    // refuses free-form text, and queues nothing).
    let reply = pb::SendMessageRequest {
        business_phone_number_id: PHONE_NUMBER_ID.into(),
        to: USER.into(),
        idempotency_key: "metrics-reply".into(),
        content: Some(pb::send_message_request::Content::Text(pb::TextContent {
            body: "Hello! How can we help?".into(),
            preview_url: false,
        })),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        match messaging.send_message(reply.clone()).await {
            Ok(answer) => break answer.into_inner().message.expect("the message").id,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                assert!(
                    Instant::now() < deadline,
                    "the window never opened: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("SendMessage: {status:?}"),
        }
    };
    eventually("the reply to be read", || {
        let mut messaging = messaging.clone();
        async move {
            let message = messaging
                .get_outbound_message(pb::GetOutboundMessageRequest {
                    key: Some(pb::get_outbound_message_request::Key::Id(id)),
                })
                .await
                .unwrap()
                .into_inner();
            message.delivery_status == "read"
        }
    })
    .await;
    // One unary call to rate-limit (messaging only asks it over a stream).
    let ratelimit = tonic::transport::Channel::from_shared(mesh.ratelimit.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    RateLimiterClient::new(ratelimit)
        .get_usage(rl::GetUsageRequest {
            top: 5,
            ..Default::default()
        })
        .await
        .unwrap();

    let (gateway, text) = scrape(&mesh.gateway, "gateway").await;
    let webhook_route = [
        ("method", "POST"),
        ("route", "/api/webhooks/whatsapp"),
        ("status", "200"),
    ];
    // The user's message, then its statuses (sent, delivered, read; maybe batched together).
    moved(
        &gateway,
        &text,
        "http_server_requests_total",
        &webhook_route,
        2.0,
    );
    moved(
        &gateway,
        &text,
        "http_server_requests_total",
        &[("route", "/api/webhooks/whatsapp"), ("status", "403")],
        1.0,
    );
    moved(
        &gateway,
        &text,
        "wamesh_webhooks_total",
        &[("result", "stored")],
        2.0,
    );
    moved(
        &gateway,
        &text,
        "wamesh_webhooks_total",
        &[("result", "bad_signature")],
        1.0,
    );
    for kind in ["text", "status:sent", "status:delivered", "status:read"] {
        let labels = [("field", "messages"), ("type", kind)];
        moved(
            &gateway,
            &text,
            "wamesh_webhook_updates_total",
            &labels,
            1.0,
        );
    }
    present(
        &gateway,
        &text,
        "http_server_request_duration_seconds",
        Kind::Histogram,
    );
    present(&gateway, &text, "wamesh_webhook_seconds", Kind::Histogram);

    let (messaging_metrics, text) = scrape(&mesh.messaging, "messaging").await;
    let m = &messaging_metrics;
    let rpc = |method: &'static str| {
        [
            ("rpc_service", "wamesh.messaging.v1.Messaging"),
            ("rpc_method", method),
            ("code", "OK"),
        ]
    };
    moved(
        m,
        &text,
        "rpc_server_requests_total",
        &rpc("IngestWebhooks"),
        2.0,
    );
    moved(
        m,
        &text,
        "rpc_server_requests_total",
        &rpc("SendMessage"),
        1.0,
    );
    moved(
        m,
        &text,
        "rpc_server_requests_total",
        &rpc("GetOutboundMessage"),
        1.0,
    );
    present(m, &text, "rpc_server_duration_seconds", Kind::Histogram);
    let inbound_text = [
        ("direction", "inbound"),
        ("type", "text"),
        ("origin", "webhook"),
    ];
    moved(
        m,
        &text,
        "wamesh_messages_received_total",
        &inbound_text,
        1.0,
    );
    for status in ["sent", "delivered", "read"] {
        let labels = [("status", status), ("error_code", "none")];
        moved(
            m,
            &text,
            "wamesh_message_statuses_received_total",
            &labels,
            1.0,
        );
    }
    moved(
        m,
        &text,
        "wamesh_updates_stored_total",
        &[("kind", "message")],
        1.0,
    );
    moved(
        m,
        &text,
        "wamesh_updates_stored_total",
        &[("kind", "status")],
        3.0,
    );
    let accepted = [("result", "accepted"), ("error_code", "none")];
    assert_eq!(m.sum("wamesh_sends_total", &accepted), 1.0, "{text}");
    assert_eq!(
        m.sum("wamesh_send_attempts_total", &[("result", "accepted")]),
        1.0,
        "{text}"
    );
    moved(m, &text, "wamesh_ingest_commit_seconds_count", &[], 1.0);
    for gauge in [
        "wamesh_outbound_queue_depth",
        "wamesh_outbound_queue_due",
        "wamesh_outbound_in_flight",
        "wamesh_outbound_in_doubt",
        "wamesh_outbound_oldest_age_seconds",
        "wamesh_db_pool_connections",
        "wamesh_db_pool_max_connections",
    ] {
        present(m, &text, gauge, Kind::Gauge);
    }
    assert_eq!(
        m.label_values("wamesh_db_pool_connections", "state"),
        ["idle", "in_use"].map(String::from).into()
    );
    assert_eq!(
        m.sum("wamesh_db_pool_max_connections", &[]),
        16.0,
        "the default pool"
    );
    // The admin server counts itself too (the harness asked /readyz until ready).
    moved(
        m,
        &text,
        "http_server_requests_total",
        &[("route", "/readyz"), ("status", "200")],
        1.0,
    );

    let (ratelimit_metrics, text) = scrape(&mesh.ratelimit, "ratelimit").await;
    let r = &ratelimit_metrics;
    moved(
        r,
        &text,
        "wamesh_ratelimit_decisions_total",
        &[("result", "allowed"), ("degraded", "no")],
        1.0,
    );
    moved(
        r,
        &text,
        "wamesh_ratelimit_backend_seconds_count",
        &[("backend", "redis")],
        1.0,
    );
    let get_usage = [
        ("rpc_service", "wamesh.ratelimit.v1.RateLimiter"),
        ("rpc_method", "GetUsage"),
        ("code", "OK"),
    ];
    moved(r, &text, "rpc_server_requests_total", &get_usage, 1.0);
    let stream = [("rpc_method", "AcquireStream")];
    assert_eq!(
        r.sum("rpc_server_requests_total", &stream),
        0.0,
        "messaging's stream is still open: not counted yet"
    );

    let (simulator, text) = scrape(&mesh.simulator, "simulator").await;
    let accepted = [("result", "accepted"), ("code", "none")];
    assert_eq!(
        simulator.sum("wamesh_simulator_sends_total", &accepted),
        1.0,
        "{text}"
    );
    let graph_send = [
        ("method", "POST"),
        ("route", "/{version}/{phone_number_id}/messages"),
        ("status", "200"),
    ];
    assert_eq!(
        simulator.sum("http_server_requests_total", &graph_send),
        1.0,
        "{text}"
    );
    let user_wrote = [("route", "/_sim/inbound"), ("status", "200")];
    assert_eq!(
        simulator.sum("http_server_requests_total", &user_wrote),
        1.0,
        "{text}"
    );

    // What the processes logged holds no phone number and no message body either.
    for process in mesh.all() {
        for line in process.lines() {
            assert!(
                !line.contains(USER) && !line.contains("How can we help"),
                "wamesh {} logged a phone number or a body: {line}",
                process.name
            );
        }
    }

    // messaging stops: its stream to rate-limit ends, and counts there once.
    mesh.gateway.stop_cleanly().await;
    mesh.messaging.stop_cleanly().await;
    eventually("messaging's AcquireStream to be counted", || {
        let ratelimit = &mesh.ratelimit;
        async move {
            let (r, _) = scrape(ratelimit, "ratelimit").await;
            r.sum("rpc_server_requests_total", &stream) == 1.0
        }
    })
    .await;
    mesh.stop().await;
}
