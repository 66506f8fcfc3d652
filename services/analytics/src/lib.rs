//! analytics: messaging's event log counted exactly once into hourly and daily rollups, served
//! as `wamesh.analytics.v1.Analytics` over gRPC.
//!
//! - [`consumer`]: follows `Events/Subscribe` from the stored cursor and commits each batch's
//!   counts together with the cursor that moves past it;
//! - [`event`], [`facts`], [`apply`]: what an event changes (a message's fact, a user's turns and
//!   sessions) and the rollup changes that follow, without I/O;
//! - [`rollup`]: the rollups' keys and counters; [`sketch`]: mergeable quantile and
//!   distinct-count sketches stored with them;
//! - [`store`]: the storage trait, its Postgres and SQLite backends (migrations under
//!   `migrations/`), one conformance suite for both;
//! - [`query`]: overview, time series and template performance from the rollups; [`export`]:
//!   rollups, templates and message facts as CSV or JSON lines, streamed;
//! - [`live`]: the last minutes in memory, for alerts and [`health`] (`GetSystemHealth`);
//!   [`scrape`]: the services' `/metrics` read for their error rates in the same window;
//! - [`alerts`]: error rate, response time and rate-limit usage judged every second with
//!   hysteresis, fired and resolved into the store and streamed;
//! - [`grpc`]: the thin gRPC adapter; [`error`]: the one error type.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod apply;
pub mod consumer;
pub mod error;
pub mod event;
pub mod export;
pub mod facts;
pub mod grpc;
pub mod health;
pub mod live;
pub mod query;
pub mod rollup;
pub mod scrape;
pub mod sketch;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use wamesh_proto::analytics::v1::analytics_server::AnalyticsServer;
use wamesh_proto::messaging::v1::events_client::EventsClient;
use wamesh_runtime::Shutdown;
use wamesh_telemetry::GrpcTraceInterceptor;

use alerts::{AlertConfig, Evaluator, Hub, RateLimitProbe};
use consumer::{Consumer, ConsumerConfig, Progress};
use live::Live;
use rollup::{Buckets, DAY_MS};
use store::Store;

/// The fully qualified gRPC service name, for health checks.
pub const SERVICE_NAME: &str = "wamesh.analytics.v1.Analytics";

/// How far back the live window of alerts and health reaches by default
/// ([`AlertConfig::window`]).
pub const LIVE_WINDOW_MS: i64 = 5 * 60 * 1000;

/// What analytics needs to start.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    /// `postgres://...` (production) or `sqlite://path?mode=rwc` (embedded).
    pub database_url: String,
    pub max_db_connections: u32,
    /// messaging's gRPC address, whose event log is counted.
    pub messaging_url: String,
    /// The width of an hour bucket (`ANALYTICS_AGGREGATION_INTERVAL`, ms): it must divide a day.
    pub aggregation_interval_ms: i64,
    /// Rollups and facts older than this many days are purged (`ANALYTICS_RETENTION_DAYS`).
    pub retention_days: u32,
    pub consumer: ConsumerConfig,
    /// Thresholds, evaluation interval, live window and rate-limit's address of the alerts.
    pub alerts: AlertConfig,
    /// The services' Prometheus `/metrics` URLs (`WAMESH_METRICS_URLS`) whose request counters
    /// give `GetSystemHealth` its error rates per service; empty: none are read. `wamesh dev`
    /// serves every service's counters on the gateway's `/metrics`.
    pub metrics_urls: Vec<String>,
}

impl AnalyticsConfig {
    /// Checks what cannot be checked by its type.
    pub fn validate(&self) -> anyhow::Result<()> {
        let interval = self.aggregation_interval_ms;
        if interval < 60_000 || DAY_MS % interval != 0 {
            anyhow::bail!(
                "ANALYTICS_AGGREGATION_INTERVAL: {interval} ms must be at least a minute and divide a day (e.g. 3600000)"
            );
        }
        if self.retention_days == 0 {
            anyhow::bail!("ANALYTICS_RETENTION_DAYS: must be at least 1");
        }
        self.alerts.validate()?;
        Ok(())
    }
}

