//! Outages: messaging stopped, or its Postgres database unreachable. Webhooks get a quick 503
//! (Meta retries), health and readiness say what is down while liveness stays up, and once the
//! dependency is back the retried webhook is stored, exactly once.
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use wamesh_testkit::{database_name, postgres_admin};

use crate::harness::{Backend, TestMesh, eventually};
use crate::payloads::{self, now_s};
use crate::reads;

on_both_backends!(with_messaging_stopped_webhooks_get_503_and_are_stored_once_after_it_restarts);

/// How fast a webhook must be refused while a dependency is down.
const REFUSED_WITHIN: Duration = Duration::from_secs(5);

/// POSTs `body` and asserts a 503 with a JSON error, answered within [`REFUSED_WITHIN`].
async fn assert_unavailable(mesh: &TestMesh, body: &[u8]) {
    let started = Instant::now();
    let (status, answer) = mesh.post(body).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("retry")),
        "{answer}"
    );
    assert!(took < REFUSED_WITHIN, "the 503 took {took:?}");
}

/// The health report, asserted down (503), with readiness down and liveness up.
async fn health_while_down(mesh: &TestMesh) -> Value {
    let (status, report) = mesh.get_json("/api/webhooks/whatsapp/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["status"], "down", "{report}");
    assert_eq!(
        mesh.get("/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while down"
    );
    assert_eq!(
        mesh.get("/healthz").await.0,
        StatusCode::OK,
        "alive while down"
    );
    report
}

fn dependency<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["dependencies"]
        .as_array()
        .and_then(|deps| deps.iter().find(|d| d["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not in {report}"))
}

/// Retries `body` until it is stored (200); every other answer meanwhile must be a 503.
async fn retry_until_stored(mesh: &TestMesh, body: &[u8], within: Duration) -> Value {
    eventually(within, "the retried webhook is stored", || async {
        let (status, answer) = mesh.post(body).await;
        match status {
            StatusCode::OK => Some(answer),
            StatusCode::SERVICE_UNAVAILABLE => None,
            other => panic!("while recovering, a retry got {other}: {answer}"),
        }
    })
    .await
}

/// Asserts that `contact` has exactly the one message `wamid`.
async fn assert_stored_once(mesh: &TestMesh, contact: &str, wamid: &str) {
    let conversation = reads::conversation(&mesh.grpc(), contact, 50).await;
    let wamids: Vec<&str> = conversation.iter().map(|m| m.wamid.as_str()).collect();
    assert_eq!(wamids, [wamid], "stored exactly once");
}

async fn with_messaging_stopped_webhooks_get_503_and_are_stored_once_after_it_restarts(
    backend: Backend,
) {
    let mut mesh = TestMesh::start_split(backend).await;
    // One webhook first, so the gateway holds a live connection to messaging when it stops.
    let (status, answer) = mesh
        .post(&payloads::inbound_text(
            "15551230030",
            "wamid.before",
            now_s(),
            "before",
        ))
        .await;
    assert_eq!(status, 200, "{answer}");

    mesh.stop_messaging().await;
    let body = payloads::inbound_text(
        "15551230031",
        "wamid.during.messaging.outage",
        now_s(),
        "during",
    );
    assert_unavailable(&mesh, &body).await;
    let report = health_while_down(&mesh).await;
    assert_eq!(dependency(&report, "messaging")["up"], false, "{report}");

    mesh.restart_messaging().await;
    retry_until_stored(&mesh, &body, Duration::from_secs(15)).await;
    assert_stored_once(&mesh, "15551230031", "wamid.during.messaging.outage").await;
    assert_stored_once(&mesh, "15551230030", "wamid.before").await;
    assert_eq!(mesh.get("/readyz").await.0, StatusCode::OK, "ready again");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_unreachable_webhooks_get_503_and_are_stored_once_after_it_returns() {
    let mesh = TestMesh::start_for_outage(Backend::Postgres).await;
    let (status, answer) = mesh
        .post(&payloads::inbound_text(
            "15551230032",
            "wamid.before.db",
            now_s(),
            "before",
        ))
        .await;
    assert_eq!(status, 200, "{answer}");

    let name = database_name(&mesh.database_url).to_owned();
    postgres_admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    postgres_admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .await;

    let body = payloads::inbound_text("15551230033", "wamid.during.db.outage", now_s(), "during");
    assert_unavailable(&mesh, &body).await;
    let report = health_while_down(&mesh).await;
    assert_eq!(
        dependency(&report, "messaging")["up"],
        true,
        "messaging itself answers: {report}"
    );
    let database = dependency(&report, "messaging.database");
    assert_eq!(database["up"], false, "{report}");
    assert_eq!(database["kind"], "postgres", "{report}");

    postgres_admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    retry_until_stored(&mesh, &body, Duration::from_secs(20)).await;
    assert_stored_once(&mesh, "15551230033", "wamid.during.db.outage").await;
    assert_stored_once(&mesh, "15551230032", "wamid.before.db").await;
    assert_eq!(mesh.get("/readyz").await.0, StatusCode::OK, "ready again");
    mesh.stop().await;
}
