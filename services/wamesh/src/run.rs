//! What each command runs. Each one binds its listeners, starts its service(s), waits for
//! SIGTERM/SIGINT, and drains.
use std::path::Path;

use anyhow::Context as _;
use tokio::net::TcpListener;
use wamesh_analytics::alerts::AlertConfig;
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_messaging::{IngestConfig, Messaging, MessagingConfig, SendConfig};
use wamesh_ratelimit::{LimiterConfig, RateLimit, RateLimitConfig};
use wamesh_runtime::{BusinessNumber, Secret, Shutdown, wait_for_signal};
use wamesh_simulator::{Simulator, WebhookTarget};

use crate::admin;
use crate::cli::{
    AnalyticsArgs, BenchCommand, Command, DevArgs, GatewayArgs, IngestArgs, LimiterArgs,
    MessagingArgs, NumberArgs, RatelimitArgs, RollupArgs, SendArgs, SimulatorArgs, StoreArgs,
};
use crate::mesh::{Mesh, MeshConfig};

pub async fn command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev(args) => dev(*args).await,
        Command::Gateway(args) => gateway(args).await,
        Command::Messaging(args) => messaging(*args).await,
        Command::Ratelimit(args) => ratelimit(args).await,
        Command::Analytics(args) => analytics(*args).await,
        Command::Simulator(args) => simulator(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Send(args) => crate::send::run(args).await,
        Command::OtlpSink(args) => crate::otlp_sink::run(args).await,
        Command::Bench(BenchCommand::Ingest(args)) => crate::bench::ingest::run(args).await,
        Command::Bench(BenchCommand::Ratelimit(args)) => crate::bench::ratelimit::run(args).await,
        Command::Bench(BenchCommand::Send(args)) => crate::bench::send::run(args).await,
        Command::Bench(BenchCommand::Analytics(args)) => crate::bench::analytics::run(args).await,
    }
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let database_url = args.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            args.data_dir.join("messaging.db").display()
        )
    });
    let number = dev_number(&args.number, &args.data_dir)?;
    let mut numbers = vec![number.clone()];
    numbers.extend(numbers_file(&args.number)?);
    // The simulator takes the tokens messaging will send with.
    let access_tokens = numbers
        .iter()
        .filter_map(|n| n.access_token.clone())
        .collect();
    let analytics_database_url = args.analytics_database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            args.data_dir.join("analytics.db").display()
        )
    });
    let operator_api_keys = if args.operators.operator_api_keys.is_empty() {
        vec![Secret::new(
            DevSecrets::load_or_create(&args.data_dir)?.operator_api_key,
        )]
    } else {
        secrets(&args.operators.operator_api_keys)
    };
    let gateway_listener = bind(args.gateway_addr).await?;
    let gateway_addr = gateway_listener.local_addr()?;
    let ratelimit_listener = bind(args.ratelimit_addr).await?;
    let ratelimit_addr = ratelimit_listener.local_addr()?;
    let simulator_listener = bind(args.simulator_addr).await?;
    // The simulated Meta signs its webhooks to this mesh's gateway with the dev app secret.
    let mut simulator = args.simulator_limits.config(access_tokens)?;
    if simulator.webhook.is_none() {
        simulator.webhook = Some(WebhookTarget {
            url: format!("http://{gateway_addr}/api/webhooks/whatsapp"),
            app_secret: number.app_secret.clone(),
        });
    }
    // messaging sends to the simulator, through the mesh's own rate-limit.
    let send = SendConfig {
        graph_api_url: format!("http://{}", simulator_listener.local_addr()?),
        ratelimit_url: format!("http://{}", ratelimit_listener.local_addr()?),
        ..send_config(&args.send)
    };
    let mesh = Mesh::start(MeshConfig {
        gateway_listener,
        messaging_listener: bind(args.messaging_addr).await?,
        send,
        database_url,
        db_max_connections: 16,
        ingest: ingest_config(&args.ingest),
        numbers,
        ingest_timeout: std::time::Duration::from_secs(10),
        operator_api_keys: operator_api_keys.clone(),
        ratelimit: Some((ratelimit_listener, ratelimit_config(&args.limiter))),
        simulator: Some((simulator_listener, simulator)),
        analytics: Some((
            bind(args.analytics_addr).await?,
            analytics_config(
                analytics_database_url,
                8,
                String::new(),
                Some(format!("http://{ratelimit_addr}")),
                args.limiter.warning,
                // One process: the gateway's /metrics counts every service.
                vec![format!("http://{gateway_addr}/metrics")],
                &args.rollups,
            ),
        )),
    })
    .await?;
    seed_dev_templates(mesh.messaging_addr).await?;
    println!("wamesh dev is running (storage: {})", mesh.backend);
    println!(
        "  gateway    http://{}  (webhooks: POST /api/webhooks/whatsapp, health: /api/webhooks/whatsapp/health, /metrics)",
        mesh.gateway_addr
    );
    println!(
        "  messaging  grpc://{}  (wamesh.messaging.v1.Messaging, reflection on)",
        mesh.messaging_addr
    );
    if let Some((addr, backend)) = mesh.ratelimit {
        println!(
            "  ratelimit  grpc://{addr}  (wamesh.ratelimit.v1.RateLimiter, buckets in {backend})"
        );
    }
    if let Some((addr, backend)) = mesh.analytics {
        println!(
            "  analytics  grpc://{addr}  (wamesh.analytics.v1.Analytics, rollups in {backend})"
        );
    }
    if let Some(addr) = mesh.simulator {
        println!(
            "  simulator  http://{addr}  (Meta's Graph API: POST /v23.0/{{phone_number_id}}/messages, GET /_sim/messages)"
        );
    }
    if args.number.app_secret.is_none() {
        println!(
            "  development credentials (kept in {}):",
            args.data_dir.join("dev-secrets.json").display()
        );
        println!("    WAMESH_APP_SECRET={}", number.app_secret.expose());
        println!("    WAMESH_VERIFY_TOKEN={}", number.verify_token.expose());
        if let Some(token) = &number.access_token {
            println!("    WAMESH_ACCESS_TOKEN={}", token.expose());
        }
    }
    if args.operators.operator_api_keys.is_empty() {
        println!(
            "  operator API key (curl -H \"Authorization: Bearer $KEY\" {}/api/analytics/overview?period=24h):",
            format_args!("http://{}", mesh.gateway_addr)
        );
        for key in &operator_api_keys {
            println!("    WAMESH_OPERATOR_API_KEYS={}", key.expose());
        }
    }
    println!("Ctrl-C stops it.");
    mesh.run_until(wait_for_signal()).await
}

