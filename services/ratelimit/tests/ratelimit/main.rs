//! rate-limit's tests, one binary: the backend conformance suite (memory and real Redis), the
//! gRPC service on port 0, exactness under concurrency across two replicas, and what happens
//! when Redis dies, stalls or comes back.
mod conformance;
mod exactness;
mod failures;
mod grpc;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh_proto::ratelimit::v1 as pb;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use wamesh_ratelimit::{LimiterConfig, RateLimit, RateLimitConfig};
use wamesh_runtime::Shutdown;

/// One rate-limit service on port 0; stopped when dropped.
pub struct Service {
    pub addr: SocketAddr,
    stop: Shutdown,
}

impl Service {
    /// Over the shared test Redis, under `prefix`. Redis may take its time (a debug build on a
    /// machine busy with every other test): only the failure tests exercise the timeout.
    pub async fn on_shared_redis(prefix: &str) -> Self {
        Self::start(
            Some(wamesh_testkit::redis_url()),
            prefix,
            LimiterConfig {
                timeout: std::time::Duration::from_secs(5),
                ..LimiterConfig::default()
            },
        )
        .await
    }

    pub async fn start(redis_url: Option<String>, prefix: &str, limiter: LimiterConfig) -> Self {
        let service = RateLimit::build(&RateLimitConfig {
            redis_url,
            redis_prefix: prefix.to_owned(),
            limiter,
        })
        .await
        .expect("Redis is needed for this test (scripts/test.sh starts it)");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Shutdown::new();
        tokio::spawn(service.serve(listener, stop.clone()));
        Self { addr, stop }
    }

    /// A client on a connection of its own.
    pub fn client(&self) -> RateLimiterClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy();
        RateLimiterClient::new(channel)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn bucket(key: &str, cost: f64) -> pb::BucketRequest {
    pb::BucketRequest {
        key: key.into(),
        cost,
        ..Default::default()
    }
}

pub fn token_bucket(capacity: f64, refill_per_second: f64) -> pb::Policy {
    pb::Policy {
        kind: Some(pb::policy::Kind::TokenBucket(pb::TokenBucket {
            capacity,
            refill_per_second,
        })),
    }
}

/// Sets `selector`'s policy through `client`.
pub async fn set_policy(
    client: &mut RateLimiterClient<Channel>,
    selector: &str,
    policy: pb::Policy,
) {
    client
        .set_policy(pb::SetPolicyRequest {
            selector: selector.into(),
            policy: Some(policy),
            remove: false,
        })
        .await
        .unwrap();
}

/// Acquires `buckets` in the scope `waba-1`.
pub async fn acquire(
    client: &mut RateLimiterClient<Channel>,
    buckets: Vec<pb::BucketRequest>,
) -> pb::AcquireResponse {
    client
        .acquire(pb::AcquireRequest {
            scope: "waba-1".into(),
            buckets,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Polls `check` until it gives a value, for at most `within`.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
