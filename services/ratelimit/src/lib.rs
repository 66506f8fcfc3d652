//! rate-limit: WhatsApp's limits as buckets shared by every messaging replica, served as
//! `wamesh.ratelimit.v1.RateLimiter` over gRPC.
//!
//! - [`model`]: policies, buckets and decisions, and the token bucket arithmetic;
//! - [`policy`]: which policy applies to a key (WhatsApp's defaults, overridable at run time);
//! - [`backend`]: Redis (production) and memory (embedded), held to one conformance suite;
//! - [`limiter`]: request checks, policy resolution and the degraded modes;
//! - [`grpc`]: the thin gRPC adapter.
#![forbid(unsafe_code)]

pub mod backend;
pub mod grpc;
pub mod limiter;
pub mod model;
pub mod policy;

use std::sync::Arc;

use tokio::net::TcpListener;
use wamesh_proto::ratelimit::v1::rate_limiter_server::RateLimiterServer;
use wamesh_runtime::Shutdown;

use backend::Backend;
use backend::memory::{MemoryBackend, SystemClock};
use backend::redis::RedisBackend;
pub use limiter::{DegradedMode, LimiterConfig};

/// The fully qualified gRPC service name, for health checks.
pub const SERVICE_NAME: &str = "wamesh.ratelimit.v1.RateLimiter";

/// What rate-limit needs to start.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// `redis://...`; `None` keeps the buckets in this process (the embedded default: one
    /// replica only, and nothing survives a restart).
    pub redis_url: Option<String>,
    /// Namespace of every Redis key.
    pub redis_prefix: String,
    pub limiter: LimiterConfig,
}

/// A built rate-limit service: backend connected, policies loaded.
pub struct RateLimit {
    limiter: Arc<limiter::Limiter>,
}

impl RateLimit {
    pub async fn build(config: &RateLimitConfig) -> anyhow::Result<Self> {
        let backend: Arc<dyn Backend> = match &config.redis_url {
            Some(url) => Arc::new(
                RedisBackend::connect(url, &config.redis_prefix)
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to Redis: {e}"))?,
            ),
            None => Arc::new(MemoryBackend::new(Box::new(SystemClock::default()))),
        };
        let limiter = limiter::Limiter::start(backend, config.limiter)
            .await
            .map_err(|e| anyhow::anyhow!("starting the limiter: {e}"))?;
        Ok(Self { limiter })
    }

    /// `redis` or `memory`.
    pub fn backend(&self) -> &'static str {
        self.limiter.backend_name()
    }

    /// What readiness reports: whether decisions go to the backend now, or follow the
    /// degraded mode. Either way the service answers, so it stays ready.
    pub fn readiness(&self) -> impl Fn() -> String + Clone + Send + Sync + 'static {
        let limiter = Arc::downgrade(&self.limiter);
        move || match limiter.upgrade() {
            Some(l) if l.backend_up() => format!("ready: buckets in {}", l.backend_name()),
            Some(l) => format!(
                "ready, degraded: {} unreachable, deciding {}",
                l.backend_name(),
                l.config().degraded.as_str()
            ),
            None => "stopped".to_owned(),
        }
    }

    /// Serves gRPC on `listener` until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let server = RateLimiterServer::new(grpc::RateLimitService::new(self.limiter));
        let routes = tonic::service::Routes::new(server);
        wamesh_runtime::grpc::serve("ratelimit", routes, &[SERVICE_NAME], listener, shutdown).await
    }
}
