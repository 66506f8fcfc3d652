//! The command line. Every option can also come from the environment variable it names, so the
//! same binary is configured by flags on a laptop and by env in Kubernetes.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
pub use wamesh_runtime::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "wamesh",
    version,
    about = "WhatsApp Business messaging as a gRPC service mesh"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole mesh in one process (SQLite under ./data unless DATABASE_URL is set).
    Dev(Box<DevArgs>),
    /// Run the REST gateway (webhooks, health, metrics).
    Gateway(GatewayArgs),
    /// Run the messaging service (gRPC; metrics and health on --metrics-addr).
    Messaging(Box<MessagingArgs>),
    /// Run the rate-limit service (gRPC; metrics and health on --metrics-addr).
    Ratelimit(RatelimitArgs),
    /// Run the analytics service: counts messaging's event log into rollups (gRPC; metrics and
    /// health on --metrics-addr).
    Analytics(Box<AnalyticsArgs>),
    /// Run the simulator of Meta's Graph API (`POST /{version}/{phone_number_id}/messages`,
    /// everything received at `GET /_sim/messages`).
    Simulator(SimulatorArgs),
    /// Create or update messaging's database schema, then exit.
    Migrate(StoreArgs),
    /// Send one message through messaging (`wamesh dev`'s by default) and, with --watch,
    /// follow it to read.
    Send(crate::send::SendCommand),
    /// Measure the mesh against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// An OTLP trace receiver that counts and discards spans: the export target for measuring
    /// what tracing costs (`OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 wamesh bench ...`).
    OtlpSink(crate::otlp_sink::SinkArgs),
}

impl Command {
    /// The service name telemetry reports.
    pub fn service_name(&self) -> &'static str {
        match self {
            Self::Dev(_) => "wamesh-dev",
            Self::Gateway(_) => "gateway",
            Self::Messaging(_) => "messaging",
            Self::Ratelimit(_) => "ratelimit",
            Self::Analytics(_) => "analytics",
            Self::Simulator(_) => "simulator",
            Self::Migrate(_) => "wamesh-migrate",
            Self::Send(_) => "wamesh-send",
            Self::Bench(_) => "wamesh-bench",
            Self::OtlpSink(_) => "wamesh-otlp-sink",
        }
    }
}

/// The default business number and app (more come from `WAMESH_NUMBERS_FILE`).
#[derive(Debug, Clone, Args)]
pub struct NumberArgs {
    /// The Meta app secret that signs webhooks.
    #[arg(long, env = "WAMESH_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// The token Meta's verify handshake must present.
    #[arg(long, env = "WAMESH_VERIFY_TOKEN", hide_env_values = true)]
    pub verify_token: Option<String>,
    /// The Graph API access token (used for sending).
    #[arg(long, env = "WAMESH_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// Restrict the default to one phone number id (unset: it serves any number).
    #[arg(long, env = "WAMESH_PHONE_NUMBER_ID")]
    pub phone_number_id: Option<String>,
    #[arg(long, env = "WAMESH_WABA_ID")]
    pub waba_id: Option<String>,
    /// Meta's throughput level of the default number, messages a second (80, 1000 once
    /// upgraded, 20 shared with the Business app); unset: rate-limit's policy.
    #[arg(long, env = "WAMESH_THROUGHPUT")]
    pub throughput: Option<f64>,
    /// Meta's messaging-limit tier of the default number: users reached outside the window per
    /// 24 h (250, 2000, 10000, 100000; 0 unlimited); unset: rate-limit's policy.
    #[arg(long, env = "WAMESH_MESSAGING_TIER")]
    pub tier: Option<u64>,
    /// A JSON file of more business numbers: [{phone_number_id, waba_id, app_secret, verify_token, access_token}].
    #[arg(long, env = "WAMESH_NUMBERS_FILE")]
    pub numbers_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// messaging's database: postgres://... or sqlite://path?mode=rwc.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://data/messaging.db?mode=rwc"
    )]
    pub database_url: String,
    #[arg(long, env = "WAMESH_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Transactions group commit may have in flight at once (SQLite always uses 1).
    #[arg(long, env = "WAMESH_INGEST_COMMITTERS", default_value_t = 2)]
    pub ingest_committers: usize,
    /// Webhooks in one transaction at most.
    #[arg(long, env = "WAMESH_INGEST_MAX_BATCH", default_value_t = 256)]
    pub ingest_max_batch: usize,
}

