//! The mesh in one process: rate-limit, messaging and the gateway on listeners the caller binds
//! (port 0 in tests), stopped in the right order: the gateway first (it stops taking webhooks
//! and finishes those in flight, which still need messaging), then messaging (which drains
//! group commit), then rate-limit (which messaging's senders ask).
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_messaging::{IngestConfig, Messaging, MessagingConfig};
use wamesh_ratelimit::{RateLimit, RateLimitConfig};
use wamesh_runtime::shutdown::DRAIN_TIMEOUT;
use wamesh_runtime::{BusinessNumber, Shutdown};

/// What to start.
pub struct MeshConfig {
    pub gateway_listener: TcpListener,
    pub messaging_listener: TcpListener,
    pub database_url: String,
    pub db_max_connections: u32,
    pub ingest: IngestConfig,
    pub numbers: Vec<BusinessNumber>,
    pub ingest_timeout: Duration,
    /// The rate-limit service, when this mesh runs one.
    pub ratelimit: Option<(TcpListener, RateLimitConfig)>,
}

/// A running mesh.
pub struct Mesh {
    pub gateway_addr: SocketAddr,
    pub messaging_addr: SocketAddr,
    /// The storage backend messaging uses (`"postgres"` or `"sqlite"`).
    pub backend: &'static str,
    /// Where rate-limit listens, and its backend (`"redis"` or `"memory"`).
    pub ratelimit: Option<(SocketAddr, &'static str)>,
    gateway: Service,
    messaging: Service,
    ratelimit_service: Option<Service>,
}

struct Service {
    stop: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Service {
    async fn stop(self, name: &str) -> anyhow::Result<()> {
        self.stop.cancel();
        match tokio::time::timeout(DRAIN_TIMEOUT, self.task).await {
            Ok(joined) => joined.with_context(|| format!("{name} panicked"))?,
            Err(_) => anyhow::bail!("{name} did not drain within {DRAIN_TIMEOUT:?}"),
        }
    }
}

impl Mesh {
    /// Connects rate-limit's store, opens messaging's (migrating it), and starts the services.
    pub async fn start(config: MeshConfig) -> anyhow::Result<Self> {
        let (ratelimit, ratelimit_service) = match config.ratelimit {
            Some((listener, ratelimit_config)) => {
                let addr = listener.local_addr()?;
                let service = RateLimit::build(&ratelimit_config)
                    .await
                    .context("starting rate-limit")?;
                let backend = service.backend();
                (
                    Some((addr, backend)),
                    Some(spawn(|stop| service.serve(listener, stop))),
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
        })
        .await
        .context("starting messaging")?;
        let backend = messaging.store().backend();
        let messaging = spawn(|stop| messaging.serve(config.messaging_listener, stop));
        let gateway = Gateway::build(GatewayConfig {
            numbers: config.numbers,
            messaging_url: format!("http://{messaging_addr}"),
            ingest_timeout: config.ingest_timeout,
        })?;
        let gateway = spawn(|stop| gateway.serve(config.gateway_listener, stop));
        Ok(Self {
            gateway_addr,
            messaging_addr,
            backend,
            ratelimit,
            gateway,
            messaging,
            ratelimit_service,
        })
    }

    /// Stops the gateway, then messaging, then rate-limit, each draining what it has in flight.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.gateway.stop("gateway").await?;
        self.messaging.stop("messaging").await?;
        match self.ratelimit_service {
            Some(service) => service.stop("rate-limit").await,
            None => Ok(()),
        }
    }
}

fn spawn<F>(serve: impl FnOnce(Shutdown) -> F) -> Service
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Shutdown::new();
    Service {
        task: tokio::spawn(serve(stop.clone())),
        stop,
    }
}
