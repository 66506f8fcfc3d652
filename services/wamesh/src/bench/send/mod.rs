//! `wamesh bench send`: an offered load of text messages through `SendMessage`, out through
//! rate-limit (on Redis) to the simulated Meta (latency 0), and back through the gateway as
//! status webhooks until each message's `delivered` status is stored (on Postgres). The mesh
//! runs inside this process on a scratch database; the number is at Meta's highest
//! throughput level (1,000/s by default: the offered rate).
//!
//! Sends go out at a steady rate (open loop: one every 1/rate s, whatever the answers do),
//! each to one of enough users that none of them passes the pair burst, all of whom wrote first
//! (their windows are open). Measured: the sustained rate end to end, and for each message the
//! time from the `SendMessage` call to its stored `delivered` status, split into its stages.
//! Baseline, in the same run and at the same rate: the same messages POSTed straight to the
//! simulator, as a sender with no queue, no rate limit and no tracking would.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use wamesh_messaging::SendConfig;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_ratelimit::{LimiterConfig, RateLimitConfig};
use wamesh_runtime::{BusinessNumber, Secret};
use wamesh_simulator::{Delivery, SendLimits, SimulatorConfig, WebhookTarget};

mod results;

use self::results::{Delivered, end_to_end, quantiles};
use super::cpu::CpuTime;
use super::scratch::ScratchDatabase;
use super::{Comparison, LoadArgs, Measured, pace, round};
use crate::mesh::{Mesh, MeshConfig};

const PHONE: &str = "109000000000001";
const TOKEN: &str = "bench-access-token";
/// Messages to one user at most in a run: under Meta's pair burst of 45.
const PER_USER: f64 = 40.0;

#[derive(Debug, Clone, Args)]
pub struct SendBench {
    /// Messages offered per second (Meta's highest throughput level is 1,000).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Measured time (after --warmup), for the mesh and for the baseline each.
    #[arg(long, default_value = "20s", value_parser = crate::cli::parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "3s", value_parser = crate::cli::parse_duration)]
    pub warmup: Duration,
    /// How long the last messages may take to be delivered after the load ends.
    #[arg(long, default_value = "30s", value_parser = crate::cli::parse_duration)]
    pub drain: Duration,
    /// `SendMessage` calls in flight at most (the open loop's bound).
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// The Postgres server the scratch database is created on (and dropped from).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    pub database_url: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Send workers of the in-process messaging, and what each claims at once.
    #[arg(long, default_value_t = 2)]
    pub send_workers: usize,
    #[arg(long, default_value_t = 64)]
    pub send_batch: u32,
}

impl SendBench {
    /// Messages in all, and of those the warm-up's (not measured).
    fn counts(&self) -> (u64, u64) {
        let total = self.rate * (self.warmup + self.duration).as_secs_f64();
        (total as u64, (self.rate * self.warmup.as_secs_f64()) as u64)
    }
}

/// What the run sent: for each message, when `SendMessage` was called (wall clock, ms) and its
/// id, or the error.
struct Sent {
    started_ms: HashMap<i64, i64>,
    rpc: Measured,
    /// Messages queued, the warm-up's included (what the CPU spent over the run paid for).
    queued: u64,
}

pub async fn run(args: SendBench) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    let scratch = ScratchDatabase::create(&args.database_url).await?;
    let bench = Bench::start(&args, &scratch.url).await?;
    let result = bench.measure(&args).await;
    bench.mesh.stop().await?;
    scratch.drop_database().await?;
    result
}

struct Bench {
    mesh: Mesh,
    grpc: MessagingClient<Channel>,
    http: reqwest::Client,
    simulator: String,
    webhook_url: String,
    app_secret: Secret,
    database_url: String,
    users: Vec<String>,
}

