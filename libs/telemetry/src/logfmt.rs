//! The subscriber stack: `EnvFilter`, the tracing-opentelemetry layer and a fmt layer
//! whose lines carry the OpenTelemetry `trace_id` and `span_id`.
//!
//! The stock fmt formatters know nothing about OpenTelemetry, so [`TraceIdFormat`]
//! formats a line with the stock JSON (or text) formatter and appends the ids of
//! the innermost span that has a valid OpenTelemetry context. Looking the context up
//! needs the [`Dispatch`] the subscriber lives in; [`DispatchCapture`] records it when
//! the subscriber is registered (the usual `Span::current()` route returns nothing
//! while an event is being dispatched under a scoped subscriber).

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Registry};

use crate::TelemetryConfig;

/// Builds the full subscriber: `EnvFilter` from `config.log_filter`, the
/// OpenTelemetry layer exporting through `tracer`, and the log layer writing JSON
/// (or text, per `config.json_logs`) lines to `writer`.
///
/// Not installed here: [`crate::init`] makes it global, tests use it scoped.
pub(crate) fn build_subscriber<W>(
    config: &TelemetryConfig,
    tracer: SdkTracer,
    writer: W,
) -> anyhow::Result<impl Subscriber + Send + Sync + for<'a> LookupSpan<'a>>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {:?}: {e}", config.log_filter))?;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Busy/idle timing costs work on every poll of every instrumented future; spans keep
        // their start and end times without it.
        .with_tracked_inactivity(false)
        // Thread ids and names say little about spans of tasks that hop threads, and the
        // name is a string copied into every span; the span name locates the code.
        .with_threads(false)
        .with_location(false)
        // The service and the span name say where a span comes from; a module path per span
        // only adds to what is exported.
        .with_target(false)
        .with_filter(NotExporterInternal);
    let dispatch = Arc::new(OnceLock::new());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if config.json_logs {
        let format = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        fmt.json()
            .event_format(TraceIdFormat {
                inner: format,
                json: true,
                dispatch: dispatch.clone(),
            })
            .boxed()
    } else {
        let format = tracing_subscriber::fmt::format().with_ansi(false);
        fmt.with_ansi(false)
            .event_format(TraceIdFormat {
                inner: format,
                json: false,
                dispatch: dispatch.clone(),
            })
            .boxed()
    };
    // The EnvFilter goes outermost: there its "never" ends a callsite's life. Beneath the
    // per-layer filter of `otel` it could not: a layer above that filter sees `never` from
    // below and, not knowing whose it was, asks again on every event ("sometimes"), so every
    // `trace!` in h2 and tower cost a filter evaluation (10% of a gRPC call in profiles).
    Ok(Registry::default()
        .with(otel)
        .with(fmt)
        .with(DispatchCapture(dispatch))
        .with(filter))
}

/// Keeps the exporter's own spans out of OpenTelemetry. Decided once per callsite (a plain
/// `filter_fn` would be asked again on every span and event, which showed in profiles).
struct NotExporterInternal;

impl<S> tracing_subscriber::layer::Filter<S> for NotExporterInternal {
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        !is_exporter_internal(meta.target())
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if is_exporter_internal(meta.target()) {
            tracing::subscriber::Interest::never()
        } else {
            tracing::subscriber::Interest::always()
        }
    }
}

/// Targets whose spans must not become OpenTelemetry spans: the exporter's own
/// gRPC stack would otherwise trace its own exports (a feedback loop at `trace` level).
fn is_exporter_internal(target: &str) -> bool {
    const CRATES: [&str; 8] = [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
    ];
    let krate = target.find(':').map_or(target, |end| &target[..end]);
    CRATES.contains(&krate)
}

