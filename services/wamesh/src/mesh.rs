//! The mesh in one process: the simulator, rate-limit, messaging, analytics and the gateway on
//! listeners the caller binds (port 0 in tests), stopped in the right order: the gateway first
//! (it stops taking webhooks and finishes those in flight, which still need messaging), then
//! analytics (which reads messaging's event log), then messaging (which drains group commit),
//! then rate-limit (which messaging's senders ask), then the simulator (which they send to).
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_messaging::{IngestConfig, Messaging, MessagingConfig, SendConfig};
use wamesh_ratelimit::{RateLimit, RateLimitConfig};
use wamesh_runtime::shutdown::DRAIN_TIMEOUT;
use wamesh_runtime::{BusinessNumber, Secret, Shutdown};
use wamesh_simulator::{Simulator, SimulatorConfig};

/// What to start.
pub struct MeshConfig {
    pub gateway_listener: TcpListener,
    pub messaging_listener: TcpListener,
    pub database_url: String,
    pub db_max_connections: u32,
    pub ingest: IngestConfig,
    pub numbers: Vec<BusinessNumber>,
    pub ingest_timeout: Duration,
    /// The keys operators call the gateway's `/api/analytics/*` with.
    pub operator_api_keys: Vec<Secret>,
    /// How messaging sends (its Graph API and rate-limit URLs included).
    pub send: SendConfig,
    /// The rate-limit service, when this mesh runs one.
    pub ratelimit: Option<(TcpListener, RateLimitConfig)>,
    /// The simulator of Meta's Graph API, when this mesh runs one.
    pub simulator: Option<(TcpListener, SimulatorConfig)>,
    /// The analytics service, when this mesh runs one (its `messaging_url` is set here).
    pub analytics: Option<(TcpListener, AnalyticsConfig)>,
}

/// A running mesh.
pub struct Mesh {
    pub gateway_addr: SocketAddr,
    pub messaging_addr: SocketAddr,
    /// The storage backend messaging uses (`"postgres"` or `"sqlite"`).
    pub backend: &'static str,
    /// Where rate-limit listens, and its backend (`"redis"` or `"memory"`).
    pub ratelimit: Option<(SocketAddr, &'static str)>,
    /// Where the simulator listens.
    pub simulator: Option<SocketAddr>,
    /// Where analytics listens, and its backend.
    pub analytics: Option<(SocketAddr, &'static str)>,
    gateway: Service,
    analytics_service: Option<Service>,
    messaging: Service,
    ratelimit_service: Option<Service>,
    simulator_service: Option<Service>,
}

struct Service {
    name: &'static str,
    stop: Shutdown,
    /// `None` once the task ended and its result was taken.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let (name, Some(task)) = (self.name, self.task) else {
            return Ok(()); // it ended by itself, and that was reported already
        };
        match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
            Ok(joined) => joined.with_context(|| format!("{name} panicked"))?,
            Err(_) => anyhow::bail!("{name} did not drain within {DRAIN_TIMEOUT:?}"),
        }
    }

    /// Waits until the task ends by itself (never, once its result was taken), and says why.
    async fn ended(&mut self) -> anyhow::Error {
        let Some(task) = self.task.as_mut() else {
            return std::future::pending().await;
        };
        let joined = task.await;
        self.task = None;
        let name = self.name;
        match joined {
            Ok(Ok(())) => anyhow::anyhow!("{name} stopped by itself"),
            Ok(Err(e)) => e.context(format!("{name} stopped")),
            Err(e) => anyhow::anyhow!("{name} panicked: {e}"),
        }
    }
}

/// Runs `services` until `signal` or until one of them ends by itself; then stops them all in
/// order. A service that ended by itself is the error returned.
async fn run_until(
    mut services: Vec<Service>,
    signal: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let ended = {
        let ends = services.iter_mut().map(|s| Box::pin(s.ended()));
        tokio::select! {
            () = signal => None,
            (error, _, _) = futures::future::select_all(ends) => Some(error),
        }
    };
    if let Some(error) = &ended {
        tracing::error!(
            error = format!("{error:#}"),
            "a service of the mesh stopped; stopping the others"
        );
    }
    for service in services {
        service.stop().await?;
    }
    ended.map_or(Ok(()), Err)
}