impl Bench {
    async fn start(args: &SendBench, database_url: &str) -> anyhow::Result<Self> {
        let app_secret = Secret::generate();
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await?;
        let simulator_listener = TcpListener::bind("127.0.0.1:0").await?;
        let ratelimit_listener = TcpListener::bind("127.0.0.1:0").await?;
        let webhook_url = format!(
            "http://{}/api/webhooks/whatsapp",
            gateway_listener.local_addr()?
        );
        let simulator = format!("http://{}", simulator_listener.local_addr()?);
        let send = SendConfig {
            workers: args.send_workers,
            batch: args.send_batch,
            graph_api_url: simulator.clone(),
            ratelimit_url: format!("http://{}", ratelimit_listener.local_addr()?),
            ..SendConfig::default()
        };
        let number = BusinessNumber {
            phone_number_id: Some(PHONE.into()),
            waba_id: Some("109000000000000".into()),
            app_secret: app_secret.clone(),
            verify_token: Secret::generate(),
            access_token: Some(Secret::new(TOKEN)),
            throughput: Some(args.rate),
            tier: Some(0),
        };
        let run_id = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        let mesh = Mesh::start(MeshConfig {
            gateway_listener,
            messaging_listener: TcpListener::bind("127.0.0.1:0").await?,
            database_url: database_url.to_owned(),
            db_max_connections: 16,
            ingest: wamesh_messaging::IngestConfig::default(),
            numbers: vec![number],
            ingest_timeout: Duration::from_secs(10),
            operator_api_keys: Vec::new(),
            send,
            ratelimit: Some((
                ratelimit_listener,
                RateLimitConfig {
                    redis_url: Some(args.redis_url.clone()),
                    redis_prefix: format!("wamesh-bench-send:{run_id}:"),
                    limiter: LimiterConfig::default(),
                },
            )),
            simulator: Some((
                simulator_listener,
                SimulatorConfig {
                    access_tokens: vec![Secret::new(TOKEN)],
                    // Meta's limits at this level, with the slack Meta's enforcement has.
                    limits: SendLimits {
                        throughput_per_s: args.rate * 1.1,
                        throughput_burst: args.rate * 1.1,
                        pair_burst: 45.0,
                        pair_interval: Duration::from_secs(6),
                    },
                    webhook: Some(WebhookTarget {
                        url: webhook_url.clone(),
                        app_secret: app_secret.clone(),
                    }),
                    delivery: Delivery {
                        flush_interval: Duration::from_millis(10),
                        ..Delivery::default()
                    },
                    record_limit: 1_000,
                    ..SimulatorConfig::default()
                },
            )),
            analytics: None,
        })
        .await?;
        let grpc = MessagingClient::new(
            Channel::from_shared(format!("http://{}", mesh.messaging_addr))?
                .connect()
                .await?,
        );
        let total = args.rate * (args.warmup + args.duration).as_secs_f64();
        let users = (0..(total / PER_USER).ceil().max(1.0) as u64)
            .map(|n| format!("1555{n:07}"))
            .collect();
        Ok(Self {
            mesh,
            grpc,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                .tcp_nodelay(true)
                .build()?,
            simulator,
            webhook_url,
            app_secret,
            database_url: database_url.to_owned(),
            users,
        })
    }

    async fn measure(&self, args: &SendBench) -> anyhow::Result<()> {
        println!(
            "wamesh bench send: {} messages/s offered for {:?} (+{:?} warm-up) to {} users, \
             in process on Postgres and Redis; baseline: the same rate straight to the simulator",
            args.rate,
            args.duration,
            args.warmup,
            self.users.len()
        );
        self.open_windows().await?;
        let before = CpuTime::now();
        let sent = self.load(args).await;
        let delivered = self.delivered(&sent, args.drain).await?;
        let cpu = CpuTime::since(before);
        let outcome = self.outcome(&sent).await?;
        let baseline = self.baseline(args).await?;

        let end_to_end = end_to_end(&sent, &delivered);
        let summary = Comparison::of(&end_to_end, &baseline);
        let stage = |f: fn(&Delivered) -> i64| quantiles(delivered.values().map(f));
        let (queue_p50, queue_p99) = stage(|d| d.accepted_ms - d.queued_ms);
        let (back_p50, back_p99) = stage(|d| d.delivered_ms - d.accepted_ms);
        println!(
            "send:     {} of {} measured messages delivered; sustained {:.0}/s; SendMessage to \
             delivered stored: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; over 1 s {:.2}%",
            end_to_end.ok,
            sent.started_ms.len(),
            summary.throughput,
            summary.p50_ms,
            summary.p99_ms,
            summary.max_ms,
            end_to_end.share_over(Duration::from_secs(1)) * 100.0
        );
        println!(
            "stages:   SendMessage call p50 {:.1} ms, p99 {:.1} ms; queued to accepted by Meta \
             p50 {queue_p50} ms, p99 {queue_p99} ms; accepted to delivered stored p50 \
             {back_p50} ms, p99 {back_p99} ms",
            sent.rpc.quantile_ms(0.5),
            sent.rpc.quantile_ms(0.99)
        );
        println!(
            "errors:   SendMessage {}; failed {}, dead {}, in doubt {}, not delivered {}; Meta \
             refused {}",
            sent.rpc.errors,
            outcome.failed,
            outcome.dead,
            outcome.in_doubt,
            outcome.undelivered,
            outcome.meta_refused
        );
        for e in &sent.rpc.error_samples {
            println!("          error: {e}");
        }
        // Per message queued, the warm-up's included: the CPU was read around all of them.
        let per_message = cpu.per_unit_us(sent.queued);
        println!(
            "cpu:      per message, this process (load, mesh, simulator) {:.0} µs, Postgres {:.0} µs",
            per_message.process, per_message.postgres
        );
        println!(
            "baseline: {} sends accepted straight by the simulator in {:.1} s = {:.0}/s; \
             p50 {:.1} ms, p99 {:.1} ms; errors {}",
            baseline.ok,
            baseline.elapsed.as_secs_f64(),
            summary.baseline,
            baseline.quantile_ms(0.5),
            baseline.quantile_ms(0.99),
            baseline.errors
        );
        println!(
            "ratio:    {:.2} (goal: {} messages/s sustained, p99 SendMessage to delivered under 1 s)",
            summary.ratio, args.rate
        );
        let load = LoadArgs {
            concurrency: args.max_in_flight,
            duration: args.duration,
            warmup: args.warmup,
            rounds: 1,
        };
        let extra = json!({
            "offered_per_s": args.rate,
            "rpc_p99_ms": round(sent.rpc.quantile_ms(0.99)),
            "queue_p99_ms": queue_p99,
            "back_p99_ms": back_p99,
            "errors": end_to_end.errors + outcome.failed + outcome.dead,
            "rpc_errors": sent.rpc.errors,
            "failed": outcome.failed + outcome.dead,
            "undelivered": outcome.undelivered,
            "meta_refused": outcome.meta_refused,
            "messages_queued": sent.queued,
            "cpu_us_per_message": per_message.process,
            "postgres_cpu_us_per_message": per_message.postgres,
        });
        println!("{}", summary.json_line("send", &load, extra));
        Ok(())
    }

