//! `wamesh bench ingest`: signed webhooks (new messages and statuses, unique ids, 1 in 4 a
//! message: Meta's 3 statuses per outgoing message plus the incoming one) from 64 concurrent
//! senders through the gateway until durably stored; then, on the same Postgres at the same
//! concurrency, the baseline: single-row INSERTs, one transaction each.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use wamesh_runtime::{BusinessNumber, Secret};

use super::cpu::CpuTime;
use super::scratch::{ScratchDatabase, rand_u64};
use super::{Comparison, LoadArgs, Measured, drive};
use crate::cli::IngestArgs;
use crate::mesh::{Mesh, MeshConfig};
use crate::run::DevSecrets;

#[derive(Debug, Clone, Args)]
pub struct IngestBench {
    /// The gateway to load (default: the local `wamesh dev` mesh).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// Start gateway and messaging inside this process instead of --target, on a fresh
    /// database created on --database-url's server (dropped afterwards), so runs compare.
    #[arg(long)]
    pub in_process: bool,
    /// The app secret to sign with (default: WAMESH_APP_SECRET, else <data-dir>/dev-secrets.json).
    #[arg(long, env = "WAMESH_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    #[arg(long, env = "WAMESH_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The Postgres of the baseline (and of the mesh, with --in-process). On loopback, TLS only
    /// costs CPU, hence `sslmode=disable` by default; the baseline uses the same URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    pub database_url: String,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Group commit of the in-process mesh.
    #[command(flatten)]
    pub ingest: IngestArgs,
}

pub async fn run(args: IngestBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database_url.starts_with("postgres"),
        "the baseline needs Postgres: set --database-url or DATABASE_URL to a postgres:// URL"
    );
    let scratch = if args.in_process {
        Some(ScratchDatabase::create(&args.database_url).await?)
    } else {
        None
    };
    let database_url = scratch
        .as_ref()
        .map_or(args.database_url.clone(), |s| s.url.clone());
    let (secret, mesh) = if args.in_process {
        let secret = Secret::generate().expose().to_owned();
        let mesh = start_mesh(&args, &database_url, &secret).await?;
        (secret, Some(mesh))
    } else {
        (signing_secret(&args)?, None)
    };
    let target = match &mesh {
        Some(mesh) => format!("http://{}", mesh.gateway_addr),
        None => args.target.trim_end_matches('/').to_owned(),
    };
    println!(
        "wamesh bench ingest: {} senders, {:?} each for ingest and baseline in {} alternating rounds (+{:?} warm-up each), target {target}{}",
        args.load.concurrency,
        args.load.duration,
        args.load.rounds.max(1),
        args.load.warmup,
        mesh.as_ref()
            .map(|m| format!(" (in process, {})", m.backend))
            .unwrap_or_default()
    );

    let (mut ingest, mut baseline) = (Measured::default(), Measured::default());
    let mut cpu = CpuTime::default();
    let each_round = args.load.duration / args.load.rounds.max(1);
    for _ in 0..args.load.rounds.max(1) {
        let before = CpuTime::now();
        ingest.add_run(load_gateway(&args, each_round, &target, &secret).await?);
        cpu = cpu.plus(CpuTime::since(before));
        baseline.add_run(baseline_inserts(&args, each_round, &database_url).await?);
    }
    // Per webhook posted during the ingest rounds, the warm-ups' included: they were paid for.
    let per_webhook = cpu.per_unit_us(ingest.started);
    let mesh_in_process = mesh.is_some();
    if let Some(mesh) = mesh {
        mesh.stop().await?;
        println!("group commit: {}", batch_summary());
    }
    if let Some(scratch) = scratch {
        scratch.drop_database().await?;
    }

    let summary = Comparison::of(&ingest, &baseline);
    let over_1s = ingest.share_over(Duration::from_secs(1));
    println!(
        "ingest:   {} webhooks stored in {:.1} s = {:.0}/s; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; over 1 s {:.2}%; errors {}",
        ingest.ok,
        ingest.elapsed.as_secs_f64(),
        summary.throughput,
        summary.p50_ms,
        summary.p99_ms,
        summary.max_ms,
        over_1s * 100.0,
        ingest.errors
    );
    for e in &ingest.error_samples {
        println!("          error: {e}");
    }
    println!(
        "baseline: {} single-row INSERTs in {:.1} s = {:.0}/s; p50 {:.1} ms, p99 {:.1} ms; errors {}",
        baseline.ok,
        baseline.elapsed.as_secs_f64(),
        summary.baseline,
        baseline.quantile_ms(0.5),
        baseline.quantile_ms(0.99),
        baseline.errors
    );
    println!(
        "cpu:      per webhook, this process ({}) {:.0} µs, Postgres {:.0} µs",
        if mesh_in_process {
            "load and mesh"
        } else {
            "load"
        },
        per_webhook.process,
        per_webhook.postgres
    );
    println!(
        "ratio:    {:.2} (goal: at least 1.0, median under 250 ms, under 1% over 1 s)",
        summary.ratio
    );
    let extra = serde_json::json!({
        "over_1s_share": over_1s,
        "errors": ingest.errors,
        "webhooks_posted": ingest.started,
        "cpu_us_per_webhook": per_webhook.process,
        "postgres_cpu_us_per_webhook": per_webhook.postgres,
    });
    println!("{}", summary.json_line("ingest", &args.load, extra));
    Ok(())
}

