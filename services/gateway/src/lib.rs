//! gateway: the REST edge of wamesh. Meta's signed webhooks come in here, are checked and
//! handed to messaging over gRPC; operators' health endpoints and their API over analytics
//! live here too.
//!
//! - [`apps`]: the registered business numbers and their app secrets and verify tokens.
//! - [`webhooks`]: `GET`/`POST /api/webhooks/whatsapp` (handshake, signature, hand-off).
//! - [`forward`]: the hand-off to messaging, batching concurrent webhooks into one call.
//! - [`health`]: `/healthz`, `/readyz`, `/api/webhooks/whatsapp/health`.
//! - [`workers`]: `/api/workers/whatsapp`, the outbound queue and every send worker.
//! - [`analytics`]: `/api/analytics/...`, the operator API over analytics' gRPC service.
//! - [`operators`]: the operator API keys those routes require.
//! - [`rfc3339`]: times as the operator API reads and writes them.
//! - [`error`]: the errors (webhooks', the operator API's) and their HTTP codes.
#![forbid(unsafe_code)]

pub mod analytics;
pub mod apps;
pub mod error;
pub mod forward;
pub mod health;
pub mod operators;
pub mod rfc3339;
pub mod webhooks;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tower_http::trace::TraceLayer;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_runtime::metrics::http::HttpMetricsLayer;
use wamesh_runtime::{BusinessNumber, Secret, Shutdown};
use wamesh_telemetry::GrpcTraceInterceptor;

pub use apps::Apps;
pub use operators::OperatorKeys;

/// A messaging client that carries the caller's trace context.
pub type Messaging =
    MessagingClient<tonic::service::interceptor::InterceptedService<Channel, GrpcTraceInterceptor>>;

/// What the gateway needs to start.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub numbers: Vec<BusinessNumber>,
    /// messaging's gRPC address, e.g. `http://127.0.0.1:50051`.
    pub messaging_url: String,
    /// How long a webhook may wait for messaging to store it before the gateway answers 503.
    pub ingest_timeout: Duration,
    /// analytics' gRPC address, e.g. `http://127.0.0.1:50053`; `None`: the `/api/analytics`
    /// routes answer 503 (not configured).
    pub analytics_url: Option<String>,
    /// The keys operators present (`Authorization: Bearer <key>` or `X-API-Key: <key>`) to use
    /// the operator API. None (or only empty ones): every operator request is refused.
    pub operator_api_keys: Vec<Secret>,
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    pub apps: Arc<Apps>,
    pub messaging: Messaging,
    pub forwarder: forward::Forwarder,
    pub ingest_timeout: Duration,
    /// `None` when no analytics URL is configured.
    pub analytics: Option<analytics::Analytics>,
    pub operator_keys: Arc<OperatorKeys>,
}

/// A built gateway: its routes and state, ready to serve.
pub struct Gateway {
    state: AppState,
}

impl Gateway {
    /// Builds the gateway. messaging and analytics are dialled lazily: the gateway starts (and
    /// answers 503 to webhooks, or to the analytics routes) while they are still down.
    pub fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let channel = Endpoint::from_shared(config.messaging_url.clone())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect_lazy();
        let messaging = MessagingClient::with_interceptor(channel, GrpcTraceInterceptor)
            .max_decoding_message_size(16 * 1024 * 1024);
        let analytics = match &config.analytics_url {
            Some(url) => Some(analytics::connect(url).map_err(|e| {
                anyhow::anyhow!("WAMESH_ANALYTICS_URL: {url:?} is not a gRPC address ({e})")
            })?),
            None => {
                tracing::info!("no analytics URL configured: /api/analytics answers 503");
                None
            }
        };
        let operator_keys = OperatorKeys::new(&config.operator_api_keys);
        if operator_keys.is_empty() {
            tracing::warn!(
                "no operator API key configured: the operator API (/api/analytics) refuses every request (set WAMESH_OPERATOR_API_KEYS)"
            );
        }
        Ok(Self {
            state: AppState {
                apps: Arc::new(Apps::new(config.numbers)),
                forwarder: forward::Forwarder::start(messaging.clone()),
                messaging,
                ingest_timeout: config.ingest_timeout,
                analytics,
                operator_keys: Arc::new(operator_keys),
            },
        })
    }

    /// The registry of business numbers, to add numbers at run time.
    pub fn apps(&self) -> Arc<Apps> {
        self.state.apps.clone()
    }

    /// Every route of the gateway.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(webhooks::router())
            .merge(health::router())
            .merge(workers::router())
            .merge(analytics::router(self.state.operator_keys.clone()))
            .merge(wamesh_runtime::metrics::router(
                wamesh_runtime::metrics::install(),
            ))
            .layer(DefaultBodyLimit::max(wamesh_whatsapp::MAX_WEBHOOK_BYTES))
            .layer(HttpMetricsLayer::new("gateway"))
            .layer(TraceLayer::new_for_http().make_span_with(wamesh_telemetry::http_server_span))
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown`, then finishes the requests in flight.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        // TCP_NODELAY: small responses must not wait for Nagle and delayed ACKs.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "could not set TCP_NODELAY");
            }
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        Ok(())
    }
}
