//! The limiter: checks requests, resolves policies, asks the backend, and decides what happens
//! when the backend (Redis) cannot answer in time.
//!
//! Degraded modes (`WAMESH_RATELIMIT_DEGRADED`), every answer then marked `degraded`:
//! - `closed` (the default: a send that cannot be counted waits): denied, retry after the
//!   probe interval;
//! - `open`: allowed, uncounted;
//! - `local`: buckets in this process, each limit divided by `WAMESH_RATELIMIT_REPLICAS`, so
//!   the replicas together stay within it.
//!
//! After a failure the backend is not asked again until a background probe reaches it
//! (every [`PROBE_INTERVAL`]), so a dead Redis costs no timeout per decision.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use crate::backend::memory::{MemoryBackend, SystemClock};
use crate::backend::{Backend, BackendError};
use crate::model::{Bucket, Decision, Level, Policy, Usage};
use crate::policy::{KINDS, PolicyTable, Resolved, kind_of};

/// How often a down backend is probed, and how often other replicas' policy changes are read.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const POLICY_REFRESH: Duration = Duration::from_millis(500);
/// Keys, scopes and selectors longer than this are refused.
const MAX_NAME: usize = 512;
/// Buckets in one acquire at most.
const MAX_BUCKETS: usize = 16;
/// Buckets a usage report over "the most used" looks at, at most (the first ones by scope and
/// key; idle buckets expire, so this is the live set unless it is very large).
const SCAN_LIMIT: usize = 10_000;
/// Buckets per usage script call.
const USAGE_CHUNK: usize = 200;

/// What to do when the backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DegradedMode {
    Closed,
    Open,
    Local,
}

impl DegradedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::Local => "local",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    pub degraded: DegradedMode,
    /// Replicas sharing the limits (the local mode's divisor).
    pub replicas: u32,
    /// A backend call slower than this counts as a failure.
    pub timeout: Duration,
    /// Usage ratio from which a bucket is flagged (`MONITORING_RATE_LIMIT_WARNING`).
    pub warning: f64,
    /// How often the usage gauges of `/metrics` are brought up to date (a scan of the buckets).
    pub usage_metrics_interval: Duration,
}

impl Default for LimiterConfig {
    fn default() -> Self {
        Self {
            degraded: DegradedMode::Closed,
            replicas: 1,
            timeout: Duration::from_millis(100),
            warning: 0.8,
            usage_metrics_interval: Duration::from_secs(10),
        }
    }
}

/// Why a request was refused; the message names the problem.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the rate-limit store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered with an error about what it holds (a malformed bucket).
    #[error("the rate-limit store failed: {0}")]
    Store(String),
}

/// One bucket of a request as the caller gave it.
#[derive(Debug, Clone, Default)]
pub struct BucketRequest {
    pub key: String,
    pub cost: f64,
    pub member: String,
    pub check_only: bool,
    pub policy: Option<Policy>,
}

/// A decision, and whether it was made without the backend.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub decision: Decision,
    pub degraded: Option<DegradedMode>,
}

pub struct Limiter {
    backend: Arc<dyn Backend>,
    local: MemoryBackend,
    policies: RwLock<(u64, PolicyTable)>,
    backend_up: AtomicBool,
    config: LimiterConfig,
}

