//! W3C Trace Context (`traceparent`/`tracestate`) propagation over HTTP headers and
//! gRPC metadata, plus [`current_trace_id`].
//!
//! The helpers use the W3C propagator directly rather than the global one, so they
//! behave the same whether or not [`crate::init`] ran (for example under a scoped
//! test subscriber).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Sets the parent of `span` from `traceparent`/`tracestate` in HTTP `headers`.
///
/// No-op when the headers are absent or invalid, when no OpenTelemetry layer is
/// installed, or when `span` has already been started (entered or logged in):
/// call it right after creating the span.
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    set_parent(span, &HeaderExtractor(headers));
}

/// Sets the parent of `span` from a lone W3C `traceparent` value (one carried inside a
/// message, as on a stream where per-call headers do not exist). No-op when it is invalid.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    set_parent(span, &TraceparentExtractor(traceparent));
}

/// Injects the current span's context as `traceparent`/`tracestate` into HTTP
/// `headers` (for outgoing reqwest calls). No-op outside a traced span.
pub fn inject_http(headers: &mut http::HeaderMap) {
    inject(&mut HeaderInjector(headers));
}

/// Injects the current span's context into gRPC `metadata` (client side).
/// No-op outside a traced span. [`GrpcTraceInterceptor`] does this for every call.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    inject(&mut MetadataInjector(metadata));
}

/// The trace id of the current span as 32 lowercase hex characters, or `None`
/// outside a span that has a valid OpenTelemetry context.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// A tonic client interceptor that runs [`inject_grpc`] on every request:
/// `MessagingClient::with_interceptor(channel, wamesh_telemetry::GrpcTraceInterceptor)`.
///
/// The context is taken from the span current when the call is made, so make the
/// call inside the span that should become the server span's parent.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceInterceptor;

impl tonic::service::Interceptor for GrpcTraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_grpc(request.metadata_mut());
        Ok(request)
    }
}

/// Sets `span`'s parent from whatever `extractor` carries, if it is a valid remote context.
pub(crate) fn set_parent(span: &tracing::Span, extractor: &dyn Extractor) {
    let cx = TraceContextPropagator::new().extract(extractor);
    if cx.span().span_context().is_valid() {
        // Errors mean "no OpenTelemetry layer" or "span already started": keep the span as is.
        let _ = span.set_parent(cx);
    }
}

fn inject(injector: &mut dyn Injector) {
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, injector);
    }
}

/// The W3C `traceparent` of `span` itself (so work elsewhere can be its child), or `None`
/// when it has no valid OpenTelemetry context (no layer installed). Call it after any
/// `set_parent`: the parent decides the trace id.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// Links `span` to the span `traceparent` names (a causal relation across traces, as between
/// a delivery confirmation and the status webhook's own request). No-op when it is invalid.
pub fn link_to_traceparent(span: &tracing::Span, traceparent: &str) {
    let cx = TraceContextPropagator::new().extract(&TraceparentExtractor(traceparent));
    let linked = cx.span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// A `traceparent` on its own.
struct TraceparentExtractor<'a>(&'a str);

