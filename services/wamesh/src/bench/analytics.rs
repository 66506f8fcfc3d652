//! `wamesh bench analytics`: N synthetic messages over the last 30 days written into messaging's
//! event log (about 2.5 events per message: a user's message, or our send with its delivered,
//! read or failed statuses), counted by analytics from `Events/Subscribe` (the consumption rate);
//! then `GetOverview(30d)` over gRPC, timed, against the baseline measured in the same run: the
//! same numbers (volumes, delivery and read, failures by code, delivery-time percentiles, active
//! users) computed by plain SQL aggregates over the raw message rows analytics keeps.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh_analytics::consumer::ConsumerConfig;
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_messaging::{Messaging, MessagingConfig};
use wamesh_proto::analytics::v1 as pb;
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;
use wamesh_runtime::Shutdown;

use super::round;
use super::scratch::ScratchDatabase;

#[derive(Debug, Clone, Args)]
pub struct AnalyticsBench {
    /// Messages in the history (the goal is stated for 10,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Distinct users they are spread over.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Business numbers they are spread over.
    #[arg(long, default_value_t = 3)]
    pub numbers: u64,
    /// GetOverview calls timed.
    #[arg(long, default_value_t = 200)]
    pub queries: u32,
    /// Runs of the naive SQL baseline timed (each scans every message row).
    #[arg(long, default_value_t = 5)]
    pub baseline_runs: u32,
    /// Events analytics commits at once at most (its default).
    #[arg(long, default_value_t = 20_000)]
    pub batch: usize,
    /// The Postgres server; the bench creates (and drops) databases of its own on it.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    pub database_url: String,
}

pub async fn run(args: AnalyticsBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.database_url.starts_with("postgres"),
        "the bench needs Postgres: set --database-url or DATABASE_URL to a postgres:// URL"
    );
    let messaging_db = ScratchDatabase::create(&args.database_url).await?;
    let analytics_db = ScratchDatabase::create(&args.database_url).await?;
    let summary = measure(&args, &messaging_db.url, &analytics_db.url).await;
    messaging_db.drop_database().await?;
    analytics_db.drop_database().await?;
    // Last, so the JSON summary is the last line.
    println!("{}", summary?);
    Ok(())
}

/// Runs the bench on the two databases; answers the JSON summary line.
async fn measure(
    args: &AnalyticsBench,
    messaging_url: &str,
    analytics_url: &str,
) -> anyhow::Result<String> {
    println!(
        "wamesh bench analytics: {} messages over 30 days, {} users, {} numbers",
        args.messages, args.users, args.numbers
    );
    let stop = Shutdown::new();
    // messaging serves the event log; its migrations make the tables the history goes into.
    let messaging = Messaging::build(&MessagingConfig {
        database_url: messaging_url.to_owned(),
        max_db_connections: 4,
        ingest: wamesh_messaging::IngestConfig::default(),
        numbers: Vec::new(),
        send: wamesh_messaging::SendConfig {
            workers: 0,
            ..wamesh_messaging::SendConfig::default()
        },
    })
    .await
    .context("starting messaging")?;
    let messaging_listener = TcpListener::bind("127.0.0.1:0").await?;
    let messaging_addr = messaging_listener.local_addr()?;
    let messaging = tokio::spawn(messaging.serve(messaging_listener, stop.clone()));

    let started = Instant::now();
    let now_ms = wamesh_analytics::now_ms();
    let head = write_history(messaging_url, args, now_ms).await?;
    println!(
        "history:  written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let analytics = Analytics::build(AnalyticsConfig {
        database_url: analytics_url.to_owned(),
        max_db_connections: 8,
        messaging_url: format!("http://{messaging_addr}"),
        aggregation_interval_ms: 3_600_000,
        retention_days: 90,
        consumer: ConsumerConfig {
            max_batch: args.batch,
            ..ConsumerConfig::default()
        },
        alerts: wamesh_analytics::alerts::AlertConfig::default(),
        metrics_urls: Vec::new(),
    })
    .await
    .context("starting analytics")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let consuming = Instant::now();
    let analytics = tokio::spawn(analytics.serve(listener, stop.clone()));
    let mut client =
        AnalyticsClient::new(Channel::from_shared(format!("http://{addr}"))?.connect_lazy());
    wait_for_cursor(&mut client, head).await?;
    let consumed_s = consuming.elapsed().as_secs_f64();
    let events = client
        .get_consumer_status(pb::GetConsumerStatusRequest {})
        .await?
        .into_inner()
        .events_applied;
    let consumption = events as f64 / consumed_s;
    println!(
        "consume:  {events} events counted in {consumed_s:.1} s = {consumption:.0} events/s (goal: at least 50,000/s)"
    );

    let overview = time_overview(&mut client, args.queries).await?;
    let baseline = time_baseline(analytics_url, now_ms, args.baseline_runs).await?;
    let (p50, p99) = (quantile(&overview.1, 0.5), quantile(&overview.1, 0.99));
    let (b50, b99) = (quantile(&baseline.1, 0.5), quantile(&baseline.1, 0.99));
    let ratio = b50 / p50.max(1e-9);
    let o = &overview.0;
    println!(
        "overview: GetOverview(30d) x{} ({} errors): p50 {p50:.2} ms, p99 {p99:.2} ms; {} in, {} out, {} delivered, {} read, {} failed, {} active users",
        args.queries,
        overview.2,
        o.messages_in,
        o.messages_out,
        o.delivered,
        o.read,
        o.failed,
        o.active_users
    );
    println!(
        "baseline: the same numbers by SQL over {} message rows x{}: p50 {b50:.0} ms, p99 {b99:.0} ms; {} in, {} out, {} delivered, {} read, {} failed, {} users",
        baseline.0.rows,
        args.baseline_runs,
        baseline.0.messages_in,
        baseline.0.messages_out,
        baseline.0.delivered,
        baseline.0.read,
        baseline.0.failed,
        baseline.0.users
    );
    anyhow::ensure!(
        (o.messages_in, o.messages_out, o.delivered, o.read, o.failed)
            == (
                baseline.0.messages_in,
                baseline.0.messages_out,
                baseline.0.delivered,
                baseline.0.read,
                baseline.0.failed
            ),
        "the overview and the baseline disagree"
    );
    println!("ratio:    {ratio:.0}x (goal: p99 under 20 ms and at least 100x the naive aggregate)");
    // Both stop (closing their pools) before their databases are dropped.
    stop.cancel();
    for service in [analytics, messaging] {
        tokio::time::timeout(Duration::from_secs(30), service).await???;
    }
    let line = serde_json::json!({
        "name": "analytics",
        "messages": args.messages,
        "events": events,
        "events_per_s": round(consumption),
        "throughput_per_s": round(1000.0 / p50.max(1e-9)),
        "baseline_per_s": round(1000.0 / b50.max(1e-9)),
        "ratio": round(ratio),
        "p50_ms": round(p50),
        "p99_ms": round(p99),
        "baseline_p50_ms": round(b50),
        "baseline_p99_ms": round(b99),
        "queries": args.queries,
        "errors": overview.2,
    });
    Ok(line.to_string())
}

