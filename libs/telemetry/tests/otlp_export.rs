//! End to end through the global `init`: spans reach a real in-test OTLP receiver, and a
//! gRPC call through `GrpcTraceInterceptor` and `grpc_server_span` continues the
//! caller's trace. `init` installs process-wide state, so this binary has one test.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use wamesh_telemetry::{GrpcTraceInterceptor, TelemetryConfig, current_trace_id};

/// Collects every export request it receives.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves `receiver` on 127.0.0.1:0; `traced` adds `trace_fn(grpc_server_span)`.
async fn serve(receiver: Receiver, traced: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut builder = Server::builder();
    if traced {
        builder = builder.trace_fn(wamesh_telemetry::grpc_server_span);
    }
    let router = builder.add_service(TraceServiceServer::new(receiver));
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

/// Exported spans with the `service.name` of their resource.
fn exported(receiver: &Receiver) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for request in receiver.0.lock().unwrap().iter() {
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.clone().unwrap_or_default();
            let service_name = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            let Some(Value::StringValue(service_name)) = service_name else {
                panic!("resource without service.name: {resource:?}");
            };
            for attr in ["service.version", "service.instance.id"] {
                assert!(
                    resource.attributes.iter().any(|kv| kv.key == attr),
                    "{attr} missing"
                );
            }
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    spans.push((service_name.clone(), span.clone()));
                }
            }
        }
    }
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_and_grpc_calls_continue_the_trace() {
    let collector = Receiver::default();
    let collector_addr = serve(collector.clone(), false).await;
    let config = TelemetryConfig {
        otlp_endpoint: Some(format!("http://{collector_addr}")),
        ..TelemetryConfig::new("telemetry-test")
    };
    let guard = wamesh_telemetry::init(&config).unwrap();
    // Every later call is harmless and gives an inert guard.
    wamesh_telemetry::init(&TelemetryConfig::new("other"))
        .unwrap()
        .shutdown();

    // A traced gRPC server, called through the interceptor inside a client span.
    let demo_addr = serve(Receiver::default(), true).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{demo_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TraceServiceClient::with_interceptor(channel, GrpcTraceInterceptor);
    let client_span = tracing::info_span!("send_message", otel.kind = "client");
    let trace_id = {
        let _entered = client_span.enter();
        let trace_id = current_trace_id().expect("spans have trace ids once init ran");
        tracing::info_span!("store_outbox").in_scope(|| tracing::info!("stored"));
        client
            .export(ExportTraceServiceRequest::default())
            .await
            .unwrap();
        trace_id
    };
    drop(client_span);

    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .unwrap();

    let spans = exported(&collector);
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert!(
        spans.iter().all(|(service, _)| service == "telemetry-test"),
        "{names:?}"
    );
    let find = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {names:?}"))
    };
    let send = find("send_message");
    let store = find("store_outbox");
    let server = find("opentelemetry.proto.collector.trace.v1.TraceService/Export");

    assert_eq!(hex::encode(&send.trace_id), trace_id);
    assert_eq!(store.trace_id, send.trace_id);
    assert_eq!(store.parent_span_id, send.span_id);
    assert_eq!(
        server.trace_id, send.trace_id,
        "server span continues the client trace"
    );
    assert_eq!(server.parent_span_id, send.span_id);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    let rpc_method = server.attributes.iter().find(|kv| kv.key == "rpc.method");
    assert_eq!(
        rpc_method.and_then(|kv| kv.value.as_ref()?.value.clone()),
        Some(Value::StringValue("Export".to_owned()))
    );
}
