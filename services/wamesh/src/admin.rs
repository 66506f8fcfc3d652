//! The admin HTTP server each gRPC service runs beside its gRPC port (`WAMESH_METRICS_ADDR`):
//! `/healthz` (alive), `/readyz` (what the service says of its readiness) and `/metrics`.
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use wamesh_runtime::Shutdown;
use wamesh_runtime::metrics::http::HttpMetricsLayer;

/// The admin routes of `service`; `/readyz` answers what `ready` does.
pub fn router<F, Fut, R>(service: &'static str, ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoResponse + 'static,
{
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(wamesh_runtime::metrics::router(
            wamesh_runtime::metrics::install(),
        ))
        .layer(HttpMetricsLayer::new(service))
}

/// The readiness of a service whose database answered (`up`) or not.
pub fn database_readiness(up: bool) -> (StatusCode, &'static str) {
    if up {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

/// Runs a service's gRPC server beside its admin server, both stopping on `stop`.
pub async fn with_admin(
    admin_listener: TcpListener,
    admin: Router,
    stop: Shutdown,
    grpc: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let admin = axum::serve(admin_listener, admin).with_graceful_shutdown(stop.cancelled_owned());
    let (grpc, admin) = tokio::join!(grpc, admin);
    admin?;
    grpc
}
