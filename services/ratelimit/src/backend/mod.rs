//! Where buckets live: Redis in production ([`redis::RedisBackend`]: one Lua script call per batch of decisions,
//! Redis `TIME` as the clock), memory for the embedded default and the degraded local mode
//! ([`memory::MemoryBackend`], with an injectable clock). Both keep the same numbers; the
//! conformance suite (`tests/conformance.rs`) runs against both.
pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Bucket, BucketId, Decision, Micros, Policy, Usage};

/// The backend failed a call: it could not be reached or answer in time (`unreachable`: the
/// limiter's degraded mode decides), or it answered with an error about what it holds (a
/// malformed bucket: that call alone fails).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    pub unreachable: bool,
}

impl BackendError {
    /// The backend could not be reached or did not answer.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unreachable: true,
        }
    }

    /// The backend answered, with an error or an answer that makes no sense.
    pub fn bad_answer(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unreachable: false,
        }
    }
}

impl From<::redis::RedisError> for BackendError {
    fn from(e: ::redis::RedisError) -> Self {
        use ::redis::{ErrorKind, ServerErrorKind};
        // Redis ran the command and refused it (a Lua error, WRONGTYPE...), or answered
        // something that does not parse: Redis is up, what it holds is wrong.
        let answered = matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ResponseError)
                | ErrorKind::Extension
                | ErrorKind::Parse
                | ErrorKind::UnexpectedReturnType
        );
        Self {
            message: format!("redis: {e}"),
            unreachable: !answered,
        }
    }
}

#[async_trait]
pub trait Backend: Send + Sync {
    /// `redis` or `memory`.
    fn name(&self) -> &'static str;

    /// Debits every bucket or none (see [`crate::model::token_bucket`] and the distinct window
    /// rules in the module docs of [`memory`]).
    async fn acquire(&self, scope: &str, buckets: &[Bucket]) -> Result<Decision, BackendError>;

    /// Empties a token bucket of this capacity and refill and keeps it closed (no refill) for
    /// `hold`. Answers the end of the hold (Unix µs). A longer hold already in place stays.
    async fn penalize(
        &self,
        scope: &str,
        key: &str,
        capacity: f64,
        refill_per_second: f64,
        hold: Duration,
    ) -> Result<Micros, BackendError>;

    /// How full the given buckets are, without changing them.
    async fn usage(
        &self,
        scope: &str,
        buckets: &[(String, Policy)],
    ) -> Result<Vec<Usage>, BackendError>;

    /// Buckets that exist (a bucket at rest, full or empty, may be gone), at most `limit`.
    async fn list(&self, limit: usize) -> Result<Vec<BucketId>, BackendError>;

    /// The stored policy rules (selector, policy) and their version.
    async fn load_policies(&self) -> Result<(u64, Vec<(String, Policy)>), BackendError>;

    /// The version of the stored rules: it changes with every `store_policy`.
    async fn policies_version(&self) -> Result<u64, BackendError>;

    /// Stores (or with `None` removes) a selector's rule and bumps the version.
    async fn store_policy(
        &self,
        selector: &str,
        policy: Option<&Policy>,
    ) -> Result<(), BackendError>;

    /// One round trip, for health checks.
    async fn ping(&self) -> Result<(), BackendError>;
}
