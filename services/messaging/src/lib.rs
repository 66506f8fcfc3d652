//! messaging: durable webhook ingest and the message store, served as
//! `wamesh.messaging.v1.Messaging` over gRPC.
//!
//! - [`store`]: the storage trait with its Postgres and SQLite backends (and their migrations
//!   under `migrations/`); what a batch writes is planned once for both.
//! - [`ingest`]: group commit, so concurrent ingests share transactions.
//! - [`grpc`]: the thin gRPC adapter; [`error`]: the one error type and its gRPC codes.
#![forbid(unsafe_code)]

pub mod error;
pub mod grpc;
pub mod ingest;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use wamesh_proto::messaging::v1::messaging_server::MessagingServer;
use wamesh_runtime::Shutdown;

pub use ingest::IngestConfig;
use store::{Store, StoreError};

/// The largest gRPC request messaging decodes: a batch of webhooks the gateway splits at 12 MB
/// of bodies, or one webhook of up to 3 MB, with room for framing.
pub const MAX_CALL_BYTES: usize = 16 * 1024 * 1024;

/// The fully qualified gRPC service name, for health checks.
pub const SERVICE_NAME: &str = "wamesh.messaging.v1.Messaging";

/// What messaging needs to start.
#[derive(Debug, Clone)]
pub struct MessagingConfig {
    /// `postgres://...` (production) or `sqlite://path?mode=rwc` (embedded).
    pub database_url: String,
    pub max_db_connections: u32,
    pub ingest: IngestConfig,
}

/// A built messaging service: store opened and migrated, committers running.
pub struct Messaging {
    store: Arc<dyn Store>,
    service: grpc::MessagingService,
}

impl Messaging {
    /// Opens the store (running migrations) and starts group commit.
    pub async fn build(config: &MessagingConfig) -> Result<Self, StoreError> {
        let store = store::open(&config.database_url, config.max_db_connections).await?;
        Ok(Self::with_store(store, config.ingest))
    }

    /// Builds around an already opened store.
    pub fn with_store(store: Arc<dyn Store>, mut ingest: IngestConfig) -> Self {
        if store.backend() == "sqlite" {
            ingest.committers = 1; // one writer; more would only wait on each other
        }
        let ingestor = ingest::Ingestor::start(store.clone(), ingest);
        Self {
            service: grpc::MessagingService::new(store.clone(), ingestor),
            store,
        }
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves gRPC on `listener` until `shutdown`, then drains in-flight calls and the
    /// group-commit queue.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let server = MessagingServer::new(self.service).max_decoding_message_size(MAX_CALL_BYTES);
        let routes = tonic::service::Routes::new(server);
        wamesh_runtime::grpc::serve(routes, &[SERVICE_NAME], listener, shutdown).await
    }
}