/// How messaging sends: its workers, the Graph API and rate-limit.
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// Send workers in this replica.
    #[arg(long, env = "WAMESH_SEND_WORKERS", default_value_t = 2)]
    pub send_workers: usize,
    /// Messages a worker claims at once.
    #[arg(long, env = "WAMESH_SEND_BATCH", default_value_t = 64)]
    pub send_batch: u32,
    /// Attempts before a message that keeps meeting transient errors is dead.
    #[arg(long, env = "WAMESH_SEND_MAX_ATTEMPTS", default_value_t = 10)]
    pub send_max_attempts: u32,
    /// The first retry's delay; it doubles with each attempt (with jitter).
    #[arg(long, env = "WAMESH_SEND_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub send_retry_base: Duration,
    /// No retry waits longer than this.
    #[arg(long, env = "WAMESH_SEND_RETRY_MAX", default_value = "10m", value_parser = parse_duration)]
    pub send_retry_max: Duration,
    /// How long a send whose outcome is unknown waits for a status webhook proving Meta has
    /// it, before it is sent again.
    #[arg(long, env = "WAMESH_SEND_EVIDENCE_WINDOW", default_value = "10m", value_parser = parse_duration)]
    pub send_evidence_window: Duration,
    /// How often idle workers look for due messages queued by other replicas or coming due.
    #[arg(long, env = "WAMESH_SEND_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub send_poll_interval: Duration,
    /// One Graph API call at most; past it the send's outcome is in doubt.
    #[arg(long, env = "WAMESH_GRAPH_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub graph_timeout: Duration,
}

/// Where messaging sends: Meta's Graph API, through the rate-limit service.
#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Meta's Graph API (or the simulator's address).
    #[arg(
        long,
        env = "WAMESH_GRAPH_API_URL",
        default_value = "https://graph.facebook.com"
    )]
    pub graph_api_url: String,
    #[arg(long, env = "WAMESH_GRAPH_API_VERSION", default_value = "v23.0")]
    pub graph_api_version: String,
    /// The rate-limit service every send asks first.
    #[arg(
        long,
        env = "WAMESH_RATELIMIT_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub ratelimit_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    #[arg(long, env = "WAMESH_GATEWAY_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// messaging's gRPC address.
    #[arg(
        long,
        env = "WAMESH_MESSAGING_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub messaging_url: String,
    /// How long a webhook may wait for messaging before the gateway answers 503.
    #[arg(long, env = "WAMESH_INGEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ingest_timeout: Duration,
    /// analytics' gRPC address, for the operators' `/api/analytics/*` (unset: they answer 503).
    #[arg(long, env = "WAMESH_ANALYTICS_URL")]
    pub analytics_url: Option<String>,
    #[command(flatten)]
    pub operators: OperatorArgs,
    #[command(flatten)]
    pub number: NumberArgs,
}

/// Who may call the operators' REST API.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// API keys operators call `/api/analytics/*` with (`Authorization: Bearer <key>` or
    /// `X-API-Key`), comma-separated; none: every operator call is refused (401).
    #[arg(
        long = "operator-api-key",
        env = "WAMESH_OPERATOR_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub operator_api_keys: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct MessagingArgs {
    #[arg(long, env = "WAMESH_MESSAGING_ADDR", default_value = "0.0.0.0:50051")]
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "WAMESH_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub send: SendArgs,
    #[command(flatten)]
    pub upstream: UpstreamArgs,
    /// The numbers it sends for: their access tokens, WABA ids, throughput and tier.
    #[command(flatten)]
    pub number: NumberArgs,
}

/// The rate-limit service's store and its behaviour when Redis cannot answer.
#[derive(Debug, Clone, Args)]
pub struct LimiterArgs {
    /// Redis for the buckets (shared by every replica); in-memory buckets when unset.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Namespace of every rate-limit key in Redis.
    #[arg(long, env = "WAMESH_RATELIMIT_PREFIX", default_value = "wamesh:rl:")]
    pub redis_prefix: String,
    /// When Redis is down or slow: `closed` denies (the safe default for sends), `open` allows
    /// uncounted, `local` counts in this process at each limit divided by --replicas.
    #[arg(
        long,
        env = "WAMESH_RATELIMIT_DEGRADED",
        value_enum,
        default_value = "closed"
    )]
    pub degraded: wamesh_ratelimit::DegradedMode,
    /// Replicas of the rate-limit service (divides the limits in `local` mode).
    #[arg(long, env = "WAMESH_RATELIMIT_REPLICAS", default_value_t = 1)]
    pub replicas: u32,
    /// A Redis call slower than this counts as a failure.
    #[arg(long, env = "WAMESH_RATELIMIT_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Usage ratio from which GetUsage flags a bucket.
    #[arg(long, env = "MONITORING_RATE_LIMIT_WARNING", default_value_t = 0.8)]
    pub warning: f64,
}

#[derive(Debug, Clone, Args)]
pub struct RatelimitArgs {
    #[arg(long, env = "WAMESH_RATELIMIT_ADDR", default_value = "0.0.0.0:50052")]
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "WAMESH_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    #[command(flatten)]
    pub limiter: LimiterArgs,
}