/// Registers Meta's `hello_world` (which the simulator knows too), so a newcomer can send a
/// template at once; one registered already stays as it is.
async fn seed_dev_templates(messaging: std::net::SocketAddr) -> anyhow::Result<()> {
    use wamesh_proto::messaging::v1 as pb;
    let channel = tonic::transport::Channel::from_shared(format!("http://{messaging}"))?
        .connect()
        .await?;
    let created = pb::messaging_client::MessagingClient::new(channel)
        .create_template(pb::Template {
            name: "hello_world".into(),
            language: "en_US".into(),
            category: "utility".into(),
            status: pb::TemplateStatus::Approved as i32,
            components_json: r#"[{"type":"BODY","text":"Hello World"}]"#.into(),
            ..Default::default()
        })
        .await;
    match created {
        Err(status) if status.code() != tonic::Code::AlreadyExists => {
            anyhow::bail!("registering hello_world: {}", status.message())
        }
        _ => Ok(()),
    }
}

async fn gateway(args: GatewayArgs) -> anyhow::Result<()> {
    let numbers = configured_numbers(&args.number)?;
    if numbers.iter().all(|n| n.app_secret.is_empty()) {
        tracing::warn!(
            "no app secret configured: every webhook will be refused (set WAMESH_APP_SECRET)"
        );
    }
    let gateway = Gateway::build(GatewayConfig {
        numbers,
        messaging_url: args.messaging_url,
        ingest_timeout: args.ingest_timeout,
        analytics_url: args.analytics_url,
        operator_api_keys: secrets(&args.operators.operator_api_keys),
    })?;
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    serve_until_signal(|stop| gateway.serve(listener, stop)).await
}

async fn messaging(args: MessagingArgs) -> anyhow::Result<()> {
    let numbers = configured_numbers(&args.number)?;
    if !numbers.iter().any(|n| n.access_token.is_some()) {
        tracing::warn!(
            "no access token configured: SendMessage will refuse every number (set WAMESH_ACCESS_TOKEN)"
        );
    }
    let messaging = Messaging::build(&MessagingConfig {
        database_url: args.store.database_url.clone(),
        max_db_connections: args.store.db_max_connections,
        ingest: ingest_config(&args.ingest),
        numbers,
        send: SendConfig {
            graph_api_url: args.upstream.graph_api_url.clone(),
            graph_api_version: args.upstream.graph_api_version.clone(),
            ratelimit_url: args.upstream.ratelimit_url.clone(),
            ..send_config(&args.send)
        },
    })
    .await
    .context("starting messaging")?;
    let store = messaging.store();
    let admin = admin::router("messaging", move || {
        let store = store.clone();
        async move { admin::database_readiness(store.ping().await.is_ok()) }
    });
    let admin_listener = bind(args.metrics_addr).await?;
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, admin = %admin_listener.local_addr()?, "messaging listening");
    serve_until_signal(|stop| {
        admin::with_admin(
            admin_listener,
            admin,
            stop.clone(),
            messaging.serve(listener, stop),
        )
    })
    .await
}

