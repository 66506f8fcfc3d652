//! Server-side span constructors for tonic (`trace_fn`) and tower-http (`make_span_with`),
//! named and attributed after the OpenTelemetry semantic conventions.

use crate::propagation::{HeaderExtractor, set_parent};

/// Span for an incoming gRPC request, for
/// `tonic::transport::Server::builder().trace_fn(wamesh_telemetry::grpc_server_span)`.
///
/// An `INFO` span `grpc.server` with `otel.name = "package.Service/Method"`,
/// `otel.kind = "server"`, `rpc.system = "grpc"`, `rpc.service` and `rpc.method`,
/// whose parent is the `traceparent` of the request headers (if valid).
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    let full_method = request.uri().path().trim_start_matches('/');
    let (service, method) = full_method.split_once('/').unwrap_or((full_method, ""));
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = full_method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        otel.status_code = tracing::field::Empty,
    );
    set_parent(&span, &HeaderExtractor(request.headers()));
    span
}

/// Span for an incoming HTTP request, for tower-http's
/// `TraceLayer::new_for_http().make_span_with(wamesh_telemetry::http_server_span)`.
///
/// An `INFO` span `http.server` with `otel.name = "HTTP {method} {route}"` (the axum
/// route template when the request went through an axum `Router`, else the path),
/// `otel.kind = "server"`, `http.request.method`, `url.path`, `http.route` (when
/// known) and an empty `http.response.status_code` to record later; its parent is
/// the `traceparent` of the request headers (if valid).
pub fn http_server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let method = request.method().as_str();
    let path = request.uri().path();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str);
    let name = format!("HTTP {method} {}", route.unwrap_or(path));
    let span = tracing::info_span!(
        "http.server",
        otel.name = name.as_str(),
        otel.kind = "server",
        http.request.method = method,
        url.path = path,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    set_parent(&span, &HeaderExtractor(request.headers()));
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::current_trace_id;
    use crate::logfmt::test_support::dispatch;

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn grpc_span_has_semantic_fields_and_remote_parent() {
        let (dispatch, logs) = dispatch(true);
        let request = http::Request::builder()
            .uri("http://messaging:50051/wamesh.messaging.v1.Messaging/SendText")
            .header("traceparent", TRACEPARENT)
            .body(())
            .unwrap();
        let trace_id = tracing::dispatcher::with_default(&dispatch, || {
            let span = grpc_server_span(&request);
            span.in_scope(|| {
                tracing::info!("handled");
                current_trace_id()
            })
        });
        assert_eq!(trace_id.as_deref(), Some(TRACE_ID));
        let line: serde_json::Value = serde_json::from_str(&logs.lines()[0]).unwrap();
        let span = &line["span"];
        assert_eq!(span["name"], "grpc.server");
        assert_eq!(span["otel.name"], "wamesh.messaging.v1.Messaging/SendText");
        assert_eq!(span["otel.kind"], "server");
        assert_eq!(span["rpc.system"], "grpc");
        assert_eq!(span["rpc.service"], "wamesh.messaging.v1.Messaging");
        assert_eq!(span["rpc.method"], "SendText");
        assert_eq!(line["trace_id"], TRACE_ID);
    }

    #[tokio::test]
    async fn http_span_names_the_axum_route() {
        use tower::ServiceExt as _;

        async fn handler() -> String {
            tracing::info!("webhook received");
            current_trace_id().unwrap_or_default()
        }
        let (dispatch, logs) = dispatch(true);
        let _default = tracing::dispatcher::set_default(&dispatch);
        let app = axum::Router::new()
            .route("/webhook/{id}", axum::routing::post(handler))
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(http_server_span));
        let request = http::Request::post("/webhook/42")
            .header("traceparent", TRACEPARENT)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(body, TRACE_ID);

        let lines = logs.lines();
        let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let span = &line["span"];
        assert_eq!(span["name"], "http.server", "{line}");
        assert_eq!(span["otel.name"], "HTTP POST /webhook/{id}");
        assert_eq!(span["http.request.method"], "POST");
        assert_eq!(span["http.route"], "/webhook/{id}");
        assert_eq!(span["url.path"], "/webhook/42");
        assert_eq!(line["trace_id"], TRACE_ID);
    }

    #[test]
    fn http_span_without_router_uses_the_path() {
        let (dispatch, logs) = dispatch(true);
        let request = http::Request::get("/healthz").body(()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            http_server_span(&request).in_scope(|| tracing::info!("ok"));
        });
        let line: serde_json::Value = serde_json::from_str(&logs.lines()[0]).unwrap();
        assert_eq!(line["span"]["otel.name"], "HTTP GET /healthz");
        assert!(line["span"].get("http.route").is_none());
    }
}
