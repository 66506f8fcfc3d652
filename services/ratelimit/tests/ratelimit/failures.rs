//! Redis killed, stalled or restarted under load, on a Redis server of the test's own: each
//! degraded mode does what its configuration says, every answer is marked, nothing errors, and
//! decisions go back to Redis by themselves once it answers again.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use wamesh_proto::ratelimit::v1 as pb;
use wamesh_ratelimit::{DegradedMode, LimiterConfig};
use wamesh_testkit::RedisServer;

use crate::{Service, acquire, bucket, eventually, set_policy, token_bucket};

/// A refill so slow that it adds nothing while a test runs.
const SLOW: f64 = 1e-6;
/// Long enough that a busy machine does not trip it by accident, short against the stalls.
const TIMEOUT: Duration = Duration::from_millis(300);

async fn start(redis: &RedisServer, degraded: DegradedMode) -> Service {
    Service::start(
        Some(redis.url()),
        &wamesh_testkit::fresh_redis_prefix(),
        LimiterConfig {
            degraded,
            replicas: 2,
            timeout: TIMEOUT,
            ..LimiterConfig::default()
        },
    )
    .await
}

/// A bucket of capacity 10 given in the request itself, so its policy needs no store.
fn probe(key: &str) -> pb::BucketRequest {
    pb::BucketRequest {
        policy: Some(token_bucket(10.0, SLOW)),
        ..bucket(key, 1.0)
    }
}