impl Mesh {
    /// Connects rate-limit's store, opens messaging's (migrating it), and starts the services.
    pub async fn start(config: MeshConfig) -> anyhow::Result<Self> {
        let (simulator, simulator_service) = match config.simulator {
            Some((listener, simulator_config)) => {
                let addr = listener.local_addr()?;
                let simulator = Simulator::build(simulator_config);
                (
                    Some(addr),
                    Some(spawn("simulator", |stop| simulator.serve(listener, stop))),
                )
            }
            None => (None, None),
        };
        let (ratelimit, ratelimit_service) = match config.ratelimit {
            Some((listener, ratelimit_config)) => {
                let addr = listener.local_addr()?;
                let service = RateLimit::build(&ratelimit_config)
                    .await
                    .context("starting rate-limit")?;
                let backend = service.backend();
                (
                    Some((addr, backend)),
                    Some(spawn("rate-limit", |stop| service.serve(listener, stop))),
                )
            }
            None => (None, None),
        };
        let messaging_addr = config.messaging_listener.local_addr()?;
        let gateway_addr = config.gateway_listener.local_addr()?;
        let messaging = Messaging::build(&MessagingConfig {
            database_url: config.database_url,
            max_db_connections: config.db_max_connections,
            ingest: config.ingest,
            numbers: config.numbers.clone(),
            send: config.send,
        })
        .await
        .context("starting messaging")?;
        let backend = messaging.store().backend();
        let messaging = spawn("messaging", |stop| {
            messaging.serve(config.messaging_listener, stop)
        });
        let (analytics, analytics_service) = match config.analytics {
            Some((listener, analytics_config)) => {
                let addr = listener.local_addr()?;
                let service = Analytics::build(AnalyticsConfig {
                    messaging_url: format!("http://{messaging_addr}"),
                    ..analytics_config
                })
                .await
                .context("starting analytics")?;
                let backend = service.store().backend();
                (
                    Some((addr, backend)),
                    Some(spawn("analytics", |stop| service.serve(listener, stop))),
                )
            }
            None => (None, None),
        };
        let gateway = Gateway::build(GatewayConfig {
            numbers: config.numbers,
            messaging_url: format!("http://{messaging_addr}"),
            ingest_timeout: config.ingest_timeout,
            analytics_url: analytics.map(|(addr, _)| format!("http://{addr}")),
            operator_api_keys: config.operator_api_keys,
        })?;
        let gateway = spawn("gateway", |stop| {
            gateway.serve(config.gateway_listener, stop)
        });
        Ok(Self {
            gateway_addr,
            messaging_addr,
            backend,
            ratelimit,
            simulator,
            analytics,
            gateway,
            analytics_service,
            messaging,
            ratelimit_service,
            simulator_service,
        })
    }

    /// Stops the gateway, then analytics, messaging, rate-limit and the simulator, each draining
    /// what it has in flight.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.run_until(async {}).await
    }

    /// Serves until `signal`, then stops as [`Mesh::stop`] does. When a service ends by itself
    /// first (an error, a panic), the others are stopped the same way and its error returned:
    /// a mesh is never left running with a part missing.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut services = vec![self.gateway];
        services.extend(self.analytics_service);
        services.push(self.messaging);
        services.extend(self.ratelimit_service);
        services.extend(self.simulator_service);
        run_until(services, signal).await
    }
}

fn spawn<F>(name: &'static str, serve: impl FnOnce(Shutdown) -> F) -> Service
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Shutdown::new();
    Service {
        name,
        task: Some(tokio::spawn(serve(stop.clone()))),
        stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that serves until stopped, and says it was stopped.
    fn waiting(
        name: &'static str,
        stopped: tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Service {
        spawn(name, move |stop| async move {
            stop.cancelled().await;
            let _ = stopped.send(name);
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_service_that_fails_stops_the_others_in_order_and_is_the_error() {
        let (stopped, mut order) = tokio::sync::mpsc::unbounded_channel();
        let failing = spawn("messaging", |_| async {
            anyhow::bail!("the listener failed")
        });
        let services = vec![
            waiting("gateway", stopped.clone()),
            failing,
            waiting("rate-limit", stopped),
        ];
        let error = run_until(services, std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "messaging stopped: the listener failed"
        );
        assert_eq!(order.recv().await, Some("gateway"));
        assert_eq!(order.recv().await, Some("rate-limit"));
    }

    #[tokio::test]
    async fn the_signal_stops_every_service_cleanly() {
        let (stopped, mut order) = tokio::sync::mpsc::unbounded_channel();
        let services = vec![
            waiting("gateway", stopped.clone()),
            waiting("messaging", stopped),
        ];
        run_until(services, async {}).await.unwrap();
        assert_eq!(order.recv().await, Some("gateway"));
        assert_eq!(order.recv().await, Some("messaging"));
    }
}