/// A built analytics service: store opened and migrated, ready to serve and consume.
pub struct Analytics {
    store: Arc<dyn Store>,
    config: AnalyticsConfig,
    progress: Arc<Progress>,
    live: Live,
    alerts: Hub,
    /// How often `metrics_urls` are read ([`scrape::DEFAULT_INTERVAL`]; tests shorten it).
    scrape_interval: Duration,
}

impl Analytics {
    /// Validates the config, opens the store (running migrations) and reads the alerts it
    /// holds as firing.
    pub async fn build(config: AnalyticsConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let store = store::open(&config.database_url, config.max_db_connections).await?;
        let alerts = Hub::new(store.firing_alerts().await?);
        Ok(Self {
            store,
            live: Live::new(config.alerts.window_ms()),
            config,
            progress: Arc::default(),
            alerts,
            scrape_interval: scrape::DEFAULT_INTERVAL,
        })
    }

    /// Reads `metrics_urls` every `interval` instead of every [`scrape::DEFAULT_INTERVAL`].
    pub fn scrape_every(mut self, interval: Duration) -> Self {
        self.scrape_interval = interval;
        self
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves gRPC on `listener` and runs the consumer, the alert evaluator, the `/metrics`
    /// scraper and the retention purge until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        let channel = Endpoint::from_shared(self.config.messaging_url.clone())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect_lazy();
        let consumer = Consumer {
            store: self.store.clone(),
            events: EventsClient::with_interceptor(channel, GrpcTraceInterceptor),
            buckets: Buckets {
                interval_ms: self.config.aggregation_interval_ms,
            },
            config: self.config.consumer,
            progress: self.progress.clone(),
            live: self.live.clone(),
        };
        let probe = match &self.config.alerts.ratelimit_url {
            Some(url) => Some(RateLimitProbe::connect_lazy(url)?),
            None => None,
        };
        let scrapes = scrape::Scrapes::new(self.config.alerts.window_ms());
        let scraper = scrape::Scraper::new(
            self.config.metrics_urls.clone(),
            self.scrape_interval,
            scrapes.clone(),
        );
        let health = health::Health::new(
            &self.config.messaging_url,
            probe.clone(),
            self.config.alerts.rate_limit_warning,
            self.live.clone(),
            scrapes,
        )?;
        let evaluator = Evaluator::new(
            self.store.clone(),
            self.alerts.clone(),
            self.live.clone(),
            self.config.alerts.clone(),
            probe,
            Buckets {
                interval_ms: self.config.aggregation_interval_ms,
            },
        );
        let service = grpc::AnalyticsService::new(
            self.store.clone(),
            self.progress.clone(),
            self.config.aggregation_interval_ms,
            self.alerts.clone(),
            health,
        );
        let routes = tonic::service::Routes::new(AnalyticsServer::new(service));
        let grpc = wamesh_runtime::grpc::serve(
            "analytics",
            routes,
            &[SERVICE_NAME],
            listener,
            shutdown.clone(),
        );
        let retention = retention(
            self.store.clone(),
            self.config.retention_days,
            shutdown.clone(),
        );
        let evaluating = evaluator.run(shutdown.clone());
        let scraping = scraper.run(shutdown.clone());
        let (served, (), (), (), ()) = tokio::join!(
            grpc,
            consumer.run(shutdown),
            evaluating,
            scraping,
            retention
        );
        served
    }
}

/// Purges what is older than the retention, at start and every hour: buckets and facts before
/// the start of the day `retention_days` ago (so a day is kept or purged whole).
async fn retention(store: Arc<dyn Store>, retention_days: u32, shutdown: Shutdown) {
    loop {
        let before = retention_cutoff(now_ms(), retention_days);
        match store.purge(before).await {
            Ok(purged) if purged.rollups + purged.facts + purged.users > 0 => {
                tracing::info!(
                    rollups = purged.rollups,
                    facts = purged.facts,
                    users = purged.users,
                    before_ms = before,
                    "purged what is past the retention"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention purge failed; trying again later"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// The first moment kept: the start of the day `retention_days` before `now_ms`'s day.
pub fn retention_cutoff(now_ms: i64, retention_days: u32) -> i64 {
    (now_ms.div_euclid(DAY_MS) - i64::from(retention_days)) * DAY_MS
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