/// Commits and mean batch size, from this process's metrics (in-process mesh only).
fn batch_summary() -> String {
    let text = wamesh_runtime::metrics::install().render();
    let value = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (commits, webhooks) = (
        value("wamesh_ingest_batch_size_count"),
        value("wamesh_ingest_batch_size_sum"),
    );
    let seconds = value("wamesh_ingest_commit_seconds_sum");
    format!(
        "{commits:.0} transactions, {:.1} webhooks and {:.2} ms each on average",
        webhooks / commits.max(1.0),
        seconds * 1000.0 / commits.max(1.0)
    )
}

fn signing_secret(args: &IngestBench) -> anyhow::Result<String> {
    if let Some(secret) = args.app_secret.clone().filter(|s| !s.is_empty()) {
        return Ok(secret);
    }
    let secrets = DevSecrets::load(&args.data_dir).context(
        "no WAMESH_APP_SECRET, and no dev secrets: start `wamesh dev` first, or use --in-process",
    )?;
    Ok(secrets.app_secret)
}

async fn start_mesh(args: &IngestBench, database_url: &str, secret: &str) -> anyhow::Result<Mesh> {
    Mesh::start(MeshConfig {
        gateway_listener: TcpListener::bind("127.0.0.1:0").await?,
        messaging_listener: TcpListener::bind("127.0.0.1:0").await?,
        database_url: database_url.to_owned(),
        db_max_connections: 16,
        ingest: crate::run::ingest_config(&args.ingest),
        numbers: vec![BusinessNumber {
            phone_number_id: None,
            waba_id: None,
            app_secret: Secret::new(secret),
            verify_token: Secret::generate(),
            access_token: None,
            throughput: None,
            tier: None,
        }],
        ingest_timeout: Duration::from_secs(10),
        operator_api_keys: Vec::new(),
        // Nothing is sent: no number has an access token.
        send: wamesh_messaging::SendConfig::default(),
        ratelimit: None,
        simulator: None,
        analytics: None,
    })
    .await
}

async fn load_gateway(
    args: &IngestBench,
    duration: Duration,
    target: &str,
    secret: &str,
) -> anyhow::Result<Measured> {
    let connections = Arc::new(Connections::open(target, args.load.concurrency).await?);
    let secret: Arc<str> = secret.into();
    let run = format!("{:x}", rand_u64());
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let measured = drive(
        args.load.concurrency,
        args.load.warmup,
        duration,
        move |n| {
            let (connections, secret) = (connections.clone(), secret.clone());
            let body = webhook(&run, n, now);
            async move {
                let signature = wamesh_whatsapp::sign(secret.as_bytes(), body.as_bytes());
                let request = http::Request::post(wamesh_gateway::webhooks::PATH)
                    .header(http::header::HOST, &connections.host)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .header(wamesh_whatsapp::SIGNATURE_HEADER, signature)
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let (status, answer) = connections.send(request).await?;
                match status.as_u16() {
                    200 => Ok(()),
                    code => Err(format!("HTTP {code}: {}", String::from_utf8_lossy(&answer))),
                }
            }
        },
    )
    .await;
    Ok(measured)
}