    /// Every user writes first (through the simulator, as a user would), so free-form text may
    /// go to them; waits until messaging has every window open.
    async fn open_windows(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let limit = Arc::new(Semaphore::new(32));
        let writes = self.users.iter().map(|user| {
            let (http, limit) = (self.http.clone(), limit.clone());
            let url = format!("{}/_sim/inbound", self.simulator);
            let body = json!({"phone_number_id": PHONE, "from": user, "text": "hi"});
            async move {
                let _permit = limit.acquire().await;
                http.post(url)
                    .json(&body)
                    .send()
                    .await?
                    .error_for_status()?;
                anyhow::Ok(())
            }
        });
        for written in futures::future::join_all(writes).await {
            written.context("a user could not write through the simulator")?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.database_url)
            .await?;
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM contacts WHERE business_phone_number_id = $1 AND last_inbound_s > 0",
            )
            .bind(PHONE)
            .fetch_one(&pool)
            .await?;
            if open as usize >= self.users.len() {
                println!(
                    "windows:  {} users wrote first ({:.1} s)",
                    self.users.len(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "only {open} of {} users' messages reached messaging",
                self.users.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The open loop: one `SendMessage` every 1/rate s for warm-up plus duration.
    async fn load(&self, args: &SendBench) -> Sent {
        let (total, warmup) = args.counts();
        let done = pace(args.rate, total, args.max_in_flight, |n| {
            let mut grpc = self.grpc.clone();
            let request = pb::SendMessageRequest {
                business_phone_number_id: PHONE.into(),
                to: self.users[n as usize % self.users.len()].clone(),
                idempotency_key: format!("bench-{n}"),
                content: Some(pb::send_message_request::Content::Text(pb::TextContent {
                    body: format!("Your order #{n} is on its way."),
                    preview_url: false,
                })),
                ..Default::default()
            };
            async move {
                let started_ms = now_ms();
                let answer = grpc.send_message(request).await;
                let id = answer
                    .map(|a| a.into_inner().message.map_or(0, |m| m.id))
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                (started_ms, id)
            }
        })
        .await;
        let mut sent = Sent {
            started_ms: HashMap::new(),
            rpc: Measured::default(),
            queued: done.iter().filter(|(.., (_, id))| id.is_ok()).count() as u64,
        };
        for (_, took, (started_ms, id)) in done.into_iter().filter(|(n, ..)| *n >= warmup) {
            if let Ok(id) = id {
                sent.started_ms.insert(id, started_ms);
            }
            sent.rpc.record(took, id.map(drop));
        }
        sent.rpc.latencies.sort_unstable();
        sent.rpc.elapsed = args.duration;
        sent
    }

    /// The same rate of the same messages, POSTed straight to the simulator (its webhooks off,
    /// so nothing else runs): what sending costs without a queue, limits or tracking.
    async fn baseline(&self, args: &SendBench) -> anyhow::Result<Measured> {
        let config = format!("{}/_sim/config", self.simulator);
        self.http
            .post(&config)
            .json(&json!({"webhook_url": ""}))
            .send()
            .await?
            .error_for_status()?;
        let (total, warmup) = args.counts();
        let url = format!("{}/v23.0/{PHONE}/messages", self.simulator);
        let start = Instant::now();
        let done = pace(args.rate, total, args.max_in_flight, |n| {
            // To a user of its own every 40 messages: under the pair burst, too.
            let body = json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                "to": format!("1666{:07}", n / PER_USER as u64), "type": "text",
                "text": {"body": format!("Your order #{n} is on its way.")}});
            let request = self.http.post(&url).bearer_auth(TOKEN).json(&body).send();
            async move {
                match request.await {
                    Ok(a) if a.status().is_success() => Ok(()),
                    Ok(a) => Err(format!("HTTP {}", a.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        let mut measured = Measured::default();
        for (_, took, result) in done.into_iter().filter(|(n, ..)| *n >= warmup) {
            measured.record(took, result);
        }
        measured.latencies.sort_unstable();
        measured.elapsed = start.elapsed().saturating_sub(args.warmup);
        self.http
            .post(&config)
            .json(&json!({"webhook_url": self.webhook_url, "app_secret": self.app_secret.expose()}))
            .send()
            .await?
            .error_for_status()?;
        Ok(measured)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
