//! Health endpoints.
//!
//! - `/healthz`: the process is alive (always 200 while it serves).
//! - `/readyz`: it can accept webhooks now: messaging and its database answer (200, else 503).
//! - `/api/webhooks/whatsapp/health`: every dependency with its state and latency, as JSON.
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use wamesh_proto::messaging::v1::CheckDependenciesRequest;

use crate::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/webhooks/whatsapp/health", get(report))
}

/// One dependency as the health report shows it.
#[derive(Debug, Serialize)]
pub struct Dependency {
    pub name: String,
    pub up: bool,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub app_secret_configured: bool,
    pub dependencies: Vec<Dependency>,
}

/// Asks messaging for its own dependencies; messaging itself is the first one.
pub async fn check(state: &AppState) -> HealthReport {
    let started = Instant::now();
    let mut messaging = state.messaging.clone();
    let answer = tokio::time::timeout(
        CHECK_TIMEOUT,
        messaging.check_dependencies(CheckDependenciesRequest {}),
    )
    .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut dependencies = Vec::new();
    match answer {
        Ok(Ok(reply)) => {
            dependencies.push(Dependency {
                name: "messaging".into(),
                up: true,
                latency_ms,
                kind: "grpc".into(),
                error: String::new(),
            });
            for d in reply.into_inner().dependencies {
                dependencies.push(Dependency {
                    name: format!("messaging.{}", d.name),
                    up: d.up,
                    latency_ms: d.latency_us as f64 / 1000.0,
                    kind: d.kind,
                    error: d.error,
                });
            }
        }
        Ok(Err(status)) => dependencies.push(Dependency {
            name: "messaging".into(),
            up: false,
            latency_ms,
            kind: "grpc".into(),
            error: format!("{:?}", status.code()),
        }),
        Err(_) => dependencies.push(Dependency {
            name: "messaging".into(),
            up: false,
            latency_ms,
            kind: "grpc".into(),
            error: "timed out".into(),
        }),
    }
    let app_secret_configured = state.apps.has_secret();
    let up = app_secret_configured && dependencies.iter().all(|d| d.up);
    HealthReport {
        status: if up { "up" } else { "down" },
        app_secret_configured,
        dependencies,
    }
}

async fn report(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let report = check(&state).await;
    let code = if report.status == "up" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if check(&state).await.status == "up" {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
