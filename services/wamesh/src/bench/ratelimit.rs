//! `wamesh bench ratelimit`: 64 concurrent gRPC clients ask the rate-limit service for one token
//! of a random same-user bucket (`pair:<n>`, WhatsApp's pair policy) over Redis, each on an
//! `AcquireStream` of its own (or with `--rpc unary`, one `Acquire` call each); then, on the
//! same Redis at the same concurrency, the baseline: the same acquire script with the same keys
//! and arguments, sent straight to Redis by 64 clients on connections of their own, one request
//! at a time (unpipelined, as `redis-benchmark -c 64` would).
//!
//! Rounds alternate between the two, so the machine's drift weighs on both alike. Where the time
//! goes comes from the CPU that this process and Redis used in each.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;
use wamesh_proto::ratelimit::v1 as pb;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use wamesh_ratelimit::backend::redis::RedisBackend;
use wamesh_ratelimit::model::Bucket;
use wamesh_ratelimit::policy::whatsapp;
use wamesh_ratelimit::{LimiterConfig, RateLimit, RateLimitConfig};
use wamesh_runtime::Shutdown;

use super::cpu::process_cpu_seconds;
use super::{Comparison, LoadArgs, Measured, drive, round};

#[derive(Debug, Clone, Args)]
pub struct RatelimitBench {
    /// A running rate-limit service (`http://host:port`, e.g. `wamesh dev` with REDIS_URL set).
    /// By default one is started inside this process on --redis-url.
    #[arg(long)]
    pub target: Option<String>,
    /// The Redis of the baseline (and of the in-process service); the service at --target must
    /// use the same one.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// The key prefix the service uses (`WAMESH_RATELIMIT_PREFIX`); the baseline writes under it
    /// too, in a scope of its own.
    #[arg(long, env = "WAMESH_RATELIMIT_PREFIX", default_value = "wamesh:rl:")]
    pub redis_prefix: String,
    /// HTTP/2 connections the gRPC clients share (one, as a service's one tonic `Channel`).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// How the clients call: each on a long-lived `AcquireStream` of its own (how send workers
    /// call), or one unary `Acquire` call per decision.
    #[arg(long, value_enum, default_value_t = Rpc::Stream)]
    pub rpc: Rpc,
    /// Distinct buckets the random keys are drawn from.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    Stream,
    Unary,
}

impl Rpc {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Unary => "unary",
        }
    }
}

/// CPU seconds used, read before and after a run.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    this_process: f64,
    redis: f64,
}

