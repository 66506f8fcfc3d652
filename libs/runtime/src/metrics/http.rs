//! Request metrics for axum routers, written once for every HTTP server of wamesh (the gateway,
//! the simulator, the admin servers):
//!
//! - `http_server_requests_total{service, method, route, status}`: a counter per answered
//!   request;
//! - `http_server_request_duration_seconds{service, method, route}`: a histogram of the time
//!   from the request to its response's head.
//!
//! Labels stay bounded whatever clients send: `method` is one of the standard methods or
//! `other`; `route` is the axum route template (`/v23.0/{phone_number_id}/messages`, never the
//! path itself, which may hold ids or phone numbers), or `other` when no route matched;
//! `status` is the numeric status code (a server only answers codes it has handlers for).
//!
//! Apply it with `Router::layer` *after* the routes are added (merged routers included): axum
//! then runs it inside each route, where the matched template is known.
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Method, Request, Response};
use tower::{Layer, Service};

/// The label for a method or route outside the known sets.
const OTHER: &str = "other";

/// Counts and times every request of a router under the wamesh service name `service`
/// (`gateway`, `messaging`, `ratelimit`, `simulator`): services that share a process in
/// `wamesh dev` share its recorder, and this label tells them apart.
#[derive(Debug, Clone, Copy)]
pub struct HttpMetricsLayer {
    service: &'static str,
}

impl HttpMetricsLayer {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            service: self.service,
        }
    }
}

/// The service [`HttpMetricsLayer`] wraps around each route.
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    service: &'static str,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for HttpMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let service = self.service;
        let method = method_label(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| OTHER.to_owned(), |p| p.as_str().to_owned());
        let started = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let status = match &answer {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics::histogram!(
                "http_server_request_duration_seconds",
                "service" => service,
                "method" => method,
                "route" => route.clone(),
            )
            .record(started.elapsed().as_secs_f64());
            metrics::counter!(
                "http_server_requests_total",
                "service" => service,
                "method" => method,
                "route" => route,
                "status" => status,
            )
            .increment(1);
            answer
        })
    }
}

/// One of the standard methods, or `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    KNOWN
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(router: &Router, method: &str, path: &str) -> u16 {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        router
            .clone()
            .oneshot(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The series of `service` in the process recorder's text, sorted.
    fn series(service: &str) -> Vec<String> {
        let text = crate::metrics::install().render();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains(&format!("service=\"{service}\"")))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_method_and_status() {
        crate::metrics::install();
        let router = Router::new()
            .route(
                "/items/{id}",
                get(|| async { "item" }).post(|| async { http::StatusCode::CREATED }),
            )
            .merge(Router::new().route("/healthz", get(|| async { "ok" })))
            .layer(HttpMetricsLayer::new("http-test-routes"));
        assert_eq!(call(&router, "GET", "/items/15551234567").await, 200);
        assert_eq!(call(&router, "GET", "/items/42").await, 200);
        assert_eq!(call(&router, "POST", "/items/42").await, 201);
        assert_eq!(call(&router, "GET", "/healthz").await, 200);
        let counters: Vec<String> = series("http-test-routes")
            .into_iter()
            .filter(|l| l.starts_with("http_server_requests_total"))
            .collect();
        assert_eq!(
            counters,
            vec![
                "http_server_requests_total{service=\"http-test-routes\",method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
                "http_server_requests_total{service=\"http-test-routes\",method=\"GET\",route=\"/items/{id}\",status=\"200\"} 2",
                "http_server_requests_total{service=\"http-test-routes\",method=\"POST\",route=\"/items/{id}\",status=\"201\"} 1",
            ]
        );
        let all = series("http-test-routes").join("\n");
        assert!(
            all.contains("http_server_request_duration_seconds_count{service=\"http-test-routes\",method=\"GET\",route=\"/items/{id}\"} 2"),
            "{all}"
        );
        assert!(!all.contains("15551234567"), "no raw path in labels: {all}");
        let scrape = wamesh_testkit::prometheus::parse(&crate::metrics::install().render())
            .expect("the recorder renders valid exposition text");
        let family = scrape.family("http_server_request_duration_seconds");
        assert_eq!(
            family.map(|f| f.kind),
            Some(wamesh_testkit::prometheus::Kind::Histogram)
        );
    }

    #[tokio::test]
    async fn unmatched_paths_and_unknown_methods_are_other() {
        crate::metrics::install();
        let router = Router::new()
            .route("/known", get(|| async { "ok" }))
            .layer(HttpMetricsLayer::new("http-test-other"));
        assert_eq!(
            call(&router, "GET", "/wamid.HBgLMTU1NTEyMzQ1NjcVAgA").await,
            404
        );
        assert_eq!(call(&router, "BREW", "/known").await, 405);
        let all = series("http-test-other").join("\n");
        assert!(
            all.contains("http_server_requests_total{service=\"http-test-other\",method=\"GET\",route=\"other\",status=\"404\"} 1"),
            "{all}"
        );
        assert!(
            all.contains("http_server_requests_total{service=\"http-test-other\",method=\"other\",route=\"/known\",status=\"405\"} 1"),
            "{all}"
        );
        assert!(!all.contains("wamid"), "{all}");
        assert!(!all.contains("BREW"), "{all}");
    }
}
