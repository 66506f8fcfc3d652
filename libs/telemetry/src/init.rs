//! [`init`] and [`TelemetryGuard`]: installing the process-wide subscriber,
//! propagator and tracer provider, and flushing them at exit.

use std::sync::Mutex;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, Sampler, SdkTracerProvider};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::TelemetryConfig;
use crate::logfmt::build_subscriber;

/// Whether [`init`] has installed the global subscriber in this process. A global
/// subscriber can only be set once per process, so this is the one piece of
/// process-wide state the crate keeps.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Instrumentation scope name of the spans created through `tracing`.
const SCOPE: &str = env!("CARGO_PKG_NAME");

/// Installs process-wide telemetry: the global `tracing` subscriber (`EnvFilter` from
/// `config.log_filter`, the tracing-opentelemetry layer, and a fmt layer writing to
/// stdout, JSON by default, with `trace_id` and `span_id` on every line emitted
/// inside a traced span), the W3C TraceContext propagator, and a tracer provider.
///
/// With `config.otlp_endpoint` set, spans go to an OTLP gRPC batch exporter with the
/// resource attributes `service.name`, `service.version` (the wamesh workspace
/// version) and `service.instance.id` (random per process). Without it the provider
/// has no exporter, but spans still get trace ids that propagate and appear in logs.
/// Sampling keeps `config.sampler_ratio` of new traces, and follows a caller's decision when
/// `config.parent_based` (the default).
///
/// Only the first successful call installs anything. Later calls return an inert
/// guard (its `shutdown` does nothing), so every test may call `init`; they share the
/// first call's settings. Keep the first guard alive until the process ends.
///
/// # Errors
/// - `config.log_filter` does not parse;
/// - an endpoint is set but the call is not inside a tokio runtime (the exporter's
///   channel is spawned onto the current runtime), or the exporter cannot be built;
/// - another crate already installed a global subscriber or `log` logger.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        tracing::debug!("telemetry already initialised; ignoring this init call");
        return Ok(TelemetryGuard { provider: None });
    }
    let provider = build_provider(config)?;
    let subscriber = build_subscriber(config, provider.tracer(SCOPE), std::io::stdout)?;
    if let Err(e) = subscriber.try_init() {
        let _ = provider.shutdown();
        return Err(anyhow::anyhow!(
            "cannot install the global tracing subscriber: {e}"
        ));
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    *installed = true;
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

/// The tracer provider for `config`: batch OTLP exporter when an endpoint is set.
fn build_provider(config: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let ratio = if config.sampler_ratio.is_finite() {
        config.sampler_ratio.clamp(0.0, 1.0)
    } else {
        1.0
    };
    let root = Sampler::TraceIdRatioBased(ratio);
    let sampler = if config.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    };
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(resource(config));
    if let Some(endpoint) = &config.otlp_endpoint {
        if tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("an OTLP endpoint needs telemetry initialised inside a tokio runtime");
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Resource attributes of every exported span. Built from `config` only: no
/// environment detectors, so `OTEL_RESOURCE_ATTRIBUTES` is not read here.
fn resource(config: &TelemetryConfig) -> Resource {
    let instance_id = RandomIdGenerator::default().new_trace_id().to_string();
    Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", instance_id),
        ])
        .build()
}

/// Keeps the tracer provider of [`init`]; flushes and shuts it down on
/// [`TelemetryGuard::shutdown`], or on drop if that was not called.
///
/// Shutting down blocks until pending spans are exported (bounded by the exporter
/// timeout). With an exporter, do it while the tokio runtime is still running and
/// has a free worker thread (a `current_thread` runtime would stall the export).
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    /// `None` for the inert guards of repeated [`init`] calls, and after shutdown.
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes pending spans and shuts the tracer provider down. Spans created
    /// afterwards are no longer exported. Does nothing on an inert guard.
    pub fn shutdown(mut self) {
        self.shutdown_provider();
    }

    fn shutdown_provider(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            // The subscriber may be the one failing, so print rather than log.
            eprintln!("wamesh-telemetry: tracer provider shutdown failed: {e}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown_provider();
    }
}
