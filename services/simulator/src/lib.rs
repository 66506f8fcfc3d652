//! simulator: a stand-in for Meta's Graph API, for development, tests and load tests.
//!
//! - [`send`]: `POST /{version}/{phone_number_id}/messages` with Meta's bearer-token check,
//!   validation, and success and error shapes.
//! - [`validate`]: Meta's limits on what a message may hold.
//! - [`record`]: everything received, accepted or refused, exposed at `GET /_sim/messages`
//!   so tests assert exactly what Meta would have seen, duplicates included.
//!
//! - [`limits`]: per-number throughput (130429) and per-recipient pair rate (131056).
//!
//! Still to come (issue 4): the 24-hour window, templates,
//! status webhooks, simulated users, and configurable latency, error and drop rates.
#![forbid(unsafe_code)]

pub mod error;
pub mod limits;
pub mod record;
pub mod send;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use wamesh_runtime::{Secret, Shutdown};

pub use limits::SendLimits;
pub use record::{Received, Recorder};

/// What the simulator needs to start.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Bearer tokens it accepts (the access tokens of the business numbers it plays Meta for).
    pub access_tokens: Vec<Secret>,
    pub limits: SendLimits,
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct SimState {
    pub tokens: Arc<Vec<Secret>>,
    pub recorder: Recorder,
    pub limiter: Arc<limits::Limiter>,
}

/// A built simulator, ready to serve.
pub struct Simulator {
    state: SimState,
}

impl Simulator {
    pub fn build(config: SimulatorConfig) -> Self {
        Self {
            state: SimState {
                tokens: Arc::new(config.access_tokens),
                recorder: Recorder::default(),
                limiter: Arc::new(limits::Limiter::new(config.limits)),
            },
        }
    }

    /// What it has received so far (shared with the running server).
    pub fn recorder(&self) -> Recorder {
        self.state.recorder.clone()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{phone_number_id}/messages", post(send::send))
            .route("/_sim/messages", get(record::list))
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(wamesh_telemetry::http_server_span),
            )
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown`, then finishes the requests in flight.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await?;
        Ok(())
    }
}
