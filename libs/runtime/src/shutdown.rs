//! Graceful shutdown. `main` turns SIGTERM or SIGINT into a cancelled [`Shutdown`]; servers stop
//! accepting, finish what is in flight, and workers drain, within [`DRAIN_TIMEOUT`] (below
//! Kubernetes' default 30 s grace period, so telemetry can still flush before the kill).
use std::time::Duration;

/// How long in-flight work may take to finish after the signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// A cloneable shutdown token; tests make their own and cancel it.
pub type Shutdown = tokio_util::sync::CancellationToken;

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}