/// One HTTP/1.1 keep-alive connection per sender, each used by one request at a time: the
/// load generator shares the machine with the mesh, so it is kept to what a request needs
/// (a general client's pool and URL handling cost as much CPU as the gateway's own parsing).
struct Connections {
    /// host:port, also the `Host` header.
    host: String,
    idle: std::sync::Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Connections {
    async fn open(target: &str, count: usize) -> anyhow::Result<Self> {
        let host = target
            .strip_prefix("http://")
            .context("the bench target must be an http:// URL")?
            .trim_end_matches('/')
            .to_owned();
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(connect(&host).await?);
        }
        Ok(Self {
            host,
            idle: std::sync::Mutex::new(idle),
        })
    }

    /// Sends on an idle connection (a new one when none is idle or it was closed); answers
    /// the status and the body.
    async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let idle = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
        let mut sender = match idle {
            Some(sender) if !sender.is_closed() => sender,
            _ => connect(&self.host).await.map_err(|e| format!("{e:#}"))?,
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        // The body is read before the connection takes another request.
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        Ok((status, body.to_bytes()))
    }
}

async fn connect(address: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to the gateway at {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// The n-th webhook of a run: one in four a new inbound text message, the rest the sent,
/// delivered and read statuses of an outgoing one. Every id is unique to the run.
pub fn webhook(run: &str, n: u64, now: u64) -> String {
    let user = format!("1555{:07}", n % 10_000);
    let value = if n.is_multiple_of(4) {
        serde_json::json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "bench-phone"},
            "contacts": [{"profile": {"name": "Bench User"}, "wa_id": user}],
            "messages": [{"from": user, "id": format!("wamid.bench.{run}.in.{n}"), "timestamp": now.to_string(),
                          "type": "text", "text": {"body": format!("hello number {n}")}}]
        })
    } else {
        let status = ["sent", "delivered", "read"][(n % 4 - 1) as usize];
        serde_json::json!({
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": "bench-phone"},
            "statuses": [{"id": format!("wamid.bench.{run}.out.{}", n / 4), "status": status,
                          "timestamp": now.to_string(), "recipient_id": user,
                          "pricing": {"billable": false, "pricing_model": "PMP", "category": "service"}}]
        })
    };
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "bench-waba", "changes": [{"field": "messages", "value": value}]}]
    })
    .to_string()
}

async fn baseline_inserts(
    args: &IngestBench,
    duration: Duration,
    database_url: &str,
) -> anyhow::Result<Measured> {
    let pool = PgPoolOptions::new()
        .max_connections(args.load.concurrency as u32)
        .min_connections(args.load.concurrency as u32)
        .connect(database_url)
        .await
        .context("connecting to the baseline's Postgres")?;
    sqlx::query("CREATE TABLE IF NOT EXISTS wamesh_bench_baseline (id BIGSERIAL PRIMARY KEY, received_at_ms BIGINT NOT NULL, payload TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let payload: Arc<str> = webhook("baseline", 1, 0).into();
    let measured = drive(
        args.load.concurrency,
        args.load.warmup,
        duration,
        move |_| {
            let (pool, payload) = (pool.clone(), payload.clone());
            async move {
                sqlx::query(
                    "INSERT INTO wamesh_bench_baseline (received_at_ms, payload) VALUES ($1, $2)",
                )
                .bind(0_i64)
                .bind(&*payload)
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    sqlx::query("DROP TABLE IF EXISTS wamesh_bench_baseline")
        .execute(&pool)
        .await?;
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_webhooks_are_valid_envelopes_with_unique_ids() {
        let mut ids = std::collections::HashSet::new();
        for n in 0..40 {
            let body = webhook("r", n, 1_700_000_000);
            let updates = wamesh_whatsapp::Updates::from_webhook(
                &wamesh_whatsapp::Webhook::parse(body.as_bytes()).unwrap(),
            );
            let [messages, statuses, ..] = updates.counts();
            assert_eq!(messages + statuses, 1);
            let key = updates
                .messages
                .first()
                .map(|m| m.wamid.clone())
                .unwrap_or_else(|| {
                    format!(
                        "{}/{}",
                        updates.statuses[0].wamid, updates.statuses[0].status
                    )
                });
            assert!(ids.insert(key), "webhook {n} repeats an id");
        }
    }
}