/// Clients acquiring in a loop until stopped, keeping every answer (or error).
struct Load {
    answers: Arc<Mutex<Vec<Result<pb::AcquireResponse, tonic::Status>>>>,
    stop: wamesh_runtime::Shutdown,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(service: &Service) -> Self {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let stop = wamesh_runtime::Shutdown::new();
        let workers = (0..8)
            .map(|_| {
                let (mut client, answers, stop) = (service.client(), answers.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.is_cancelled() {
                        let answer = client
                            .acquire(pb::AcquireRequest {
                                scope: "waba-1".into(),
                                buckets: vec![bucket("throughput:load", 1.0)],
                            })
                            .await
                            .map(tonic::Response::into_inner);
                        answers.lock().await.push(answer);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            answers,
            stop,
            workers,
        }
    }

    async fn finish(self) -> Vec<pb::AcquireResponse> {
        self.stop.cancel();
        for worker in self.workers {
            worker.await.unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().await);
        answers
            .into_iter()
            .map(|a| a.expect("no acquire fails while Redis is down: it degrades"))
            .collect()
    }
}

/// Kills Redis under load, checks `while_down` on a fresh probe bucket, restarts Redis, and
/// waits for decisions to come back to it. Returns what the load saw.
async fn outage(mode: DegradedMode) -> Vec<pb::AcquireResponse> {
    let _ = wamesh_runtime::metrics::install();
    let mut redis = RedisServer::start();
    let service = start(&redis, mode).await;
    let mut client = service.client();
    set_policy(&mut client, "throughput:load", token_bucket(1e9, SLOW)).await;
    let up = acquire(&mut client, vec![probe("throughput:before")]).await;
    assert!(up.allowed && !up.degraded, "{up:?}");

    let load = Load::start(&service);
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    let down = eventually(
        Duration::from_secs(5),
        "answers are marked degraded",
        || {
            let mut client = client.clone();
            async move {
                let answer = acquire(&mut client, vec![probe("throughput:down")]).await;
                answer.degraded.then_some(answer)
            }
        },
    )
    .await;
    assert_eq!(down.degraded_mode, mode.as_str());
    match mode {
        DegradedMode::Closed => {
            assert!(!down.allowed, "closed: denied while Redis is down");
            assert_eq!(
                down.retry_after_us, 250_000,
                "closed: retry when the next probe may have found Redis"
            );
        }
        DegradedMode::Open => assert!(down.allowed, "open: allowed, uncounted"),
        DegradedMode::Local => {
            // The probe bucket holds 10; two replicas share it: 5 each. One was taken above.
            assert!(down.allowed);
            let mut admitted = 1;
            for _ in 0..10 {
                let answer = acquire(&mut client, vec![probe("throughput:down")]).await;
                assert!(answer.degraded);
                admitted += u32::from(answer.allowed);
            }
            assert_eq!(admitted, 5, "local: the limit divided by the replicas");
        }
    }
    let usage = client
        .get_usage(pb::GetUsageRequest {
            scope: "waba-1".into(),
            keys: vec!["throughput:load".into()],
            top: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(usage.degraded, "usage says it is not from Redis: {usage:?}");

    redis.restart();
    let back = eventually(
        Duration::from_secs(10),
        "decisions go back to Redis",
        || {
            let mut client = client.clone();
            async move {
                let answer = acquire(&mut client, vec![probe("throughput:after")]).await;
                (!answer.degraded).then_some(answer)
            }
        },
    )
    .await;
    assert!(back.allowed, "{back:?}");
    let answers = load.finish().await;

    let degraded: Vec<_> = answers.iter().filter(|a| a.degraded).collect();
    assert!(
        !degraded.is_empty() && degraded.len() < answers.len(),
        "the load saw Redis up and down"
    );
    assert!(degraded.iter().all(|a| a.degraded_mode == mode.as_str()));
    let metrics = wamesh_runtime::metrics::install().render();
    let label = format!("degraded=\"{}\"", mode.as_str());
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wamesh_ratelimit_decisions_total") && l.contains(&label)),
        "degraded decisions are counted in metrics"
    );
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_denies_while_redis_is_down_and_recovers() {
    let answers = outage(DegradedMode::Closed).await;
    assert!(answers.iter().filter(|a| a.degraded).all(|a| !a.allowed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_allows_while_redis_is_down_and_recovers() {
    let answers = outage(DegradedMode::Open).await;
    assert!(answers.iter().filter(|a| a.degraded).all(|a| a.allowed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_buckets_take_over_at_a_share_of_the_limit_and_redis_takes_back() {
    let answers = outage(DegradedMode::Local).await;
    let denied: Vec<_> = answers
        .iter()
        .filter(|a| a.degraded && !a.allowed)
        .collect();
    assert!(denied.is_empty(), "{denied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_costs_one_timeout_then_answers_are_degraded_until_it_resumes() {
    let redis = RedisServer::start();
    let service = start(&redis, DegradedMode::Closed).await;
    let mut client = service.client();
    assert!(
        !acquire(&mut client, vec![probe("throughput:k")])
            .await
            .degraded
    );
    assert_eq!(redis.command("CLIENT PAUSE 1500 ALL").unwrap(), "+OK");
    let started = Instant::now();
    let stalled = acquire(&mut client, vec![probe("throughput:k")]).await;
    assert!(stalled.degraded && !stalled.allowed, "{stalled:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after the {TIMEOUT:?} timeout, not the 1.5 s stall: {:?}",
        started.elapsed()
    );
    // While it stalls, decisions do not wait on it at all.
    let started = Instant::now();
    let next = acquire(&mut client, vec![probe("throughput:k")]).await;
    assert!(next.degraded && started.elapsed() < TIMEOUT, "{next:?}");
    let back = eventually(Duration::from_secs(10), "Redis resumes", || {
        let mut client = client.clone();
        async move {
            let answer = acquire(&mut client, vec![probe("throughput:k")]).await;
            (!answer.degraded).then_some(answer)
        }
    })
    .await;
    assert!(back.allowed);
}

#[tokio::test]
async fn flushed_scripts_are_loaded_again() {
    let redis = RedisServer::start();
    let service = start(&redis, DegradedMode::Closed).await;
    let mut client = service.client();
    assert!(
        acquire(&mut client, vec![probe("throughput:k")])
            .await
            .allowed
    );
    assert_eq!(redis.command("SCRIPT FLUSH").unwrap(), "+OK");
    let answer = acquire(&mut client, vec![probe("throughput:k")]).await;
    assert!(
        answer.allowed && !answer.degraded,
        "NOSCRIPT recovered: {answer:?}"
    );
    let remaining = answer.buckets[0].remaining;
    assert!(
        (remaining - 8.0).abs() < 1e-3,
        "the same bucket, taken twice: {remaining}"
    );
}

#[tokio::test]
async fn a_malformed_bucket_fails_its_own_acquire_and_does_not_degrade_the_rest() {
    let redis = RedisServer::start();
    let prefix = wamesh_testkit::fresh_redis_prefix();
    let service = Service::start(
        Some(redis.url()),
        &prefix,
        LimiterConfig {
            timeout: TIMEOUT,
            ..LimiterConfig::default()
        },
    )
    .await;
    let mut client = service.client();
    // Something else wrote a plain string where a bucket lives.
    let key = format!("{prefix}{{waba-1}}:tb:throughput:broken");
    assert_eq!(redis.command(&format!("SET {key} oops")).unwrap(), "+OK");
    let status = client
        .acquire(pb::AcquireRequest {
            scope: "waba-1".into(),
            buckets: vec![probe("throughput:broken")],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert!(
        !status.message().contains("oops"),
        "the cause is logged, not sent"
    );
    let fine = acquire(&mut client, vec![probe("throughput:fine")]).await;
    assert!(fine.allowed && !fine.degraded, "Redis is up: {fine:?}");
    // Acquires that share a script call with the broken one are decided all the same: on
    // one thread, all 20 are queued before the batcher runs, so they go as one batch.
    let backend = wamesh_ratelimit::backend::redis::RedisBackend::connect(&redis.url(), &prefix)
        .await
        .unwrap();
    let buckets: Vec<_> = (0..20)
        .map(|n| {
            let key = if n == 10 {
                "throughput:broken".to_owned()
            } else {
                format!("throughput:ok{n}")
            };
            vec![wamesh_ratelimit::model::Bucket {
                key,
                policy: wamesh_ratelimit::model::Policy::TokenBucket {
                    capacity: 10.0,
                    refill_per_second: SLOW,
                },
                cost: 1.0,
                member: String::new(),
                check_only: false,
            }]
        })
        .collect();
    use wamesh_ratelimit::backend::Backend as _;
    let answers =
        futures::future::join_all(buckets.iter().map(|b| backend.acquire("waba-1", b))).await;
    for (n, answer) in answers.iter().enumerate() {
        match answer {
            Err(e) => assert!(n == 10 && !e.unreachable, "{n}: {e}"),
            Ok(d) => assert!(n != 10 && d.allowed, "{n}: {d:?}"),
        }
    }
}
