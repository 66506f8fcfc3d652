//! Call metrics for tonic servers, applied by [`crate::grpc::serve`] so every gRPC service of
//! wamesh has them:
//!
//! - `rpc_server_requests_total{service, rpc_service, rpc_method, code}`: a counter per call
//!   that ended;
//! - `rpc_server_duration_seconds{service, rpc_service, rpc_method}`: a histogram of the time
//!   from the request to the call's end.
//!
//! A call ends with its `grpc-status`: in the response headers when it fails at once
//! ("trailers-only", as tonic answers most errors), else in the trailers after the last
//! message (a unary success, every stream). So the response body is wrapped and watched for
//! its trailers: a streaming call counts once, when its stream ends, and its duration is the
//! stream's. A body dropped before its trailers (the client went away, the connection broke)
//! counts as `CANCELLED`.
//!
//! Labels stay bounded: `code` is a gRPC status code name (`OK`, `NOT_FOUND`, ...; `other` for
//! a value outside the 17); `rpc_service` and `rpc_method` come from the path
//! (`/wamesh.messaging.v1.Messaging/SendMessage`), except on `UNIMPLEMENTED`, which is how
//! tonic answers paths no service serves: those are `other`, so a client cannot invent label
//! values.
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// The label for what is outside the known sets.
const OTHER: &str = "other";

/// gRPC status code names, indexed by code (the gRPC specification's names).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const UNIMPLEMENTED: &str = CODES[12];

/// Counts and times every call of a tonic server under the wamesh service name `service`
/// (`messaging`, `ratelimit`).
#[derive(Debug, Clone, Copy)]
pub struct GrpcMetricsLayer {
    service: &'static str,
}

impl GrpcMetricsLayer {
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            service: self.service,
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around a server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    service: &'static str,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Body + Unpin + Send + 'static,
{
    type Response = Response<MeteredBody<R>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let call = Call {
            service: self.service,
            path: request.uri().path().to_owned(),
            started: Instant::now(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let (parts, body) = answer.await?.into_parts();
            // Trailers-only: the call ended with its headers.
            let call = match parts.headers.get("grpc-status") {
                Some(_) => {
                    call.end(code_of(&parts.headers));
                    None
                }
                None => Some(call),
            };
            Ok(Response::from_parts(
                parts,
                MeteredBody { inner: body, call },
            ))
        })
    }
}

/// One call in progress.
struct Call {
    service: &'static str,
    path: String,
    started: Instant,
}

impl Call {
    fn end(self, code: &'static str) {
        let (rpc_service, rpc_method) = if code == UNIMPLEMENTED {
            (OTHER, OTHER)
        } else {
            self.path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or((OTHER, OTHER))
        };
        metrics::histogram!(
            "rpc_server_duration_seconds",
            "service" => self.service,
            "rpc_service" => rpc_service.to_owned(),
            "rpc_method" => rpc_method.to_owned(),
        )
        .record(self.started.elapsed().as_secs_f64());
        metrics::counter!(
            "rpc_server_requests_total",
            "service" => self.service,
            "rpc_service" => rpc_service.to_owned(),
            "rpc_method" => rpc_method.to_owned(),
            "code" => code,
        )
        .increment(1);
    }
}

/// The name of the `grpc-status` in `headers` (headers or trailers).
fn code_of(headers: &HeaderMap) -> &'static str {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|code| CODES.get(code).copied())
        .unwrap_or(OTHER)
}

/// A response body that ends its call when its trailers pass (or when it ends or is dropped
/// without them).
pub struct MeteredBody<B> {
    inner: B,
    /// `None` once the call was counted.
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame.trailers_ref().map(code_of),
            // A body that fails or ends without trailers carries no status: nobody knows.
            Some(Err(_)) | None => Some(CODES[2]),
        };
        if let Some(code) = code
            && let Some(call) = self.call.take()
        {
            call.end(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.end(CODES[1]);
        }
    }
}