pub async fn run(args: RatelimitBench) -> anyhow::Result<()> {
    let backend = RedisBackend::connect(&args.redis_url, &args.redis_prefix)
        .await
        .map_err(|e| anyhow::anyhow!("the benchmark needs Redis at {}: {e}", args.redis_url))?;
    let (target, in_process) = match &args.target {
        Some(target) => (target.trim_end_matches('/').to_owned(), None),
        None => {
            let (addr, stop) = start_service(&args).await?;
            (format!("http://{addr}"), Some(stop))
        }
    };
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    println!(
        "wamesh bench ratelimit: {} clients (--rpc {}) on {} connections, {} random pair buckets, {:?} each for gRPC and baseline in {} alternating rounds (+{:?} warm-up each), target {target}{}",
        args.load.concurrency,
        args.rpc.as_str(),
        args.connections,
        args.keys,
        args.load.duration,
        args.load.rounds.max(1),
        args.load.warmup,
        if in_process.is_some() {
            " (in process)"
        } else {
            ""
        }
    );
    let clients = connect_clients(&target, args.connections).await?;
    let streams = match args.rpc {
        Rpc::Stream => open_streams(&clients, args.load.concurrency).await?,
        Rpc::Unary => Streams::default(),
    };
    let baseline_connections = Arc::new(std::sync::Mutex::new(Vec::new()));
    for _ in 0..args.load.concurrency {
        let con = backend.connection().await.map_err(|e| anyhow::anyhow!(e))?;
        baseline_connections.lock().expect("pool").push(con);
    }
    let backend = Arc::new(backend);

    let (mut grpc, mut baseline) = (Measured::default(), Measured::default());
    let (mut grpc_cpu, mut baseline_cpu) = (Cpu::default(), Cpu::default());
    let each_round = args.load.duration / args.load.rounds.max(1);
    for _ in 0..args.load.rounds.max(1) {
        // Each side warms up first, unmeasured, so the CPU read around its run is its own.
        load_grpc(&args, args.load.warmup, &clients, &streams, run_id).await;
        let before = cpu(&backend).await?;
        grpc.add_run(load_grpc(&args, each_round, &clients, &streams, run_id).await);
        grpc_cpu = add(grpc_cpu, diff(cpu(&backend).await?, before));
        load_redis(
            &args,
            args.load.warmup,
            &backend,
            &baseline_connections,
            run_id,
        )
        .await;
        let before = cpu(&backend).await?;
        baseline
            .add_run(load_redis(&args, each_round, &backend, &baseline_connections, run_id).await);
        baseline_cpu = add(baseline_cpu, diff(cpu(&backend).await?, before));
    }
    if let Some(stop) = in_process {
        stop.cancel();
    }

    let summary = Comparison::of(&grpc, &baseline);
    println!(
        "grpc:     {} decisions in {:.1} s = {:.0}/s; p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; errors {}",
        grpc.ok,
        grpc.elapsed.as_secs_f64(),
        summary.throughput,
        summary.p50_ms,
        summary.p99_ms,
        summary.max_ms,
        grpc.errors
    );
    for e in &grpc.error_samples {
        println!("          error: {e}");
    }
    println!(
        "baseline: {} scripts straight to Redis in {:.1} s = {:.0}/s; p50 {:.2} ms, p99 {:.2} ms; errors {}",
        baseline.ok,
        baseline.elapsed.as_secs_f64(),
        summary.baseline,
        baseline.quantile_ms(0.5),
        baseline.quantile_ms(0.99),
        baseline.errors
    );
    for e in &baseline.error_samples {
        println!("          error: {e}");
    }
    println!(
        "cpu per decision: grpc {} (bench process{}) + {} (Redis); baseline {} (bench process) + {} (Redis)",
        micros(grpc_cpu.this_process, grpc.ok),
        if args.target.is_none() {
            ": clients and service"
        } else {
            ": clients only"
        },
        micros(grpc_cpu.redis, grpc.ok),
        micros(baseline_cpu.this_process, baseline.ok),
        micros(baseline_cpu.redis, baseline.ok),
    );
    println!(
        "ratio:    {:.2} (goal: at least 0.8, p99 under 5 ms)",
        summary.ratio
    );
    let per_decision = |seconds: f64, count: u64| round(seconds * 1e6 / count.max(1) as f64);
    let extra = serde_json::json!({
        "errors": grpc.errors + baseline.errors,
        "connections": args.connections,
        "rpc": args.rpc.as_str(),
        "grpc_cpu_us_per_decision": per_decision(grpc_cpu.this_process, grpc.ok),
        "grpc_redis_cpu_us_per_decision": per_decision(grpc_cpu.redis, grpc.ok),
        "baseline_redis_cpu_us_per_decision": per_decision(baseline_cpu.redis, baseline.ok),
    });
    println!("{}", summary.json_line("ratelimit", &args.load, extra));
    Ok(())
}

/// A rate-limit service in this process, on Redis, answering on a port of its own.
async fn start_service(args: &RatelimitBench) -> anyhow::Result<(std::net::SocketAddr, Shutdown)> {
    let service = RateLimit::build(&RateLimitConfig {
        redis_url: Some(args.redis_url.clone()),
        redis_prefix: args.redis_prefix.clone(),
        limiter: LimiterConfig::default(),
    })
    .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = Shutdown::new();
    tokio::spawn(service.serve(listener, stop.clone()));
    Ok((addr, stop))
}

async fn connect_clients(
    target: &str,
    count: usize,
) -> anyhow::Result<Vec<RateLimiterClient<Channel>>> {
    let mut clients = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let channel = Channel::from_shared(target.to_owned())
            .context("the bench target must be an http:// URL")?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to the rate-limit service at {target}"))?;
        clients.push(RateLimiterClient::new(channel));
    }
    Ok(clients)
}

/// The `n`-th request's bucket key: spread over `keys` by a fixed mix of `n`.
fn key(n: u64, keys: u64) -> String {
    // splitmix64: a cheap, well-spread permutation of the sequence number.
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("pair:bench:{}", z % keys.max(1))
}

/// One client's `AcquireStream`: a request goes in, its answer comes out.
struct AcquireStream {
    requests: mpsc::Sender<pb::AcquireStreamRequest>,
    answers: Streaming<pb::AcquireStreamResponse>,
}

/// The idle streams; a client takes one for each decision and puts it back after the answer.
type Streams = Arc<std::sync::Mutex<Vec<AcquireStream>>>;

async fn open_streams(
    clients: &[RateLimiterClient<Channel>],
    count: usize,
) -> anyhow::Result<Streams> {
    let mut streams = Vec::with_capacity(count);
    for n in 0..count {
        let (requests, queued) = mpsc::channel(1);
        let answers = clients[n % clients.len()]
            .clone()
            .acquire_stream(ReceiverStream::new(queued))
            .await
            .context("opening an AcquireStream")?
            .into_inner();
        streams.push(AcquireStream { requests, answers });
    }
    Ok(Arc::new(std::sync::Mutex::new(streams)))
}