/// Writes the history straight into messaging's event log (one INSERT ... SELECT; message `m`'s
/// events numbered `3m + 1` on, so the log has gaps, which its readers allow) and moves its
/// head; answers the head. Message `m` (at an even spacing over the last 30 days, user
/// `m / 3 % users`, number `m % numbers`) is a user's message when `m % 3 == 0`, else
/// our send: a template (1 in 2, of 20) or text, accepted, then 2% failed (131026) and the rest
/// delivered after 0.5-3 s and, 3 in 5, read a minute later.
async fn write_history(url: &str, args: &AnalyticsBench, now_ms: i64) -> anyhow::Result<u64> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let span_ms: i64 = 30 * 86_400_000 - 3_600_000;
    let start_ms = now_ms - span_ms;
    let inserted = sqlx::query(
        "INSERT INTO event_log (seq, kind, committed_at_ms, business_phone_number_id, contact_id,
             wamid, message_id, outbound_id, type, status, error_code, template_name,
             pricing_category, timestamp_s)
         SELECT m * 3 + e.i + 1, e.kind, e.at, '10654035224292' || (m % $3),
             '1555' || lpad((m / 3 % $4)::text, 8, '0'), 'wamid.B' || m, NULL,
             CASE WHEN m % 3 = 0 THEN NULL ELSE m END, e.type, e.status, e.code,
             CASE WHEN m % 2 = 1 THEN 'template_' || (m % 20) END, e.pricing, e.at / 1000
         FROM generate_series(0, $1 - 1) AS m,
             LATERAL (SELECT $5 + m * ($2 / $1) AS t, (m * 7919) % 100 AS r) AS x,
             LATERAL (VALUES
                 (0, CASE WHEN m % 3 = 0 THEN 'message.received' ELSE 'send.accepted' END, x.t,
                     CASE WHEN m % 2 = 1 AND m % 3 <> 0 THEN 'template' ELSE 'text' END,
                     NULL::text, 0::bigint, NULL::text),
                 (1, 'status.updated', x.t + 500 + (x.r * 25),
                     NULL, CASE WHEN x.r < 2 THEN 'failed' ELSE 'delivered' END,
                     CASE WHEN x.r < 2 THEN 131026 ELSE 0 END,
                     CASE WHEN m % 2 = 1 THEN 'marketing' ELSE 'service' END),
                 (2, 'status.updated', x.t + 60000, NULL, 'read', 0::bigint, NULL)
             ) AS e(i, kind, at, type, status, code, pricing)
         WHERE (m % 3 <> 0 OR e.i = 0) AND (e.i < 2 OR (x.r >= 2 AND x.r < 62))",
    )
    .bind(args.messages as i64)
    .bind(span_ms)
    .bind(args.numbers as i64)
    .bind(args.users as i64)
    .bind(start_ms)
    .execute(&pool)
    .await
    .context("writing the history")?
    .rows_affected();
    let head: i64 = sqlx::query_scalar(
        "UPDATE event_log_head SET seq = (SELECT coalesce(max(seq), 0) FROM event_log) RETURNING seq",
    )
    .fetch_one(&pool)
    .await?;
    println!("history:  {inserted} events for {} messages", args.messages);
    sqlx::query("ANALYZE event_log").execute(&pool).await?;
    Ok(head as u64)
}