async fn ratelimit(args: RatelimitArgs) -> anyhow::Result<()> {
    let config = ratelimit_config(&args.limiter);
    if config.redis_url.is_none() {
        tracing::warn!(
            "no REDIS_URL: buckets are kept in this process; replicas will not share them"
        );
    }
    let service = RateLimit::build(&config).await?;
    let readiness = service.readiness();
    let admin = admin::router("ratelimit", move || std::future::ready(readiness()));
    let admin_listener = bind(args.metrics_addr).await?;
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, admin = %admin_listener.local_addr()?, backend = service.backend(), "rate-limit listening");
    serve_until_signal(|stop| {
        admin::with_admin(
            admin_listener,
            admin,
            stop.clone(),
            service.serve(listener, stop),
        )
    })
    .await
}

async fn analytics(args: AnalyticsArgs) -> anyhow::Result<()> {
    let analytics = Analytics::build(analytics_config(
        args.store.database_url.clone(),
        args.store.db_max_connections,
        args.messaging_url.clone(),
        args.ratelimit_url.clone(),
        args.rate_limit_warning,
        args.metrics_urls.clone(),
        &args.rollups,
    ))
    .await
    .context("starting analytics")?;
    let store = analytics.store();
    let admin = admin::router("analytics", move || {
        let store = store.clone();
        async move { admin::database_readiness(store.cursor().await.is_ok()) }
    });
    let admin_listener = bind(args.metrics_addr).await?;
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, admin = %admin_listener.local_addr()?, "analytics listening");
    serve_until_signal(|stop| {
        admin::with_admin(
            admin_listener,
            admin,
            stop.clone(),
            analytics.serve(listener, stop),
        )
    })
    .await
}

pub fn analytics_config(
    database_url: String,
    max_db_connections: u32,
    messaging_url: String,
    ratelimit_url: Option<String>,
    rate_limit_warning: f64,
    metrics_urls: Vec<String>,
    args: &RollupArgs,
) -> AnalyticsConfig {
    AnalyticsConfig {
        database_url,
        max_db_connections,
        messaging_url,
        aggregation_interval_ms: args.aggregation_interval,
        retention_days: args.retention_days,
        consumer: wamesh_analytics::consumer::ConsumerConfig::default(),
        alerts: AlertConfig {
            error_rate_threshold: args.error_rate_threshold,
            response_time_threshold_ms: args.response_time_threshold,
            rate_limit_warning,
            eval_interval: args.alert_interval,
            window: args.live_window,
            ratelimit_url,
        },
        metrics_urls,
    }
}

/// Non-empty secrets of a comma-separated list.
fn secrets(values: &[String]) -> Vec<Secret> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(Secret::new)
        .collect()
}

pub fn ratelimit_config(args: &LimiterArgs) -> RateLimitConfig {
    RateLimitConfig {
        redis_url: args.redis_url.clone(),
        redis_prefix: args.redis_prefix.clone(),
        limiter: LimiterConfig {
            degraded: args.degraded,
            replicas: args.replicas,
            timeout: args.timeout,
            warning: args.warning,
            ..LimiterConfig::default()
        },
    }
}

async fn simulator(args: SimulatorArgs) -> anyhow::Result<()> {
    let access_tokens: Vec<Secret> = args
        .access_tokens
        .iter()
        .filter(|t| !t.is_empty())
        .map(Secret::new)
        .collect();
    anyhow::ensure!(
        !access_tokens.is_empty(),
        "the simulator needs the access tokens it accepts: set WAMESH_ACCESS_TOKEN or --access-token"
    );
    let config = args.options.config(access_tokens)?;
    if config.webhook.is_none() {
        tracing::warn!(
            "no webhook target: statuses and user messages are not sent (set WAMESH_SIMULATOR_WEBHOOK_URL and WAMESH_SIMULATOR_APP_SECRET)"
        );
    }
    let simulator = Simulator::build(config);
    let listener = bind(args.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "simulator listening");
    serve_until_signal(|stop| simulator.serve(listener, stop)).await
}

async fn migrate(args: StoreArgs) -> anyhow::Result<()> {
    let store = wamesh_messaging::store::open(&args.database_url, 1)
        .await
        .context("migrating messaging's database")?;
    println!("messaging's {} schema is up to date", store.backend());
    Ok(())
}

