//! messaging: durable webhook ingest and the message store, served as
//! `wamesh.messaging.v1.Messaging` over gRPC.
//!
//! - [`store`]: the storage trait with its Postgres and SQLite backends (and their migrations
//!   under `migrations/`); what a batch writes is planned once for both.
//! - [`ingest`]: group commit, so concurrent ingests share transactions.
//! - [`send`]: `SendMessage` into the durable outbound queue, the template registry's fallback
//!   chains, the 24-hour [`window`], and the send workers that call the Graph API.
//! - [`grpc`]: the thin gRPC adapter; [`error`]: the one error type and its gRPC codes.
//! - [`metrics`]: messages, statuses and sends counted, the queue and the pool as gauges.
#![forbid(unsafe_code)]

pub mod error;
pub mod grpc;
pub mod ingest;
pub mod metrics;
pub mod send;
pub mod store;
pub mod trace;
pub mod window;

use std::sync::Arc;

use tokio::net::TcpListener;
use wamesh_proto::messaging::v1::events_server::EventsServer;
use wamesh_proto::messaging::v1::messaging_server::MessagingServer;
use wamesh_runtime::{BusinessNumber, Shutdown};

pub use ingest::IngestConfig;
pub use send::SendConfig;
use send::Sending;
use store::Store;

/// The largest gRPC request messaging decodes: a batch of webhooks the gateway splits at 12 MB
/// of bodies, or one webhook of up to 3 MB, with room for framing.
pub const MAX_CALL_BYTES: usize = 16 * 1024 * 1024;

/// The fully qualified gRPC service names, for health checks.
pub const SERVICE_NAME: &str = "wamesh.messaging.v1.Messaging";
pub const EVENTS_SERVICE_NAME: &str = "wamesh.messaging.v1.Events";

/// How often a caught-up event subscriber looks for other replicas' commits.
const EVENTS_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// What messaging needs to start.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// `postgres://...` (production) or `sqlite://path?mode=rwc` (embedded).
    pub database_url: String,
    pub max_db_connections: u32,
    pub ingest: IngestConfig,
    /// The numbers it sends for (access tokens, WABA ids, throughput and tier).
    pub numbers: Vec<BusinessNumber>,
    pub send: SendConfig,
}

/// A built messaging service: store opened and migrated, committers running, sending ready.
pub struct Messaging {
    store: Arc<dyn Store>,
    service: grpc::MessagingService,
    sending: Sending,
    signal: grpc::EventSignal,
}

impl Messaging {
    /// Opens the store (running migrations), starts group commit and builds sending's clients.
    pub async fn build(config: &MessagingConfig) -> anyhow::Result<Self> {
        let store = store::open(&config.database_url, config.max_db_connections).await?;
        Self::with_store(store, config)
    }

    /// Builds around an already opened store.
    pub fn with_store(store: Arc<dyn Store>, config: &MessagingConfig) -> anyhow::Result<Self> {
        let mut ingest = config.ingest;
        if store.backend() == "sqlite" {
            ingest.committers = 1; // one writer; more would only wait on each other
        }
        let signal = grpc::EventSignal::default();
        let ingestor = ingest::Ingestor::start(store.clone(), ingest, signal.clone());
        let sending = Sending::new(
            store.clone(),
            config.numbers.clone(),
            config.send.clone(),
            signal.clone(),
        )?;
        Ok(Self {
            service: grpc::MessagingService::new(
                store.clone(),
                ingestor,
                sending.outbox(),
                sending.board(),
            ),
            store,
            sending,
            signal,
        })
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves gRPC (`Messaging` and `Events`) on `listener` and runs the send workers until `shutdown`, then drains
    /// in-flight calls, the group-commit queue and the claims the workers hold.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let server = MessagingServer::new(self.service).max_decoding_message_size(MAX_CALL_BYTES);
        let events =
            grpc::EventsService::new(self.store, self.signal, EVENTS_POLL, shutdown.clone());
        let routes = tonic::service::Routes::new(server).add_service(EventsServer::new(events));
        let names = [SERVICE_NAME, EVENTS_SERVICE_NAME];
        let grpc =
            wamesh_runtime::grpc::serve("messaging", routes, &names, listener, shutdown.clone());
        let (served, ()) = tokio::join!(grpc, self.sending.run(shutdown));
        served
    }
}