async fn wait_for_cursor(client: &mut AnalyticsClient<Channel>, events: u64) -> anyhow::Result<()> {
    let mut last = (Instant::now(), 0);
    loop {
        let status = client
            .get_consumer_status(pb::GetConsumerStatusRequest {})
            .await?
            .into_inner();
        if status.cursor >= events {
            return Ok(());
        }
        if status.cursor != last.1 {
            last = (Instant::now(), status.cursor);
        }
        anyhow::ensure!(
            last.0.elapsed() < Duration::from_secs(60),
            "analytics stopped counting at {} of {events} events",
            status.cursor
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The overview of the last 30 days, each answered call's time (ms), and how many calls failed
/// (a failed call is counted and left out of the times).
async fn time_overview(
    client: &mut AnalyticsClient<Channel>,
    queries: u32,
) -> anyhow::Result<(pb::Overview, Vec<f64>, u64)> {
    let request = || pb::GetOverviewRequest {
        period: Some(pb::Period {
            period: Some(pb::period::Period::Named("30d".into())),
        }),
        business_phone_number_id: String::new(),
    };
    // Warm-up: the connection, and Postgres' caches.
    let mut overview = client.get_overview(request()).await?.into_inner();
    for _ in 0..10 {
        overview = client.get_overview(request()).await?.into_inner();
    }
    let mut times = Vec::with_capacity(queries as usize);
    let mut errors = 0;
    for _ in 0..queries.max(1) {
        let t = Instant::now();
        match client.get_overview(request()).await {
            Ok(answer) => {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                overview = answer.into_inner();
            }
            Err(status) => {
                errors += 1;
                tracing::warn!(code = ?status.code(), "GetOverview failed");
            }
        }
    }
    anyhow::ensure!(!times.is_empty(), "every GetOverview call failed");
    Ok((overview, times, errors))
}

/// What the naive aggregate computes.
#[derive(Debug, Default)]
struct Naive {
    rows: i64,
    messages_in: u64,
    messages_out: u64,
    delivered: u64,
    read: u64,
    failed: u64,
    users: u64,
}

/// The same numbers by plain SQL over every message row of the period (the facts analytics
/// keeps: one row per message), each run's time (ms).
async fn time_baseline(url: &str, now_ms: i64, runs: u32) -> anyhow::Result<(Naive, Vec<f64>)> {
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    let to = (now_ms / 3_600_000 + 1) * 3_600_000;
    let from = to - 30 * 86_400_000;
    let mut naive = Naive::default();
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let (rows, messages_in, messages_out, delivered, read, failed, users, _p50, _p99): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            Option<f64>,
            Option<f64>,
        ) = sqlx::query_as(
            "SELECT count(*),
                 count(*) FILTER (WHERE direction = 'inbound'),
                 count(*) FILTER (WHERE direction = 'outbound' AND at_ms IS NOT NULL),
                 count(*) FILTER (WHERE direction = 'outbound' AND delivered_ms IS NOT NULL),
                 count(*) FILTER (WHERE direction = 'outbound' AND read_ms IS NOT NULL),
                 count(*) FILTER (WHERE failed_ms IS NOT NULL),
                 count(DISTINCT user_hash),
                 percentile_cont(0.5) WITHIN GROUP (ORDER BY delivered_ms - at_ms),
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY delivered_ms - at_ms)
             FROM facts WHERE coalesce(at_ms, failed_ms) >= $1 AND coalesce(at_ms, failed_ms) < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&pool)
        .await?;
        let _codes: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT error_code, count(*) FROM facts
             WHERE failed_ms IS NOT NULL AND coalesce(at_ms, failed_ms) >= $1
                 AND coalesce(at_ms, failed_ms) < $2
             GROUP BY error_code",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&pool)
        .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        naive = Naive {
            rows,
            messages_in: messages_in as u64,
            messages_out: messages_out as u64,
            delivered: delivered as u64,
            read: read as u64,
            failed: failed as u64,
            users: users as u64,
        };
    }
    Ok((naive, times))
}

fn quantile(times: &[f64], q: f64) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