impl Limiter {
    /// Loads the stored policies (the backend must answer now) and starts the background
    /// probe and policy refresh, which stop when the limiter is dropped.
    pub async fn start(
        backend: Arc<dyn Backend>,
        config: LimiterConfig,
    ) -> Result<Arc<Self>, LimitError> {
        let (version, rules) = backend.load_policies().await.map_err(unavailable)?;
        let limiter = Arc::new(Self {
            backend,
            local: MemoryBackend::new(Box::new(SystemClock::default())),
            policies: RwLock::new((version, PolicyTable::from_rules(rules))),
            backend_up: AtomicBool::new(true),
            config,
        });
        tokio::spawn(maintain(Arc::downgrade(&limiter)));
        tokio::spawn(report_usage(Arc::downgrade(&limiter)));
        Ok(limiter)
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    pub fn config(&self) -> &LimiterConfig {
        &self.config
    }

    /// Debits every bucket or none.
    pub async fn acquire(
        &self,
        scope: &str,
        requests: Vec<BucketRequest>,
    ) -> Result<Outcome, LimitError> {
        let scope = checked_scope(scope)?;
        let (buckets, labels) = self.buckets(requests).await?;
        let started = Instant::now();
        let outcome = if self.backend_up.load(Ordering::Relaxed) {
            match self.call(self.backend.acquire(scope, &buckets)).await {
                Ok(decision) => Ok(Outcome {
                    decision,
                    degraded: None,
                }),
                Err(e) if e.unreachable => {
                    self.mark_down(&e);
                    self.degraded(scope, &buckets).await
                }
                Err(e) => Err(unavailable(e)),
            }
        } else {
            self.degraded(scope, &buckets).await
        };
        metrics::histogram!("wamesh_ratelimit_decision_seconds")
            .record(started.elapsed().as_secs_f64());
        if let Ok(outcome) = &outcome {
            record(outcome, &labels);
        }
        outcome
    }

    /// Sets or removes a selector's rule, on every replica (through the backend).
    pub async fn set_policy(
        &self,
        selector: &str,
        policy: Option<Policy>,
    ) -> Result<(), LimitError> {
        if selector.is_empty() || selector == "*" || selector.len() > MAX_NAME {
            return Err(LimitError::InvalidArgument(format!(
                "selector must be a key or a prefix ending in `*` (1 to {MAX_NAME} characters, not `*` alone)"
            )));
        }
        if let Some(policy) = &policy {
            policy.check().map_err(|e| {
                LimitError::InvalidArgument(format!("policy for `{selector}`: {e}"))
            })?;
        }
        self.call(self.backend.store_policy(selector, policy.as_ref()))
            .await
            .map_err(unavailable)?;
        let mut policies = self.policies.write().await;
        policies.1.set(selector, policy);
        tracing::info!(
            selector = PolicyTable::metric_label(selector),
            "rate-limit policy changed"
        );
        Ok(())
    }

    pub async fn get_policy(&self, key: &str) -> Result<Resolved, LimitError> {
        self.policies
            .read()
            .await
            .1
            .resolve(key)
            .ok_or_else(|| no_policy(key))
    }

    /// Levels of the given keys, or (no keys) of the `top` most used buckets.
    pub async fn usage(
        &self,
        scope: &str,
        keys: &[String],
        top: usize,
    ) -> Result<(Vec<Usage>, bool), LimitError> {
        let table = self.policies.read().await.1.clone();
        let resolve = |key: &str| {
            table
                .resolve(key)
                .map(|r| (key.to_owned(), r.policy))
                .ok_or_else(|| no_policy(key))
        };
        let backend: &dyn Backend = if self.backend_up.load(Ordering::Relaxed) {
            self.backend.as_ref()
        } else {
            &self.local
        };
        let degraded = !self.backend_up.load(Ordering::Relaxed);
        if !keys.is_empty() {
            let scope = checked_scope(scope)?;
            let buckets = keys
                .iter()
                .map(|k| resolve(k))
                .collect::<Result<Vec<_>, _>>()?;
            let usage = self
                .call(backend.usage(scope, &buckets))
                .await
                .map_err(unavailable)?;
            return Ok((usage, degraded));
        }
        let ids = self
            .call(backend.list(SCAN_LIMIT))
            .await
            .map_err(unavailable)?;
        // One script call per scope and chunk (a scope's keys share a Redis Cluster slot).
        let mut by_scope: BTreeMap<String, Vec<(String, Policy)>> = BTreeMap::new();
        for id in ids {
            if let Ok(bucket) = resolve(&id.key) {
                by_scope.entry(id.scope).or_default().push(bucket);
            }
        }
        let mut all = Vec::new();
        for (scope, buckets) in by_scope {
            for chunk in buckets.chunks(USAGE_CHUNK) {
                all.extend(
                    self.call(backend.usage(&scope, chunk))
                        .await
                        .map_err(unavailable)?,
                );
            }
        }
        all.sort_by(|a, b| {
            b.ratio()
                .total_cmp(&a.ratio())
                .then_with(|| a.key.cmp(&b.key))
        });
        all.truncate(top.max(1));
        Ok((all, degraded))
    }

    /// Drains a token bucket and holds it closed (Meta answered 130429 or 131056).
    pub async fn penalize(
        &self,
        scope: &str,
        key: &str,
        hold: Duration,
        code: i64,
    ) -> Result<u64, LimitError> {
        let scope = checked_scope(scope)?;
        let (policy, label) = self
            .policies
            .read()
            .await
            .1
            .lookup(key)
            .ok_or_else(|| no_policy(key))?;
        let Policy::TokenBucket {
            capacity,
            refill_per_second,
        } = policy
        else {
            return Err(LimitError::InvalidArgument(format!(
                "`{key}` is a distinct window; penalties apply to token buckets"
            )));
        };
        let penalize = self
            .backend
            .penalize(scope, key, capacity, refill_per_second, hold);
        let until = self.call(penalize).await.map_err(unavailable)?;
        // Callers name any code: only Meta's known ones become label values.
        let code = wamesh_whatsapp::labels::error_code(code);
        metrics::counter!("wamesh_ratelimit_penalties_total", "policy" => label, "meta_code" => code).increment(1);
        Ok(until)
    }

    /// The buckets with their policies, and each one's policy name for metrics.
    async fn buckets(
        &self,
        requests: Vec<BucketRequest>,
    ) -> Result<(Vec<Bucket>, Vec<&'static str>), LimitError> {
        if requests.is_empty() || requests.len() > MAX_BUCKETS {
            return Err(LimitError::InvalidArgument(format!(
                "an acquire names 1 to {MAX_BUCKETS} buckets, not {}",
                requests.len()
            )));
        }
        let table = self.policies.read().await;
        let mut buckets: Vec<Bucket> = Vec::with_capacity(requests.len());
        let mut labels = Vec::with_capacity(requests.len());
        for r in requests {
            if r.key.is_empty() || r.key.len() > MAX_NAME {
                return Err(LimitError::InvalidArgument(format!(
                    "bucket keys are 1 to {MAX_NAME} characters"
                )));
            }
            if buckets.iter().any(|b| b.key == r.key) {
                return Err(LimitError::InvalidArgument(format!(
                    "bucket `{}` is named twice",
                    r.key
                )));
            }
            let policy = match r.policy {
                Some(policy) => {
                    labels.push("inline");
                    policy
                }
                None => {
                    let (policy, label) =
                        table.1.lookup(&r.key).ok_or_else(|| no_policy(&r.key))?;
                    labels.push(label);
                    policy
                }
            };
            policy
                .check()
                .map_err(|e| LimitError::InvalidArgument(format!("policy of `{}`: {e}", r.key)))?;
            match policy {
                Policy::TokenBucket { capacity, .. } => {
                    if !(r.cost.is_finite() && r.cost >= 0.0) {
                        return Err(LimitError::InvalidArgument(format!(
                            "cost of `{}` must be a number of 0 or more, not {}",
                            r.key, r.cost
                        )));
                    }
                    if r.cost > capacity {
                        return Err(LimitError::InvalidArgument(format!(
                            "cost {} of `{}` exceeds its capacity {capacity}: it could never be admitted",
                            r.cost, r.key
                        )));
                    }
                }
                Policy::DistinctWindow { .. } if r.member.is_empty() => {
                    return Err(LimitError::InvalidArgument(format!(
                        "`{}` counts distinct members: give the member (the user)",
                        r.key
                    )));
                }
                Policy::DistinctWindow { .. } => {}
            }
            buckets.push(Bucket {
                key: r.key,
                policy,
                cost: r.cost,
                member: r.member,
                check_only: r.check_only,
            });
        }
        Ok((buckets, labels))
    }

    async fn degraded(&self, scope: &str, buckets: &[Bucket]) -> Result<Outcome, LimitError> {
        let mode = self.config.degraded;
        let decision = match mode {
            DegradedMode::Local => {
                let shared: Vec<Bucket> = buckets
                    .iter()
                    .map(|b| Bucket {
                        policy: b.policy.share(self.config.replicas),
                        cost: b.cost.min(b.policy.share(self.config.replicas).capacity()),
                        ..b.clone()
                    })
                    .collect();
                self.local
                    .acquire(scope, &shared)
                    .await
                    .map_err(unavailable)?
            }
            DegradedMode::Open | DegradedMode::Closed => {
                let allowed = mode == DegradedMode::Open;
                Decision::from_levels(
                    buckets
                        .iter()
                        .map(|b| Level {
                            key: b.key.clone(),
                            remaining: 0.0,
                            capacity: b.policy.capacity(),
                            limiting: !allowed,
                            retry_after_us: if allowed {
                                0
                            } else {
                                PROBE_INTERVAL.as_micros() as u64
                            },
                            held_until_us: 0,
                        })
                        .collect(),
                )
            }
        };
        Ok(Outcome {
            decision,
            degraded: Some(mode),
        })
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::unreachable(format!(
                "no answer within {:?}",
                self.config.timeout
            ))),
        };
        metrics::histogram!("wamesh_ratelimit_backend_seconds", "backend" => self.backend.name())
            .record(started.elapsed().as_secs_f64());
        result
    }

    fn mark_down(&self, cause: &BackendError) {
        if self.backend_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %cause, mode = self.config.degraded.as_str(), "rate-limit backend unreachable: degraded");
            metrics::gauge!("wamesh_ratelimit_degraded").set(1.0);
        }
    }

    /// Whether decisions currently go to the backend.
    pub fn backend_up(&self) -> bool {
        self.backend_up.load(Ordering::Relaxed)
    }
}

