//! Telemetry for every wamesh service: one call to [`init`] installs structured
//! logging (JSON lines carrying `trace_id`/`span_id`), OpenTelemetry tracing with an
//! optional OTLP gRPC exporter, and W3C Trace Context propagation.
//!
//! Layout:
//! - `config`: [`TelemetryConfig`], filled by callers or [`TelemetryConfig::from_env`];
//! - `init`: [`init`] and [`TelemetryGuard`] (global subscriber, propagator, provider);
//! - `logfmt`: the subscriber stack and the log formatter that adds trace ids;
//! - `propagation`: inject/extract `traceparent` over HTTP headers and gRPC metadata,
//!   [`GrpcTraceInterceptor`] and [`current_trace_id`];
//! - `spans`: server spans for tonic ([`grpc_server_span`]) and tower-http/axum
//!   ([`http_server_span`]);
//! - `redact`: [`redact`], keyed hashing of phone numbers and other identifiers.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let telemetry = wamesh_telemetry::init(&wamesh_telemetry::TelemetryConfig::from_env("messaging"))?;
//! // ... serve until a shutdown signal ...
//! telemetry.shutdown(); // flush spans last
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod config;
mod init;
mod logfmt;
mod propagation;
mod redact;
mod spans;

pub use config::TelemetryConfig;
pub use init::{TelemetryGuard, init};
pub use propagation::{
    GrpcTraceInterceptor, current_trace_id, inject_grpc, inject_http, link_to_traceparent,
    set_parent_from_http, set_parent_from_traceparent, traceparent,
};
pub use redact::redact;
pub use spans::{grpc_server_span, http_server_span};