/// How analytics counts (shared by `wamesh analytics` and `wamesh dev`).
#[derive(Debug, Clone, Args)]
pub struct RollupArgs {
    /// The width of the finest rollup bucket, ms (it must divide a day).
    #[arg(
        long,
        env = "ANALYTICS_AGGREGATION_INTERVAL",
        default_value_t = 3_600_000
    )]
    pub aggregation_interval: i64,
    /// Rollups and message facts older than this many days are purged.
    #[arg(long, env = "ANALYTICS_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,
    /// Failed / attempted sends over the live window above which an alert fires.
    #[arg(long, env = "MONITORING_ERROR_RATE_THRESHOLD", default_value_t = 0.05)]
    pub error_rate_threshold: f64,
    /// p95 response time (a user's message to our first reply) above which an alert fires, ms.
    #[arg(
        long,
        env = "MONITORING_RESPONSE_TIME_THRESHOLD",
        default_value_t = 3000
    )]
    pub response_time_threshold: u64,
    /// How often alerts are judged.
    #[arg(long, env = "ANALYTICS_ALERT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub alert_interval: Duration,
    /// The sliding window alerts and health look at.
    #[arg(long, env = "ANALYTICS_LIVE_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub live_window: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct AnalyticsArgs {
    #[arg(long, env = "WAMESH_ANALYTICS_ADDR", default_value = "0.0.0.0:50053")]
    pub addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(long, env = "WAMESH_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// analytics' own database (not messaging's).
    #[command(flatten)]
    pub store: StoreArgs,
    /// messaging's gRPC address: the event log analytics counts.
    #[arg(
        long,
        env = "WAMESH_MESSAGING_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub messaging_url: String,
    /// rate-limit's gRPC address: the usage its alerts watch (unset: no rate-limit alerts).
    #[arg(long, env = "WAMESH_RATELIMIT_URL")]
    pub ratelimit_url: Option<String>,
    /// A bucket's usage ratio from which a rate-limit alert fires.
    #[arg(long, env = "MONITORING_RATE_LIMIT_WARNING", default_value_t = 0.8)]
    pub rate_limit_warning: f64,
    /// The services' Prometheus `/metrics` URLs, comma-separated, read every 15 s for each
    /// service's error rate in `GetSystemHealth` (the gateway's HTTP port; messaging's,
    /// rate-limit's and analytics' admin port). Unset: none are read.
    #[arg(
        long = "metrics-url",
        env = "WAMESH_METRICS_URLS",
        value_delimiter = ','
    )]
    pub metrics_urls: Vec<String>,
    #[command(flatten)]
    pub rollups: RollupArgs,
}

#[derive(Debug, Clone, Args)]
pub struct SimulatorArgs {
    #[arg(long, env = "WAMESH_SIMULATOR_ADDR", default_value = "0.0.0.0:8090")]
    pub addr: SocketAddr,
    /// The bearer tokens it accepts, comma-separated (the access tokens messaging sends with).
    #[arg(
        long = "access-token",
        env = "WAMESH_ACCESS_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub access_tokens: Vec<String>,
    #[command(flatten)]
    pub options: Box<wamesh_simulator::SimulatorOptions>,
}

#[derive(Debug, Clone, Args)]
pub struct DevArgs {
    #[arg(long, env = "WAMESH_GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: SocketAddr,
    #[arg(long, env = "WAMESH_MESSAGING_ADDR", default_value = "127.0.0.1:50051")]
    pub messaging_addr: SocketAddr,
    /// Where the embedded database and the generated development secrets live.
    #[arg(long, env = "WAMESH_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Use this database instead of SQLite under --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "WAMESH_RATELIMIT_ADDR", default_value = "127.0.0.1:50052")]
    pub ratelimit_addr: SocketAddr,
    #[arg(long, env = "WAMESH_ANALYTICS_ADDR", default_value = "127.0.0.1:50053")]
    pub analytics_addr: SocketAddr,
    /// analytics' database (SQLite under --data-dir when unset; never messaging's).
    #[arg(long, env = "WAMESH_ANALYTICS_DATABASE_URL")]
    pub analytics_database_url: Option<String>,
    #[command(flatten)]
    pub rollups: RollupArgs,
    /// Operator API keys (`wamesh dev`: one generated and kept with the dev secrets).
    #[command(flatten)]
    pub operators: OperatorArgs,
    /// The simulator of Meta's Graph API.
    #[arg(long, env = "WAMESH_SIMULATOR_ADDR", default_value = "127.0.0.1:8090")]
    pub simulator_addr: SocketAddr,
    /// The simulator's knobs (`--sim-*`, `WAMESH_SIMULATOR_*`).
    #[command(flatten)]
    pub simulator_limits: wamesh_simulator::SimulatorOptions,
    #[command(flatten)]
    pub limiter: LimiterArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    /// Workers, retries and timeouts (messaging sends to the mesh's simulator, through its
    /// rate-limit).
    #[command(flatten)]
    pub send: SendArgs,
    #[command(flatten)]
    pub number: NumberArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Signed message and status webhooks through the gateway, against single-row INSERTs into
    /// the same Postgres at the same concurrency.
    Ingest(crate::bench::ingest::IngestBench),
    /// Acquire decisions over gRPC from 64 clients, against the same script sent straight to
    /// Redis, unpipelined, at the same concurrency.
    Ratelimit(crate::bench::ratelimit::RatelimitBench),
    /// Messages at a steady rate through SendMessage to the simulated Meta and back as
    /// delivered statuses, against the same rate POSTed straight to the simulator.
    Send(crate::bench::send::SendBench),
    /// N synthetic messages' events counted by analytics (events/s), then GetOverview(30d)
    /// timed against the same numbers by plain SQL over the raw message rows.
    Analytics(crate::bench::analytics::AnalyticsBench),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
