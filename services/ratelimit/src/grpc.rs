//! `wamesh.ratelimit.v1.RateLimiter` over the [`Limiter`]: decode, call, encode. Proto types
//! stop here.
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;
use wamesh_proto::ratelimit::v1 as pb;
use wamesh_proto::ratelimit::v1::rate_limiter_server::RateLimiter;

use crate::limiter::{BucketRequest, LimitError, Limiter};
use crate::model::{Policy, Usage};

/// Acquires of one stream decided at once at most; the next waits for the oldest answer.
const STREAM_IN_FLIGHT: usize = 64;

pub struct RateLimitService {
    limiter: Arc<Limiter>,
}

impl RateLimitService {
    pub fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }
}

impl From<LimitError> for Status {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::InvalidArgument(m) => Status::invalid_argument(m),
            LimitError::NotFound(m) => Status::not_found(m),
            LimitError::Unavailable(m) => {
                tracing::warn!(error = %m, "rate-limit store unavailable");
                Status::unavailable("the rate-limit store is unavailable; retry later")
            }
            LimitError::Store(m) => {
                tracing::error!(error = %m, "rate-limit store failed");
                Status::internal("the rate-limit store failed this request; see the rate-limit log")
            }
        }
    }
}

#[tonic::async_trait]
impl RateLimiter for RateLimitService {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        Ok(Response::new(
            decide(&self.limiter, request.into_inner()).await?,
        ))
    }

    type AcquireStreamStream =
        Pin<Box<dyn Stream<Item = Result<pb::AcquireStreamResponse, Status>> + Send>>;

    async fn acquire_stream(
        &self,
        request: Request<Streaming<pb::AcquireStreamRequest>>,
    ) -> Result<Response<Self::AcquireStreamStream>, Status> {
        let limiter = self.limiter.clone();
        let answers = request
            .into_inner()
            .map(move |request| {
                let limiter = limiter.clone();
                async move {
                    // A broken request stream ends the answers with its status.
                    Ok(decide_streamed(&limiter, request?).await)
                }
            })
            .buffered(STREAM_IN_FLIGHT);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        let request = request.into_inner();
        let policy = if request.remove {
            None
        } else {
            let policy = request
                .policy
                .ok_or_else(|| Status::invalid_argument("give a policy, or set `remove`"))?;
            Some(policy_from_proto(policy)?)
        };
        self.limiter.set_policy(&request.selector, policy).await?;
        Ok(Response::new(pb::SetPolicyResponse {}))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let resolved = self.limiter.get_policy(&request.into_inner().key).await?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(policy_to_proto(&resolved.policy)),
            source: resolved.source,
        }))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::GetUsageResponse>, Status> {
        let request = request.into_inner();
        let top = if request.top == 0 {
            10
        } else {
            request.top.min(1_000) as usize
        };
        let (usage, degraded) = self
            .limiter
            .usage(&request.scope, &request.keys, top)
            .await?;
        let warning = self.limiter.config().warning;
        Ok(Response::new(pb::GetUsageResponse {
            buckets: usage
                .into_iter()
                .map(|u| usage_to_proto(u, warning))
                .collect(),
            warning_threshold: warning,
            degraded,
        }))
    }

    async fn penalize(
        &self,
        request: Request<pb::PenalizeRequest>,
    ) -> Result<Response<pb::PenalizeResponse>, Status> {
        let request = request.into_inner();
        let until = self
            .limiter
            .penalize(
                &request.scope,
                &request.key,
                Duration::from_millis(request.hold_ms),
                request.meta_error_code,
            )
            .await?;
        Ok(Response::new(pb::PenalizeResponse {
            held_until_unix_us: until,
        }))
    }
}

/// One acquire, as both RPCs answer it.
async fn decide(
    limiter: &Limiter,
    request: pb::AcquireRequest,
) -> Result<pb::AcquireResponse, Status> {
    let buckets = request
        .buckets
        .into_iter()
        .map(|b| {
            Ok(BucketRequest {
                policy: b.policy.map(policy_from_proto).transpose()?,
                key: b.key,
                cost: b.cost,
                member: b.member,
                check_only: b.check_only,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let outcome = limiter.acquire(&request.scope, buckets).await?;
    let decision = outcome.decision;
    Ok(pb::AcquireResponse {
        allowed: decision.allowed,
        retry_after_us: decision.retry_after_us,
        buckets: decision
            .levels
            .into_iter()
            .map(|l| pb::BucketLevel {
                key: l.key,
                remaining: l.remaining,
                capacity: l.capacity,
                limiting: l.limiting,
                retry_after_us: l.retry_after_us,
                held_until_unix_us: l.held_until_us,
            })
            .collect(),
        degraded: outcome.degraded.is_some(),
        degraded_mode: outcome
            .degraded
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
    })
}

/// One acquire of a stream: its failure is its answer, not the stream's end. Traced under the
/// caller's span when it sent one (the stream's own server span lasts as long as the stream).
async fn decide_streamed(
    limiter: &Limiter,
    request: pb::AcquireStreamRequest,
) -> pb::AcquireStreamResponse {
    let span = if request.traceparent.is_empty() {
        tracing::Span::none()
    } else {
        let span = tracing::info_span!("ratelimit.acquire", otel.kind = "server");
        wamesh_telemetry::set_parent_from_traceparent(&span, &request.traceparent);
        span
    };
    let decided = match request.acquire {
        Some(acquire) => decide(limiter, acquire).instrument(span).await,
        None => Err(Status::invalid_argument(
            "acquire: give the request to decide",
        )),
    };
    let result = match decided {
        Ok(decision) => pb::acquire_stream_response::Result::Decision(decision),
        Err(status) => pb::acquire_stream_response::Result::Error(pb::AcquireError {
            code: status.code() as i32,
            message: status.message().to_owned(),
        }),
    };
    pb::AcquireStreamResponse {
        id: request.id,
        result: Some(result),
    }
}

fn policy_from_proto(policy: pb::Policy) -> Result<Policy, Status> {
    match policy.kind {
        Some(pb::policy::Kind::TokenBucket(t)) => Ok(Policy::TokenBucket {
            capacity: t.capacity,
            refill_per_second: t.refill_per_second,
        }),
        Some(pb::policy::Kind::DistinctWindow(w)) => Ok(Policy::DistinctWindow {
            limit: w.limit,
            window_ms: w.window_ms,
        }),
        None => Err(Status::invalid_argument(
            "a policy is a token_bucket or a distinct_window",
        )),
    }
}

pub fn policy_to_proto(policy: &Policy) -> pb::Policy {
    let kind = match *policy {
        Policy::TokenBucket {
            capacity,
            refill_per_second,
        } => pb::policy::Kind::TokenBucket(pb::TokenBucket {
            capacity,
            refill_per_second,
        }),
        Policy::DistinctWindow { limit, window_ms } => {
            pb::policy::Kind::DistinctWindow(pb::DistinctWindow { limit, window_ms })
        }
    };
    pb::Policy { kind: Some(kind) }
}

fn usage_to_proto(usage: Usage, warning: f64) -> pb::BucketUsage {
    let ratio = usage.ratio();
    pb::BucketUsage {
        usage_ratio: ratio,
        warning: ratio >= warning,
        scope: usage.scope,
        key: usage.key,
        level: usage.level,
        capacity: usage.capacity,
        time_to_full_us: usage.time_to_full_us,
        held_until_unix_us: usage.held_until_us,
    }
}
