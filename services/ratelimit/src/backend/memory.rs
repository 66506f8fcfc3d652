//! Buckets in this process: the embedded default, and the bounded local buckets of the degraded
//! mode. Time comes from a [`Clock`], so tests can move it by hand.
//!
//! Distinct windows: a member admitted at `t` counts until `t + window` (admitting it again
//! moves `t`). A new member is admitted while fewer than `limit` count; otherwise the request
//! waits until enough of the oldest have aged out.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{Backend, BackendError};
use crate::model::{Bucket, BucketId, Decision, Level, Micros, Policy, Usage, token_bucket};

/// Where the memory backend reads the time.
pub trait Clock: Send + Sync {
    fn now_us(&self) -> Micros;
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_us(&self) -> Micros {
        (**self).now_us()
    }
}

/// The system's clock, never going backwards (a bucket written "in the future" by a clock
/// that then stepped back would read as held by a penalty).
#[derive(Debug, Default)]
pub struct SystemClock {
    latest: AtomicU64,
}

impl Clock for SystemClock {
    fn now_us(&self) -> Micros {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as Micros);
        self.latest.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn starting_at(now_us: Micros) -> Self {
        Self(AtomicU64::new(now_us))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

/// A token bucket as last left, or a distinct window's members.
#[derive(Debug, Clone)]
enum State {
    Tokens { tokens: f64, at: Micros },
    Members(Members),
}

#[derive(Debug, Clone, Default)]
struct Members {
    last: HashMap<String, Micros>,
    oldest_first: BTreeSet<(Micros, String)>,
}

impl Members {
    fn purge(&mut self, now: Micros, window_us: Micros) {
        while let Some((t, member)) = self.oldest_first.first().cloned() {
            if t + window_us > now {
                break;
            }
            self.oldest_first.pop_first();
            self.last.remove(&member);
        }
    }

    fn admit(&mut self, member: &str, now: Micros) {
        if let Some(t) = self.last.insert(member.to_owned(), now) {
            self.oldest_first.remove(&(t, member.to_owned()));
        }
        self.oldest_first.insert((now, member.to_owned()));
    }
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    /// After this the entry says nothing a missing one would not (full, or every member out).
    expires_at: Micros,
}

/// In-memory buckets and policy rules.
pub struct MemoryBackend {
    clock: Box<dyn Clock>,
    buckets: Mutex<HashMap<BucketId, Entry>>,
    policies: Mutex<(u64, BTreeMap<String, Policy>)>,
}

impl MemoryBackend {
    pub fn new(clock: Box<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::new(HashMap::new()),
            policies: Mutex::new((0, BTreeMap::new())),
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<BucketId, Entry>> {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn policies(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<String, Policy>)> {
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn id(scope: &str, key: &str) -> BucketId {
    BucketId {
        scope: scope.to_owned(),
        key: key.to_owned(),
    }
}

/// The live state of a bucket (none when missing or expired).
fn live<'a>(map: &'a HashMap<BucketId, Entry>, id: &BucketId, now: Micros) -> Option<&'a State> {
    map.get(id).filter(|e| e.expires_at > now).map(|e| &e.state)
}

/// What an allowed request changes in one bucket.
enum Write {
    /// A token bucket's new level.
    Replace(Entry),
    /// A distinct window counts `member` from now on.
    Admit { member: String, expires_at: Micros },
}

/// The decision for one bucket (a distinct window already purged of aged-out members), and
/// what to write if the whole request is allowed.
fn decide(bucket: &Bucket, state: Option<&State>, now: Micros) -> (Level, Option<Write>) {
    match bucket.policy {
        Policy::TokenBucket {
            capacity,
            refill_per_second: rate,
        } => {
            let (tokens, at) = match state {
                Some(State::Tokens { tokens, at }) => (*tokens, *at),
                _ => (capacity, now),
            };
            let held_until_us = if at > now { at } else { 0 };
            let level = token_bucket::level(tokens, at, now, capacity, rate);
            let wait = token_bucket::wait(tokens, at, now, capacity, rate, bucket.cost);
            // Held buckets deny even a check (cost 0): the wait is the rest of the hold.
            let limiting = wait > 0;
            let remaining = if limiting { level } else { level - bucket.cost };
            let keep = (!limiting && bucket.cost > 0.0).then(|| {
                Write::Replace(Entry {
                    state: State::Tokens {
                        tokens: remaining,
                        at: now,
                    },
                    expires_at: now + token_bucket::time_to_full(remaining, capacity, rate) + 1,
                })
            });
            (
                Level {
                    key: bucket.key.clone(),
                    remaining,
                    capacity,
                    limiting,
                    retry_after_us: wait,
                    held_until_us,
                },
                keep,
            )
        }
        Policy::DistinctWindow { limit, window_ms } => {
            let window_us = window_ms * 1000;
            let none = Members::default();
            let members = match state {
                Some(State::Members(m)) => m,
                _ => &none,
            };
            let count = members.last.len() as u64;
            let repeat = members.last.contains_key(&bucket.member);
            let limiting = !repeat && limit != 0 && count >= limit;
            let retry_after_us = if limiting {
                // The (count - limit + 1)-th oldest must age out.
                let (t, _) = members
                    .oldest_first
                    .iter()
                    .nth((count - limit) as usize)
                    .expect("count > limit - 1 members");
                t + window_us - now
            } else {
                0
            };
            let admitted = !limiting && !bucket.check_only;
            let after = if admitted && !repeat {
                count + 1
            } else {
                count
            };
            let keep = admitted.then(|| Write::Admit {
                member: bucket.member.clone(),
                expires_at: now + window_us,
            });
            (
                Level {
                    key: bucket.key.clone(),
                    remaining: if limit == 0 {
                        f64::INFINITY
                    } else {
                        limit.saturating_sub(after) as f64
                    },
                    capacity: bucket.policy.capacity(),
                    limiting,
                    retry_after_us,
                    held_until_us: 0,
                },
                keep,
            )
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn acquire(&self, scope: &str, buckets: &[Bucket]) -> Result<Decision, BackendError> {
        // The time is read under the lock, so decisions see it in the order they are made.
        let mut map = self.buckets();
        let now = self.clock.now_us();
        let mut levels = Vec::with_capacity(buckets.len());
        let mut keep = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let id = id(scope, &bucket.key);
            if let (Policy::DistinctWindow { window_ms, .. }, Some(entry)) =
                (bucket.policy, map.get_mut(&id))
                && let State::Members(members) = &mut entry.state
            {
                // In place: aged-out members count for nothing, whatever the decision.
                members.purge(now, window_ms * 1000);
            }
            let (level, write) = decide(bucket, live(&map, &id, now), now);
            levels.push(level);
            keep.push((id, write));
        }
        let decision = Decision::from_levels(levels);
        if decision.allowed {
            for (id, write) in keep {
                match write {
                    Some(Write::Replace(entry)) => {
                        map.insert(id, entry);
                    }
                    Some(Write::Admit { member, expires_at }) => {
                        let entry = map.entry(id).or_insert_with(|| Entry {
                            state: State::Members(Members::default()),
                            expires_at,
                        });
                        if entry.expires_at <= now || !matches!(entry.state, State::Members(_)) {
                            entry.state = State::Members(Members::default());
                        }
                        if let State::Members(members) = &mut entry.state {
                            members.admit(&member, now);
                        }
                        entry.expires_at = expires_at;
                    }
                    None => {}
                }
            }
        }
        if map.len() > 4096 && map.len().is_power_of_two() {
            map.retain(|_, e| e.expires_at > now);
        }
        Ok(decision)
    }

    async fn penalize(
        &self,
        scope: &str,
        key: &str,
        capacity: f64,
        refill_per_second: f64,
        hold: Duration,
    ) -> Result<Micros, BackendError> {
        let mut map = self.buckets();
        let now = self.clock.now_us();
        let id = id(scope, key);
        let until = match live(&map, &id, now) {
            Some(State::Tokens { at, .. }) => (*at).max(now + hold.as_micros() as Micros),
            _ => now + hold.as_micros() as Micros,
        };
        map.insert(
            id,
            Entry {
                state: State::Tokens {
                    tokens: 0.0,
                    at: until,
                },
                expires_at: until
                    + token_bucket::time_to_full(0.0, capacity, refill_per_second)
                    + 1,
            },
        );
        Ok(until)
    }

    async fn usage(
        &self,
        scope: &str,
        buckets: &[(String, Policy)],
    ) -> Result<Vec<Usage>, BackendError> {
        let map = self.buckets();
        let now = self.clock.now_us();
        Ok(buckets
            .iter()
            .map(|(key, policy)| {
                let state = live(&map, &id(scope, key), now);
                usage_of(scope, key, policy, state, now)
            })
            .collect())
    }

    async fn list(&self, limit: usize) -> Result<Vec<BucketId>, BackendError> {
        let map = self.buckets();
        let now = self.clock.now_us();
        let mut ids: Vec<BucketId> = map
            .iter()
            .filter(|(_, e)| e.expires_at > now)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn load_policies(&self) -> Result<(u64, Vec<(String, Policy)>), BackendError> {
        let policies = self.policies();
        Ok((
            policies.0,
            policies.1.iter().map(|(s, p)| (s.clone(), *p)).collect(),
        ))
    }

    async fn policies_version(&self) -> Result<u64, BackendError> {
        Ok(self.policies().0)
    }

    async fn store_policy(
        &self,
        selector: &str,
        policy: Option<&Policy>,
    ) -> Result<(), BackendError> {
        let mut policies = self.policies();
        match policy {
            Some(policy) => policies.1.insert(selector.to_owned(), *policy),
            None => policies.1.remove(selector),
        };
        policies.0 += 1;
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

fn usage_of(scope: &str, key: &str, policy: &Policy, state: Option<&State>, now: Micros) -> Usage {
    let (level, time_to_full_us, held_until_us) = match (*policy, state) {
        (
            Policy::TokenBucket {
                capacity,
                refill_per_second: rate,
            },
            Some(State::Tokens { tokens, at }),
        ) => {
            let level = token_bucket::level(*tokens, *at, now, capacity, rate);
            let held = at.saturating_sub(now);
            (
                capacity - level,
                held + token_bucket::time_to_full(level, capacity, rate),
                if *at > now { *at } else { 0 },
            )
        }
        (Policy::DistinctWindow { window_ms, .. }, Some(State::Members(members))) => {
            // Those admitted within the window, newest first (no purge: usage changes nothing).
            let window_us = window_ms * 1000;
            let counted = || {
                members
                    .oldest_first
                    .iter()
                    .rev()
                    .take_while(|(t, _)| t + window_us > now)
            };
            let empty_at = counted().next().map_or(now, |(t, _)| t + window_us);
            (counted().count() as f64, empty_at - now, 0)
        }
        _ => (0.0, 0, 0),
    };
    Usage {
        scope: scope.to_owned(),
        key: key.to_owned(),
        level,
        capacity: policy.capacity(),
        time_to_full_us,
        held_until_us,
    }
}
