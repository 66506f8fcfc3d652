//! simulator: a stand-in for Meta's WhatsApp Cloud API, for development, tests and load tests.
//!
//! Sending, as Meta answers it:
//! - [`send`]: `POST /{version}/{phone_number_id}/messages` with Meta's bearer-token check,
//!   validation ([`validate`]), templates ([`templates`]), sending limits ([`limits`]), and
//!   success and error shapes ([`error`]); the configured latency, error and drop rates
//!   ([`knobs`], [`lost`]).
//! - [`statuses`]: what follows an accepted send: `sent`, `delivered`, `read`, or `failed`
//!   (131026 undeliverable, 131047 outside the 24-hour [`window`]).
//!
//! Telling the business, as Meta does:
//! - [`outbox`]: statuses and user messages due at their time, batched into signed
//!   [`webhook`]s, POSTed a few at once and retried until answered 200.
//! - [`inbound`] (`POST /_sim/inbound`) and [`users`] (`/_sim/users`): users who message the
//!   business, reply and tap buttons.
//!
//! For tests and operators: [`record`] (everything received, `GET /_sim/messages`), [`stats`]
//! (`GET /_sim/stats`), the knobs at `GET/POST /_sim/config`, templates at
//! `GET/PUT /_sim/templates`, and Prometheus metrics at `GET /metrics` (request metrics and
//! `wamesh_simulator_sends_total{result, code}`). Background work (webhooks, users) runs while [`Simulator::serve`]
//! does.
#![forbid(unsafe_code)]

pub mod error;
pub mod inbound;
pub mod knobs;
pub mod limits;
pub mod lost;
pub mod options;
pub mod outbox;
pub mod record;
pub mod send;
pub mod stats;
pub mod statuses;
pub mod templates;
pub mod users;
pub mod validate;
pub mod webhook;
pub mod window;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use wamesh_runtime::metrics::http::HttpMetricsLayer;
use wamesh_runtime::{Secret, Shutdown};

pub use knobs::{Behaviour, Delivery, Knobs, WebhookTarget};
pub use limits::SendLimits;
pub use options::SimulatorOptions;
pub use record::{Received, Recorder};
pub use templates::{Template, TemplateCategory, TemplateDef, TemplateStatus};
pub use webhook::Identity;

/// What the simulator needs to start. `Default` answers at once and sends every status at once,
/// with no webhook target (statuses are then counted as skipped).
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Bearer tokens it accepts (the access tokens of the business numbers it plays Meta for).
    pub access_tokens: Vec<Secret>,
    pub limits: SendLimits,
    /// Where status and message webhooks go (the gateway's `/api/webhooks/whatsapp`).
    pub webhook: Option<WebhookTarget>,
    /// The WABA id and display number the webhooks carry.
    pub identity: Identity,
    pub behaviour: Behaviour,
    pub delivery: Delivery,
    /// Templates known besides Meta's `hello_world`.
    pub templates: Vec<Template>,
    /// wa_ids whose messages are accepted, then fail with 131026.
    pub undeliverable: Vec<String>,
    /// Entries the record keeps before dropping the oldest.
    pub record_limit: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            access_tokens: Vec::new(),
            limits: SendLimits::default(),
            webhook: None,
            identity: Identity::default(),
            behaviour: Behaviour::default(),
            delivery: Delivery::default(),
            templates: Vec::new(),
            undeliverable: Vec::new(),
            record_limit: record::DEFAULT_RECORD_LIMIT,
        }
    }
}

/// State shared by the handlers and the background tasks.
#[derive(Clone)]
pub struct SimState {
    pub tokens: Arc<Vec<Secret>>,
    pub recorder: Recorder,
    pub limiter: Arc<limits::Limiter>,
    pub knobs: Arc<RwLock<Knobs>>,
    pub templates: Arc<templates::Templates>,
    pub windows: Arc<window::Windows>,
    pub outbox: Arc<outbox::Outbox>,
    pub users: Arc<users::Users>,
    pub stats: Arc<stats::Stats>,
    pub identity: Arc<Identity>,
    /// Cancelled when the simulator stops: ends the background tasks.
    pub stop: Shutdown,
}

impl SimState {
    /// The knobs now (a copy: a change at run time applies to the next request).
    pub fn knobs(&self) -> Knobs {
        self.knobs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Queues an update for `at`, within the queue's bound.
    pub fn schedule(&self, at: Instant, update: outbox::Update) -> bool {
        let limit = self
            .knobs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .delivery
            .queue_limit;
        self.outbox.schedule(&self.stats, at, update, limit)
    }
}

/// A built simulator, ready to serve.
pub struct Simulator {
    state: SimState,
}

impl Simulator {
    /// Builds the state; nothing runs until [`Simulator::serve`]. Infallible: the config's
    /// parts were checked when they were made ([`Template::new`], [`SimulatorOptions::config`]).
    pub fn build(config: SimulatorConfig) -> Self {
        let knobs = Knobs {
            behaviour: config.behaviour,
            undeliverable: config
                .undeliverable
                .iter()
                .map(|w| knobs::digits(w))
                .filter(|w| !w.is_empty())
                .collect::<BTreeSet<_>>(),
            webhook: config.webhook,
            delivery: config.delivery,
        };
        Self {
            state: SimState {
                tokens: Arc::new(config.access_tokens),
                recorder: Recorder::new(config.record_limit),
                limiter: Arc::new(limits::Limiter::new(config.limits)),
                knobs: Arc::new(RwLock::new(knobs)),
                templates: Arc::new(templates::Templates::new(config.templates)),
                windows: Arc::default(),
                outbox: Arc::default(),
                users: Arc::default(),
                stats: Arc::default(),
                identity: Arc::new(config.identity),
                stop: Shutdown::new(),
            },
        }
    }

    /// What it has received so far (shared with the running server).
    pub fn recorder(&self) -> Recorder {
        self.state.recorder.clone()
    }

    /// The shared state (knobs, stats, templates), for tests and embedding.
    pub fn state(&self) -> SimState {
        self.state.clone()
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{phone_number_id}/messages", post(send::send))
            .route("/_sim/messages", get(record::list).delete(record::reset))
            .route("/_sim/stats", get(stats::show))
            .route("/_sim/config", get(knobs::show).post(knobs::change))
            .route("/_sim/templates", get(templates::list).put(templates::put))
            .route("/_sim/inbound", post(inbound::send))
            .route(
                "/_sim/users",
                get(users::list).post(users::start).delete(users::stop),
            )
            .merge(wamesh_runtime::metrics::router(
                wamesh_runtime::metrics::install(),
            ))
            .layer(HttpMetricsLayer::new("simulator"))
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(wamesh_telemetry::http_server_span),
            )
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown`, then finishes the requests in flight. Webhooks and simulated
    /// users run meanwhile and stop with it (what is still queued is not sent).
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent("facebookexternalua")
            .build()?;
        let stop = self.state.stop.clone();
        let webhooks = tokio::spawn(outbox::run(self.state.clone(), client, stop.clone()));
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        stop.cancel();
        let _ = webhooks.await;
        served?;
        Ok(())
    }
}
