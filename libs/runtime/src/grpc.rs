//! Serving gRPC: every service gets health (`grpc.health.v1`), reflection over all of wamesh's
//! protos, and a server span per call whose parent comes from the caller's `traceparent`.
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use crate::Shutdown;

/// Serves `routes` (plus health and reflection) on `listener` until `shutdown` is cancelled,
/// then lets in-flight calls finish. `service_names` are reported SERVING by the health service.
pub async fn serve(
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
