//! `wamesh otlp-sink`: an OTLP gRPC trace receiver that counts what it is sent and, when asked,
//! keeps it. It is the export target for measuring what tracing costs (run a bench with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at it, and without), and the receiver black-box
//! tests read exported spans from. Not a tracing backend: it stores nothing on disk.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use wamesh_runtime::Shutdown;

#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub addr: SocketAddr,
}

/// What the receiver was sent.
#[derive(Clone, Default)]
pub struct Collector {
    /// Spans by service, then by span name: what an exporter's volume is made of.
    by_name: Arc<Mutex<BTreeMap<String, BTreeMap<String, u64>>>>,
    kept: Option<Arc<Mutex<Vec<ExportTraceServiceRequest>>>>,
}

impl Collector {
    /// One that keeps every request (for tests).
    pub fn keeping() -> Self {
        Self {
            kept: Some(Arc::default()),
            ..Self::default()
        }
    }

    /// Spans received in all.
    pub fn spans(&self) -> u64 {
        let by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        by_name.values().flat_map(|names| names.values()).sum()
    }

    /// Spans received, by `service.name`, then by span name.
    pub fn by_name(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.by_name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every request kept so far (none unless made with [`Collector::keeping`]).
    pub fn requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.kept
            .as_ref()
            .map(|kept| kept.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Serves OTLP trace export on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned())
            .await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        {
            let mut by_name = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
            for resource in &request.resource_spans {
                let names = by_name
                    .entry(service_name(resource).to_owned())
                    .or_default();
                for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                    // Looked up by reference: a name is copied only the first time it comes.
                    match names.get_mut(&span.name) {
                        Some(count) => *count += 1,
                        None => {
                            names.insert(span.name.clone(), 1);
                        }
                    }
                }
            }
        }
        if let Some(kept) = &self.kept {
            kept.lock().unwrap_or_else(|p| p.into_inner()).push(request);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The `service.name` resource attribute of `resource`, or `?`.
fn service_name(resource: &ResourceSpans) -> &str {
    resource
        .resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map_or("?", |value| match value {
            Value::StringValue(name) => name.as_str(),
            _ => "?",
        })
}

/// Runs a counting sink until SIGTERM/SIGINT, saying every 5 s how many spans came, and at
/// the end how many of each service and span name.
pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let collector = Collector::default();
    let listener = TcpListener::bind(args.addr).await?;
    println!(
        "OTLP sink on {} (OTEL_EXPORTER_OTLP_ENDPOINT=http://{}): counts spans, keeps nothing",
        listener.local_addr()?,
        listener.local_addr()?
    );
    let stop = Shutdown::new();
    let serving = tokio::spawn(collector.clone().serve(listener, stop.clone()));
    let mut last = 0;
    loop {
        tokio::select! {
            () = wamesh_runtime::wait_for_signal() => break,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                let now = collector.spans();
                println!("{now} spans received ({:.0}/s lately)", (now - last) as f64 / 5.0);
                last = now;
            }
        }
    }
    stop.cancel();
    serving.await??;
    println!("spans by service and name:");
    for (service, names) in collector.by_name() {
        for (name, count) in names {
            println!("{count:>10}  {service}  {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    use super::*;

    fn resource_spans(service: Option<&str>, names: &[&str]) -> ResourceSpans {
        let attributes = service
            .map(|name| KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(name.into())),
                }),
                ..Default::default()
            })
            .into_iter()
            .collect();
        ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: names
                    .iter()
                    .map(|name| Span {
                        name: (*name).into(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn spans_are_counted_by_service_and_name_across_requests() {
        let collector = Collector::default();
        for _ in 0..2 {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![
                    resource_spans(Some("gateway"), &["HTTP POST", "HTTP POST"]),
                    resource_spans(Some("messaging"), &["wamesh.ingest"]),
                    resource_spans(None, &["orphan"]),
                ],
            };
            collector
                .export(tonic::Request::new(request))
                .await
                .unwrap();
        }
        assert_eq!(collector.spans(), 8);
        let by_name = collector.by_name();
        assert_eq!(by_name["gateway"]["HTTP POST"], 4);
        assert_eq!(by_name["messaging"]["wamesh.ingest"], 2);
        assert_eq!(by_name["?"]["orphan"], 2);
        assert_eq!(by_name.len(), 3);
        assert!(
            collector.requests().is_empty(),
            "a counting sink keeps nothing"
        );
    }
}