/// Records the [`Dispatch`] the subscriber is registered in, for [`TraceIdFormat`].
struct DispatchCapture(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchCapture {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// Wraps a stock event formatter and appends `trace_id` and `span_id`.
struct TraceIdFormat<F> {
    /// The stock JSON or text formatter.
    inner: F,
    /// `true`: splice the ids into the JSON object; `false`: append `key=value` pairs.
    json: bool,
    /// Set by [`DispatchCapture`] when the subscriber is registered.
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> TraceIdFormat<F> {
    /// Ids of the innermost span around `ctx`'s event with a valid OpenTelemetry context.
    fn ids<S, N>(&self, ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let dispatch = self.dispatch.get()?.upgrade()?;
        ctx.event_scope()?.find_map(|span| {
            let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
            let otel_span = cx.span();
            let sc = otel_span.span_context();
            sc.is_valid()
                .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        })
    }
}

impl<S, N, F> FormatEvent<S, N> for TraceIdFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = self.ids(ctx) else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.trim_end_matches('\n');
        match line.strip_suffix('}').filter(|_| self.json) {
            Some(object) => {
                let comma = if object.trim_end().ends_with('{') {
                    ""
                } else {
                    ","
                };
                writeln!(
                    writer,
                    "{object}{comma}\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
                )
            }
            None => writeln!(writer, "{line} trace_id={trace_id} span_id={span_id}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A scoped subscriber writing into a buffer, with an exporter-less tracer provider.

    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use crate::TelemetryConfig;

    /// Log output shared between the subscriber and the test.
    #[derive(Clone, Default)]
    pub(crate) struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        pub(crate) fn lines(&self) -> Vec<String> {
            let bytes = self.0.lock().unwrap().clone();
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A dispatch like the one [`crate::init`] installs, but not global.
    pub(crate) fn dispatch(json_logs: bool) -> (tracing::Dispatch, Buffer) {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let config = TelemetryConfig {
            json_logs,
            ..TelemetryConfig::new("test")
        };
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let subscriber = super::build_subscriber(&config, tracer, move || writer.clone()).unwrap();
        (tracing::Dispatch::new(subscriber), buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::dispatch;
    use crate::current_trace_id;

    #[test]
    fn json_lines_in_spans_carry_trace_and_span_ids() {
        let (dispatch, buffer) = dispatch(true);
        let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("outside");
            let span = tracing::info_span!("work", job = 7);
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
            tracing::info_span!("inner").in_scope(|| {
                tracing::warn!("nested");
                use opentelemetry::trace::TraceContextExt as _;
                use tracing_opentelemetry::OpenTelemetrySpanExt as _;
                let cx = tracing::Span::current().context();
                (
                    current_trace_id().unwrap(),
                    cx.span().span_context().span_id().to_string(),
                )
            })
        });
        let lines: Vec<serde_json::Value> = buffer
            .lines()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");

        assert_eq!(lines[0]["message"], "outside");
        assert!(lines[0].get("trace_id").is_none());

        assert_eq!(lines[1]["message"], "inside");
        assert_eq!(lines[1]["answer"], 42);
        assert_eq!(lines[1]["span"]["name"], "work");
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        let outer_span_id = lines[1]["span_id"].as_str().unwrap();
        assert_eq!(outer_span_id.len(), 16);

        assert_eq!(lines[2]["trace_id"], trace_id.as_str());
        assert_eq!(lines[2]["span_id"], span_id.as_str());
        assert_ne!(outer_span_id, span_id);
        assert_eq!(trace_id.len(), 32);
        assert!(
            trace_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn text_lines_append_ids() {
        let (dispatch, buffer) = dispatch(false);
        let trace_id = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info_span!("work").in_scope(|| {
                tracing::info!("inside");
                current_trace_id().unwrap()
            })
        });
        let lines = buffer.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("inside"), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!(" trace_id={trace_id} span_id=")),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn exporter_internals_are_not_traced() {
        assert!(super::is_exporter_internal("h2::proto::streams"));
        assert!(super::is_exporter_internal("tower"));
        assert!(super::is_exporter_internal("opentelemetry_otlp::exporter"));
        assert!(!super::is_exporter_internal("tower_http::trace"));
        assert!(!super::is_exporter_internal("wamesh_messaging::handler"));
    }

    #[test]
    fn invalid_filter_is_an_error() {
        use opentelemetry::trace::TracerProvider as _;
        let config = crate::TelemetryConfig {
            log_filter: "info,[[[".to_owned(),
            ..crate::TelemetryConfig::new("test")
        };
        let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .build()
            .tracer("t");
        assert!(super::build_subscriber(&config, tracer, std::io::sink).is_err());
    }
}