async fn load_grpc(
    args: &RatelimitBench,
    duration: Duration,
    clients: &[RateLimiterClient<Channel>],
    streams: &Streams,
    run_id: u128,
) -> Measured {
    let clients: Arc<[RateLimiterClient<Channel>]> = clients.into();
    let (rpc, keys, scope) = (args.rpc, args.keys, format!("bench-grpc-{run_id}"));
    let streams = streams.clone();
    drive(args.load.concurrency, Duration::ZERO, duration, move |n| {
        let request = pb::AcquireRequest {
            scope: scope.clone(),
            buckets: vec![pb::BucketRequest {
                key: key(n, keys),
                cost: 1.0,
                ..Default::default()
            }],
        };
        let (clients, streams) = (clients.clone(), streams.clone());
        async move {
            let decision = match rpc {
                Rpc::Unary => {
                    let mut client = clients[n as usize % clients.len()].clone();
                    client
                        .acquire(request)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_inner()
                }
                Rpc::Stream => acquire_on_stream(&streams, n, request).await?,
            };
            if decision.degraded {
                return Err("answered without Redis (degraded)".to_owned());
            }
            Ok(())
        }
    })
    .await
}

async fn acquire_on_stream(
    streams: &Streams,
    id: u64,
    acquire: pb::AcquireRequest,
) -> Result<pb::AcquireResponse, String> {
    let taken = streams.lock().map_err(|_| "streams poisoned")?.pop();
    let mut stream = taken.ok_or("more clients than streams")?;
    let request = pb::AcquireStreamRequest {
        id,
        acquire: Some(acquire),
        traceparent: String::new(),
    };
    stream
        .requests
        .send(request)
        .await
        .map_err(|_| "the stream was closed")?;
    let answer = stream
        .answers
        .message()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the stream ended")?;
    streams.lock().map_err(|_| "streams poisoned")?.push(stream);
    match answer.result {
        _ if answer.id != id => Err(format!("answer {} to request {id}", answer.id)),
        Some(pb::acquire_stream_response::Result::Decision(decision)) => Ok(decision),
        Some(pb::acquire_stream_response::Result::Error(e)) => Err(e.message),
        None => Err("an empty answer".to_owned()),
    }
}

type Pool = Arc<std::sync::Mutex<Vec<redis::aio::MultiplexedConnection>>>;

async fn load_redis(
    args: &RatelimitBench,
    duration: Duration,
    backend: &Arc<RedisBackend>,
    connections: &Pool,
    run_id: u128,
) -> Measured {
    let (backend, connections) = (backend.clone(), connections.clone());
    let (keys, scope) = (args.keys, Arc::new(format!("bench-redis-{run_id}")));
    drive(args.load.concurrency, Duration::ZERO, duration, move |n| {
        let (backend, connections, scope) = (backend.clone(), connections.clone(), scope.clone());
        let bucket = Bucket {
            key: key(n, keys),
            policy: whatsapp::PAIR,
            cost: 1.0,
            member: String::new(),
            check_only: false,
        };
        async move {
            // One connection per client at a time: each request waits for its answer.
            let mut con = connections
                .lock()
                .map_err(|_| "pool poisoned".to_owned())?
                .pop()
                .ok_or("more clients than connections")?;
            let result = backend.acquire_on(&mut con, &scope, &[bucket]).await;
            connections
                .lock()
                .map_err(|_| "pool poisoned".to_owned())?
                .push(con);
            result.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await
}

/// CPU seconds this process and the Redis server have used so far.
async fn cpu(backend: &RedisBackend) -> anyhow::Result<Cpu> {
    let mut con = backend.connection().await.map_err(|e| anyhow::anyhow!(e))?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut con).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok(Cpu {
        this_process: process_cpu_seconds(),
        redis: field("used_cpu_user") + field("used_cpu_sys"),
    })
}

fn diff(after: Cpu, before: Cpu) -> Cpu {
    Cpu {
        this_process: after.this_process - before.this_process,
        redis: after.redis - before.redis,
    }
}

fn add(a: Cpu, b: Cpu) -> Cpu {
    Cpu {
        this_process: a.this_process + b.this_process,
        redis: a.redis + b.redis,
    }
}

fn micros(seconds: f64, count: u64) -> String {
    format!("{:.1} µs", seconds * 1e6 / count.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_the_key_space() {
        let distinct: std::collections::HashSet<String> = (0..1000).map(|n| key(n, 100)).collect();
        assert_eq!(distinct.len(), 100, "1000 draws cover 100 keys");
        assert!(key(7, 100).starts_with("pair:bench:"));
    }
}