impl Extractor for TraceparentExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Reads propagation fields from HTTP headers.
pub(crate) struct HeaderExtractor<'a>(pub(crate) &'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logfmt::test_support::dispatch;
    use tonic::service::Interceptor as _;

    fn span_ids(span: &tracing::Span) -> (String, String) {
        let cx = span.context();
        let otel = cx.span();
        let sc = otel.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    }

    #[test]
    fn http_round_trip_keeps_the_trace() {
        let (dispatch, _logs) = dispatch(true);
        tracing::dispatcher::with_default(&dispatch, || {
            let client = tracing::info_span!("client");
            let mut headers = http::HeaderMap::new();
            client.in_scope(|| inject_http(&mut headers));
            let (trace_id, client_span_id) = span_ids(&client);
            let traceparent = headers.get("traceparent").unwrap().to_str().unwrap();
            assert_eq!(traceparent, format!("00-{trace_id}-{client_span_id}-01"));

            let server = tracing::info_span!("server");
            set_parent_from_http(&server, &headers);
            let (server_trace_id, server_span_id) = span_ids(&server);
            assert_eq!(server_trace_id, trace_id);
            assert_ne!(server_span_id, client_span_id);
            assert_eq!(server.in_scope(current_trace_id), Some(trace_id));
        });
    }

    #[test]
    fn grpc_metadata_round_trip_keeps_the_trace() {
        let (dispatch, _logs) = dispatch(true);
        tracing::dispatcher::with_default(&dispatch, || {
            let client = tracing::info_span!("client");
            let mut metadata = tonic::metadata::MetadataMap::new();
            client.in_scope(|| inject_grpc(&mut metadata));
            let (trace_id, _) = span_ids(&client);

            let server = tracing::info_span!("server");
            set_parent_from_http(&server, &metadata.into_headers());
            assert_eq!(span_ids(&server).0, trace_id);
        });
    }

    #[test]
    fn a_lone_traceparent_value_becomes_the_parent() {
        let (dispatch, _logs) = dispatch(true);
        tracing::dispatcher::with_default(&dispatch, || {
            let server = tracing::info_span!("server");
            set_parent_from_traceparent(
                &server,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            assert_eq!(span_ids(&server).0, "4bf92f3577b34da6a3ce929d0e0e4736");

            let unrelated = tracing::info_span!("unrelated");
            set_parent_from_traceparent(&unrelated, "not a traceparent");
            assert_ne!(span_ids(&unrelated).0, "4bf92f3577b34da6a3ce929d0e0e4736");
        });
    }

    #[test]
    fn interceptor_injects_traceparent() {
        let (dispatch, _logs) = dispatch(true);
        tracing::dispatcher::with_default(&dispatch, || {
            let client = tracing::info_span!("client");
            let request = client
                .in_scope(|| GrpcTraceInterceptor.call(tonic::Request::new(())))
                .unwrap();
            let traceparent = request
                .metadata()
                .get("traceparent")
                .unwrap()
                .to_str()
                .unwrap();
            assert!(traceparent.contains(&span_ids(&client).0));
        });
    }

    #[test]
    fn missing_or_invalid_context_is_ignored() {
        let (dispatch, _logs) = dispatch(true);
        tracing::dispatcher::with_default(&dispatch, || {
            let mut headers = http::HeaderMap::new();
            inject_http(&mut headers);
            assert!(headers.is_empty(), "nothing to inject outside a span");
            assert_eq!(current_trace_id(), None);

            headers.insert("traceparent", http::HeaderValue::from_static("00-zz-yy-01"));
            let span = tracing::info_span!("server");
            set_parent_from_http(&span, &headers);
            let (trace_id, _) = span_ids(&span);
            assert_ne!(trace_id, "00000000000000000000000000000000");
        });
        // Without any OpenTelemetry layer the helpers do nothing and do not panic.
        let mut headers = http::HeaderMap::new();
        inject_http(&mut headers);
        assert!(headers.is_empty());
        set_parent_from_http(&tracing::Span::none(), &headers);
        assert_eq!(current_trace_id(), None);
    }

    #[test]
    fn a_span_tells_its_own_traceparent_under_its_parent() {
        let (dispatch, _logs) = dispatch(true);
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("child");
            set_parent_from_traceparent(
                &span,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
            let own = traceparent(&span).expect("a valid context");
            assert!(
                own.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{own}"
            );
            assert!(
                !own.contains("00f067aa0ba902b7"),
                "its own span id, not the parent's"
            );
            assert!(own.ends_with("-01"));
            link_to_traceparent(&span, "not a traceparent"); // ignored
        });
        assert_eq!(traceparent(&tracing::Span::none()), None);
    }
}
