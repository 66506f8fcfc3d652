//! The gateway's other endpoints: Meta's verify handshake, health, readiness and metrics.
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{Backend, TestMesh};
use crate::payloads::{self, now_s};

on_both_backends!(health_lists_messaging_and_its_database_up_and_metrics_count_webhooks);

/// Not storage-relevant: one backend is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_handshake_answers_the_challenge_only_to_our_token() {
    let mesh = TestMesh::start(Backend::Sqlite).await;
    let token = mesh.verify_token.expose().to_owned();
    let path = "/api/webhooks/whatsapp";

    let (status, body) = mesh
        .get(&format!(
            "{path}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
        ))
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1158201444"));

    for (case, query) in [
        (
            "wrong token",
            format!("hub.mode=subscribe&hub.verify_token={token}x&hub.challenge=1"),
        ),
        (
            "empty token",
            "hub.mode=subscribe&hub.verify_token=&hub.challenge=1".to_owned(),
        ),
        (
            "not subscribe",
            format!("hub.mode=unsubscribe&hub.verify_token={token}&hub.challenge=1"),
        ),
    ] {
        let (status, body) = mesh.get(&format!("{path}?{query}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {body}");
        assert!(
            !body.contains(&token),
            "{case}: the answer never echoes our token"
        );
    }

    for (case, query) in [
        ("no parameters", String::new()),
        (
            "no challenge",
            format!("?hub.mode=subscribe&hub.verify_token={token}"),
        ),
        ("no token", "?hub.mode=subscribe&hub.challenge=1".to_owned()),
        (
            "no mode",
            format!("?hub.verify_token={token}&hub.challenge=1"),
        ),
    ] {
        let (status, body) = mesh.get(&format!("{path}{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        let error: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {body}"));
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("hub.challenge")),
            "{case}: {error}"
        );
    }
    mesh.stop().await;
}

async fn health_lists_messaging_and_its_database_up_and_metrics_count_webhooks(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let (status, answer) = mesh
        .post(&payloads::inbound_text(
            "15551230020",
            "wamid.health",
            now_s(),
            "hi",
        ))
        .await;
    assert_eq!(status, 200, "{answer}");

    let (status, report) = mesh.get_json("/api/webhooks/whatsapp/health").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "up", "{report}");
    assert_eq!(report["app_secret_configured"], true, "{report}");
    let dependencies = report["dependencies"].as_array().expect("dependencies[]");
    let find = |name: &str| {
        dependencies
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in {report}"))
    };
    for (name, kind) in [
        ("messaging", "grpc"),
        ("messaging.database", backend.name()),
    ] {
        let dependency = find(name);
        assert_eq!(dependency["up"], true, "{dependency}");
        assert_eq!(dependency["kind"], kind, "{dependency}");
        let latency = dependency["latency_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} has no latency_ms: {dependency}"));
        assert!(
            (0.0..2_000.0).contains(&latency),
            "{name}: latency {latency} ms"
        );
    }

    assert_eq!(mesh.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(mesh.get("/readyz").await.0, StatusCode::OK);

    let (status, metrics) = mesh.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wamesh_webhooks_total{") && l.contains("result=\"stored\"")),
        "/metrics counts stored webhooks:\n{metrics}"
    );
    assert!(
        metrics.contains("# TYPE wamesh_webhooks_total counter"),
        "Prometheus text format:\n{metrics}"
    );
    mesh.stop().await;
}

/// Fail closed: with no app secret configured nothing can be verified, so nothing is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_app_secret_every_webhook_is_refused_and_health_says_why() {
    let unsigned = wamesh_runtime::BusinessNumber {
        app_secret: wamesh_runtime::Secret::new(""),
        ..crate::harness::number(None)
    };
    let mesh = TestMesh::start_with_numbers(Backend::Sqlite, vec![unsigned]).await;
    let body = payloads::inbound_text("15551230060", "wamid.no.secret", now_s(), "hello");
    let forged = wamesh_whatsapp::sign(b"", &body);
    let (status, answer) = mesh.post_raw(&body, Some(&forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("no app secret")),
        "{answer}"
    );
    let (status, report) = mesh.get_json("/api/webhooks/whatsapp/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{report}");
    assert_eq!(report["app_secret_configured"], false);
    assert!(
        crate::reads::conversation(&mesh.grpc(), "15551230060", 10)
            .await
            .is_empty()
    );
    mesh.stop().await;
}