/// The background work: probe a down backend, and pick up other replicas' policy changes.
async fn maintain(limiter: std::sync::Weak<Limiter>) {
    let mut last_refresh = Instant::now();
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        if !limiter.backend_up() {
            if limiter.call(limiter.backend.ping()).await.is_ok() {
                limiter.backend_up.store(true, Ordering::Relaxed);
                metrics::gauge!("wamesh_ratelimit_degraded").set(0.0);
                tracing::info!("rate-limit backend reachable again");
            }
            continue;
        }
        if last_refresh.elapsed() >= POLICY_REFRESH {
            last_refresh = Instant::now();
            refresh_policies(&limiter).await;
        }
    }
}

/// Keeps the usage gauges current: per kind of bucket (`throughput`, `pair`, `tier`, `graph`,
/// `other`; never the key, which may hold a phone number), the highest usage ratio and how
/// many buckets are at or above the warning threshold.
async fn report_usage(limiter: std::sync::Weak<Limiter>) {
    loop {
        let Some(interval) = limiter.upgrade().map(|l| l.config.usage_metrics_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        let Ok((usage, _)) = limiter.usage("", &[], SCAN_LIMIT).await else {
            continue;
        };
        let mut kinds: BTreeMap<&'static str, (f64, u64)> =
            KINDS.iter().map(|kind| (*kind, (0.0, 0))).collect();
        for bucket in &usage {
            let (max, warning) = kinds.entry(kind_of(&bucket.key)).or_default();
            *max = max.max(bucket.ratio());
            *warning += u64::from(bucket.ratio() >= limiter.config.warning);
        }
        for (kind, (max, warning)) in kinds {
            metrics::gauge!("wamesh_ratelimit_usage_ratio_max", "kind" => kind).set(max);
            metrics::gauge!("wamesh_ratelimit_buckets_over_warning", "kind" => kind)
                .set(warning as f64);
        }
    }
}

async fn refresh_policies(limiter: &Limiter) {
    let Ok(version) = limiter.call(limiter.backend.policies_version()).await else {
        return;
    };
    if version == limiter.policies.read().await.0 {
        return;
    }
    if let Ok((version, rules)) = limiter.call(limiter.backend.load_policies()).await {
        *limiter.policies.write().await = (version, PolicyTable::from_rules(rules));
    }
}

/// Counts a decision under the policy of the bucket that decided it (the first limiting one).
fn record(outcome: &Outcome, labels: &[&'static str]) {
    let deciding = outcome
        .decision
        .levels
        .iter()
        .position(|l| l.limiting)
        .unwrap_or(0);
    let policy = labels.get(deciding).copied().unwrap_or_default();
    let result = if outcome.decision.allowed {
        "allowed"
    } else {
        "denied"
    };
    let degraded = outcome.degraded.map_or("no", DegradedMode::as_str);
    metrics::counter!("wamesh_ratelimit_decisions_total", "result" => result, "policy" => policy, "degraded" => degraded)
        .increment(1);
}

fn checked_scope(scope: &str) -> Result<&str, LimitError> {
    let scope = if scope.is_empty() { "default" } else { scope };
    if scope.len() > MAX_NAME || scope.contains(['{', '}']) {
        return Err(LimitError::InvalidArgument(format!(
            "scope must be up to {MAX_NAME} characters without `{{` or `}}`"
        )));
    }
    Ok(scope)
}

fn no_policy(key: &str) -> LimitError {
    LimitError::NotFound(format!(
        "no policy for `{key}`: set one with SetPolicy, give one in the request, or use a known prefix (throughput:, pair:, tier:, graph:)"
    ))
}

/// The error for a failed backend call: unavailable when it could not be reached, a store
/// failure when it answered with an error.
fn unavailable(e: BackendError) -> LimitError {
    if e.unreachable {
        LimitError::Unavailable(e.message)
    } else {
        LimitError::Store(e.message)
    }
}
