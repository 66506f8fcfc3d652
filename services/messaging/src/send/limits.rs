//! messaging's client of the rate-limit service. Send workers decide often, so every acquire
//! goes over ONE long-lived `AcquireStream` (a message each way per decision instead of a
//! unary call's headers, stream set-up and trailers); `Penalize` is rare and unary.
//!
//! A pump task owns the stream: it tags each request with an id, matches answers back to their
//! callers, keeps at most [`MAX_IN_FLIGHT`] outstanding, and when the stream breaks fails what
//! was outstanding (the caller defers those sends) and opens a new one for the next request.
use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use wamesh_proto::ratelimit::v1 as pb;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use wamesh_telemetry::GrpcTraceInterceptor;

/// Acquires outstanding on the stream at most (rate-limit decides up to 64 per stream at once).
const MAX_IN_FLIGHT: usize = 256;
/// How long an acquire may wait for its answer before it counts as rate-limit being down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no decision came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// rate-limit could not be asked (down, slow, the stream broke): try again later.
    #[error("rate-limit is unavailable: {0}")]
    Unavailable(String),
    /// rate-limit refused the request itself (a bad key or policy): a bug or a misconfiguration.
    #[error("rate-limit refused the request: {0}")]
    Refused(String),
}

/// What rate-limit decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// When denied: until the whole request would succeed.
    pub retry_after: Duration,
    /// rate-limit could not ask its store and followed its degraded mode.
    pub degraded: bool,
}

type Reply = oneshot::Sender<Result<Decision, LimitsError>>;

/// rate-limit's client; unary calls carry the caller's trace context.
type Client = RateLimiterClient<InterceptedService<Channel, GrpcTraceInterceptor>>;

/// A cheap, cloneable handle; the stream lives in a pump task until every handle is dropped.
#[derive(Clone)]
pub struct Limits {
    requests: mpsc::Sender<(pb::AcquireStreamRequest, Reply)>,
    client: Client,
}

impl Limits {
    /// Dials rate-limit lazily (messaging starts while rate-limit is still down).
    pub fn connect_lazy(url: &str) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect_lazy();
        let client = RateLimiterClient::with_interceptor(channel, GrpcTraceInterceptor);
        let (requests, queue) = mpsc::channel(MAX_IN_FLIGHT);
        tokio::spawn(pump(client.clone(), queue));
        Ok(Self { requests, client })
    }

    /// Takes every bucket of `acquire` or none. `traceparent` (may be empty) traces the
    /// decision under the caller's span.
    pub async fn acquire(
        &self,
        acquire: pb::AcquireRequest,
        traceparent: String,
    ) -> Result<Decision, LimitsError> {
        let (reply, answer) = oneshot::channel();
        let request = pb::AcquireStreamRequest {
            id: 0, // the pump numbers them
            acquire: Some(acquire),
            traceparent,
        };
        let asked = async {
            self.requests
                .send((request, reply))
                .await
                .map_err(|_| LimitsError::Unavailable("the client stopped".into()))?;
            answer
                .await
                .map_err(|_| LimitsError::Unavailable("the stream broke".into()))?
        };
        tokio::time::timeout(ACQUIRE_TIMEOUT, asked)
            .await
            .map_err(|_| {
                LimitsError::Unavailable(format!("no answer within {ACQUIRE_TIMEOUT:?}"))
            })?
    }

    /// Meta said 130429 or 131056 anyway: drains the bucket, or holds it closed for `hold`.
    pub async fn penalize(
        &self,
        scope: &str,
        key: &str,
        hold: Duration,
        meta_error_code: i64,
    ) -> Result<(), LimitsError> {
        let mut client = self.client.clone();
        let call = client.penalize(pb::PenalizeRequest {
            scope: scope.to_owned(),
            key: key.to_owned(),
            hold_ms: hold.as_millis() as u64,
            meta_error_code,
        });
        match tokio::time::timeout(ACQUIRE_TIMEOUT, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status_error(status.code(), status.message())),
            Err(_) => Err(LimitsError::Unavailable("penalize timed out".into())),
        }
    }
}

/// Owns the stream: opens it when there is something to ask, and again after it broke.
async fn pump(mut client: Client, mut queue: mpsc::Receiver<(pb::AcquireStreamRequest, Reply)>) {
    let mut next_id: u64 = 0;
    while let Some(first) = queue.recv().await {
        let (to_server, outgoing) = mpsc::channel(MAX_IN_FLIGHT);
        let mut answers = match client.acquire_stream(ReceiverStream::new(outgoing)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let _ = first
                    .1
                    .send(Err(LimitsError::Unavailable(status.message().to_owned())));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut pending: HashMap<u64, Reply> = HashMap::new();
        let mut next = Some(first);
        loop {
            if let Some((mut request, reply)) = next.take() {
                next_id += 1;
                request.id = next_id;
                if to_server.send(request).await.is_err() {
                    let _ = reply.send(Err(LimitsError::Unavailable("the stream closed".into())));
                    break;
                }
                pending.insert(next_id, reply);
            }
            tokio::select! {
                asked = queue.recv(), if pending.len() < MAX_IN_FLIGHT => match asked {
                    Some(request) => next = Some(request),
                    None => break, // every handle is gone
                },
                answer = answers.message() => match answer {
                    Ok(Some(answer)) => {
                        if let Some(reply) = pending.remove(&answer.id) {
                            let _ = reply.send(decision(answer.result));
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(LimitsError::Unavailable("the stream broke".into())));
        }
    }
}

fn decision(result: Option<pb::acquire_stream_response::Result>) -> Result<Decision, LimitsError> {
    match result {
        Some(pb::acquire_stream_response::Result::Decision(d)) => Ok(Decision {
            allowed: d.allowed,
            retry_after: Duration::from_micros(d.retry_after_us),
            degraded: d.degraded,
        }),
        Some(pb::acquire_stream_response::Result::Error(e)) => {
            Err(status_error(tonic::Code::from(e.code), &e.message))
        }
        None => Err(LimitsError::Unavailable("an empty answer".into())),
    }
}

fn status_error(code: tonic::Code, message: &str) -> LimitsError {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
            LimitsError::Refused(message.to_owned())
        }
        _ => LimitsError::Unavailable(message.to_owned()),
    }
}
