//! Serving gRPC: every service gets health (`grpc.health.v1`), reflection over all of wamesh's
//! protos, a server span per call whose parent comes from the caller's `traceparent`, and call
//! metrics ([`crate::metrics::grpc`]).
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::Shutdown;
use crate::metrics::grpc::GrpcMetricsLayer;

/// Serves `routes` (plus health and reflection) on `listener` until `shutdown` is cancelled,
/// then lets in-flight calls finish. `service_names` are reported SERVING by the health service.
/// `service` is the wamesh service's name in metrics (`messaging`, `ratelimit`).
pub async fn serve(
    service: &'static str,
    routes: Routes,
    service_names: &[&str],
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(wamesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let routes = routes.add_service(health).add_service(reflection);
    tonic::transport::Server::builder()
        .trace_fn(wamesh_telemetry::grpc_server_span)
        .layer(GrpcMetricsLayer::new(service))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned())
        .await?;
    Ok(())
}

/// Accepted connections with `TCP_NODELAY`: without it, Nagle's algorithm and delayed ACKs hold
/// small gRPC frames for up to 40 ms (tonic sets it only on listeners it binds itself).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::transport::Channel;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    use super::*;

    /// A server of health and reflection only, counted under `service`.
    async fn start(service: &'static str) -> (Channel, Shutdown) {
        crate::metrics::install();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        tokio::spawn(serve(
            service,
            Routes::default(),
            &["wamesh.test.v1.Test"],
            listener,
            shutdown.clone(),
        ));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        (channel, shutdown)
    }

    /// The call counters of `service`, sorted.
    fn counters(service: &str) -> Vec<String> {
        let text = crate::metrics::install().render();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("rpc_server_requests_total{"))
            .filter(|l| l.contains(&format!("service=\"{service}\"")))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// Waits (generously) until `service`'s counters include `line`.
    async fn eventually(service: &str, line: &str) {
        for _ in 0..200 {
            if counters(service).iter().any(|l| l == line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {line} in {:#?}", counters(service));
    }

    #[tokio::test]
    async fn unary_calls_count_with_the_status_of_their_trailers_or_their_headers() {
        let (channel, stop) = start("grpc-test-unary").await;
        let mut health = HealthClient::new(channel.clone());
        let known = health
            .check(HealthCheckRequest {
                service: "wamesh.test.v1.Test".into(),
            })
            .await;
        assert!(known.is_ok(), "{known:?}");
        let unknown = health
            .check(HealthCheckRequest {
                service: "no.such.Service".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        // A path no service serves: a client must not be able to invent label values.
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let invented = grpc
            .unary::<_, HealthCheckResponse, _>(
                tonic::Request::new(HealthCheckRequest::default()),
                "/wamesh.Invented15551234567/Method".parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(invented.code(), tonic::Code::Unimplemented);

        let s = "service=\"grpc-test-unary\"";
        assert_eq!(
            counters("grpc-test-unary"),
            vec![
                format!(
                    "rpc_server_requests_total{{{s},rpc_service=\"grpc.health.v1.Health\",rpc_method=\"Check\",code=\"NOT_FOUND\"}} 1"
                ),
                format!(
                    "rpc_server_requests_total{{{s},rpc_service=\"grpc.health.v1.Health\",rpc_method=\"Check\",code=\"OK\"}} 1"
                ),
                format!(
                    "rpc_server_requests_total{{{s},rpc_service=\"other\",rpc_method=\"other\",code=\"UNIMPLEMENTED\"}} 1"
                ),
            ]
        );
        let text = crate::metrics::install().render();
        assert!(
            text.contains(&format!("rpc_server_duration_seconds_count{{{s},rpc_service=\"grpc.health.v1.Health\",rpc_method=\"Check\"}} 2")),
            "{text}"
        );
        assert!(!text.contains("15551234567"), "{text}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_stream_counts_once_when_it_ends() {
        let (channel, stop) = start("grpc-test-stream").await;
        let (requests, stream) = tokio::sync::mpsc::channel(4);
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(stream))
            .await
            .unwrap()
            .into_inner();
        for _ in 0..2 {
            requests
                .send(ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                })
                .await
                .unwrap();
            assert!(answers.message().await.unwrap().is_some());
        }
        assert_eq!(
            counters("grpc-test-stream"),
            Vec::<String>::new(),
            "a stream still open has not ended"
        );
        drop(requests);
        assert!(answers.message().await.unwrap().is_none());
        eventually(
            "grpc-test-stream",
            "rpc_server_requests_total{service=\"grpc-test-stream\",rpc_service=\"grpc.reflection.v1.ServerReflection\",rpc_method=\"ServerReflectionInfo\",code=\"OK\"} 1",
        )
        .await;
        assert_eq!(counters("grpc-test-stream").len(), 1);
        stop.cancel();
    }

    #[tokio::test]
    async fn a_stream_the_client_abandons_counts_as_cancelled() {
        let (channel, stop) = start("grpc-test-cancel").await;
        let mut watch = HealthClient::new(channel)
            .watch(HealthCheckRequest {
                service: "wamesh.test.v1.Test".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(watch.message().await.unwrap().is_some());
        drop(watch);
        eventually(
            "grpc-test-cancel",
            "rpc_server_requests_total{service=\"grpc-test-cancel\",rpc_service=\"grpc.health.v1.Health\",rpc_method=\"Watch\",code=\"CANCELLED\"} 1",
        )
        .await;
        stop.cancel();
    }
}
