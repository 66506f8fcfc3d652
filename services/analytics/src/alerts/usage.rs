//! Asking rate-limit (`RateLimiter/GetUsage`) for its most used buckets.
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use wamesh_proto::ratelimit::v1 as pb;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use wamesh_telemetry::GrpcTraceInterceptor;

/// How many of the most used buckets are asked for.
pub const TOP_BUCKETS: u32 = 20;

/// A `GetUsage` slower than this counts as rate-limit not answering.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One bucket's usage, as the alerts need it.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketUsage {
    pub scope: String,
    pub key: String,
    /// Level / capacity, 0..1.
    pub usage_ratio: f64,
}

impl BucketUsage {
    /// The subject of its alert: `scope/key`.
    pub fn subject(&self) -> String {
        format!("{}/{}", self.scope, self.key)
    }
}

/// Why rate-limit's usage could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("rate-limit did not answer GetUsage: {0}")]
    Call(#[from] tonic::Status),
    #[error("rate-limit answered from its degraded mode (its store is unreachable)")]
    Degraded,
}

/// rate-limit's client, dialled lazily (analytics starts whether rate-limit is up or not).
#[derive(Clone)]
pub struct RateLimitProbe {
    client: RateLimiterClient<InterceptedService<Channel, GrpcTraceInterceptor>>,
}

impl RateLimitProbe {
    pub fn connect_lazy(url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            client: RateLimiterClient::with_interceptor(channel, GrpcTraceInterceptor),
        })
    }

    /// The [`TOP_BUCKETS`] most used buckets of every scope. An answer rate-limit gave from
    /// its degraded mode is an error: it does not know its buckets' levels then.
    pub async fn usage(&self) -> Result<Vec<BucketUsage>, UsageError> {
        let answer = self
            .client
            .clone()
            .get_usage(pb::GetUsageRequest {
                scope: String::new(),
                keys: Vec::new(),
                top: TOP_BUCKETS,
            })
            .await?
            .into_inner();
        if answer.degraded {
            return Err(UsageError::Degraded);
        }
        Ok(answer
            .buckets
            .into_iter()
            .map(|b| BucketUsage {
                scope: b.scope,
                key: b.key,
                usage_ratio: b.usage_ratio,
            })
            .collect())
    }
}
