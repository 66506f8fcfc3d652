//! Prometheus metrics. One recorder per process (services in one `wamesh dev` process share it);
//! every service exposes it as `GET /metrics`. Request metrics are written once, for every
//! server: [`http`] for axum routers, [`grpc`] for tonic servers (applied by
//! [`crate::grpc::serve`]); both label by wamesh service name.
pub mod grpc;
pub mod http;

use std::sync::OnceLock;

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder the first time; later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .expect("static buckets are valid")
                // Sizes (batch sizes, counts) are not durations: powers of two.
                .set_buckets_for_metric(
                    Matcher::Suffix("_size".into()),
                    &[
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                    ],
                )
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed already (a test harness); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            describe_request_metrics();
            handle
        })
        .clone()
}

/// `GET /metrics` in Prometheus text exposition format.
pub fn router<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route("/metrics", get(move || std::future::ready(handle.render())))
}

/// `# HELP` for the request metrics every service has.
fn describe_request_metrics() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_counter!(
        "http_server_requests_total",
        "HTTP requests answered, by wamesh service, method, route template and status code"
    );
    describe_histogram!(
        "http_server_request_duration_seconds",
        Unit::Seconds,
        "Time from an HTTP request to its response's head, by wamesh service, method and route"
    );
    describe_counter!(
        "rpc_server_requests_total",
        "gRPC calls ended, by wamesh service, gRPC service, method and status code (a stream counts when it ends)"
    );
    describe_histogram!(
        "rpc_server_duration_seconds",
        Unit::Seconds,
        "Time from a gRPC call's request to its end (a stream's whole life), by wamesh service, gRPC service and method"
    );
}