/// Runs a server until SIGTERM/SIGINT, then gives it the drain deadline to finish. A server that
/// stops on its own (an error) ends the command at once, with that error.
async fn serve_until_signal<F>(serve: impl FnOnce(Shutdown) -> F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Shutdown::new();
    let mut task = tokio::spawn(serve(stop.clone()));
    tokio::select! {
        () = wait_for_signal() => {}
        joined = &mut task => return joined?,
    }
    stop.cancel();
    match tokio::time::timeout(wamesh_runtime::shutdown::DRAIN_TIMEOUT, task).await {
        Ok(joined) => joined?,
        Err(_) => anyhow::bail!(
            "did not drain within {:?}",
            wamesh_runtime::shutdown::DRAIN_TIMEOUT
        ),
    }
}

async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Sending's workers, retries and timeouts from their flags (its upstreams stay the defaults);
/// the claim's lease outlasts any Graph API call.
pub fn send_config(args: &SendArgs) -> SendConfig {
    let defaults = SendConfig::default();
    SendConfig {
        workers: args.send_workers,
        batch: args.send_batch,
        max_attempts: args.send_max_attempts,
        backoff: wamesh_messaging::send::Backoff {
            base: args.send_retry_base,
            max: args.send_retry_max,
        },
        lease: defaults
            .lease
            .max(args.graph_timeout * 2 + std::time::Duration::from_secs(10)),
        evidence_window: args.send_evidence_window,
        poll_interval: args.send_poll_interval,
        graph_timeout: args.graph_timeout,
        ..defaults
    }
}

pub fn ingest_config(args: &IngestArgs) -> IngestConfig {
    IngestConfig {
        committers: args.ingest_committers,
        max_batch: args.ingest_max_batch,
        ..IngestConfig::default()
    }
}

/// The default number (from the environment) first, then the numbers file's.
fn configured_numbers(args: &NumberArgs) -> anyhow::Result<Vec<BusinessNumber>> {
    let mut numbers = numbers_file(args)?;
    if let Some(default) = env_number(args) {
        numbers.insert(0, default);
    }
    Ok(numbers)
}

fn numbers_file(args: &NumberArgs) -> anyhow::Result<Vec<BusinessNumber>> {
    match &args.numbers_file {
        Some(path) => wamesh_runtime::numbers::load_file(path),
        None => Ok(Vec::new()),
    }
}

/// The default number from `WAMESH_APP_SECRET`, `WAMESH_ACCESS_TOKEN` and friends, when a
/// secret (the gateway's) or a token (messaging's) is set.
fn env_number(args: &NumberArgs) -> Option<BusinessNumber> {
    let app_secret = args.app_secret.clone().unwrap_or_default();
    let access_token = args.access_token.clone().filter(|t| !t.is_empty());
    if app_secret.is_empty() && access_token.is_none() {
        return None;
    }
    Some(BusinessNumber {
        phone_number_id: args.phone_number_id.clone(),
        waba_id: args.waba_id.clone(),
        app_secret: Secret::new(app_secret),
        verify_token: Secret::new(args.verify_token.clone().unwrap_or_default()),
        access_token: access_token.map(Secret::new),
        throughput: args.throughput,
        tier: args.tier,
    })
}

/// `wamesh dev`'s default number: from the environment, else from `<data>/dev-secrets.json`,
/// else generated there, so a restarted dev mesh keeps its secrets.
pub fn dev_number(args: &NumberArgs, data_dir: &Path) -> anyhow::Result<BusinessNumber> {
    if let Some(number) = env_number(args).filter(|n| !n.app_secret.is_empty()) {
        return Ok(number);
    }
    let secrets = DevSecrets::load_or_create(data_dir)?;
    Ok(BusinessNumber {
        phone_number_id: args.phone_number_id.clone(),
        waba_id: args.waba_id.clone(),
        app_secret: Secret::new(secrets.app_secret),
        verify_token: Secret::new(args.verify_token.clone().unwrap_or(secrets.verify_token)),
        access_token: Some(Secret::new(
            args.access_token.clone().unwrap_or(secrets.access_token),
        )),
        throughput: args.throughput,
        tier: args.tier,
    })
}

/// Development credentials generated once per data directory.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DevSecrets {
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
    /// The operators' API key (added later than the others: made when a file lacks it).
    #[serde(default)]
    pub operator_api_key: String,
}

impl DevSecrets {
    pub const FILE: &'static str = "dev-secrets.json";

    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let generate = || Secret::generate().expose().to_owned();
        let secrets = if data_dir.join(Self::FILE).exists() {
            let secrets = Self::load(data_dir)?;
            if !secrets.operator_api_key.is_empty() {
                return Ok(secrets);
            }
            Self {
                operator_api_key: generate(),
                ..secrets
            }
        } else {
            Self {
                app_secret: generate(),
                verify_token: generate(),
                access_token: generate(),
                operator_api_key: generate(),
            }
        };
        let path = data_dir.join(Self::FILE);
        std::fs::write(&path, serde_json::to_string_pretty(&secrets)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(secrets)
    }
}
