//! Buckets in Redis, shared by every replica. Each decision is one Lua script (EVALSHA, reloaded
//! on NOSCRIPT by [`redis::Script`]) whose only clock is Redis `TIME`, so replicas never disagree
//! on time and a request's buckets change together or not at all.
//!
//! Key layout (one hash tag per scope, so a request's keys share a Redis Cluster slot):
//! - `<prefix>{<scope>}:tb:<key>`: a token bucket, a HASH of `tokens` and `at` (µs);
//! - `<prefix>{<scope>}:dw:<key>`: a distinct window, a ZSET of member -> last admitted (µs);
//! - `<prefix>policies` (selector -> JSON policy) and `<prefix>policies:version` (a counter).
//!
//! The scripts (`bucket.lua`, shared, then `acquire.lua`, `penalize.lua`, `usage.lua`) mirror
//! [`crate::model::token_bucket`] and `memory.rs` line by line, return fractions as exact strings
//! (Redis would truncate a Lua number to an integer) and set the TTLs: a key expires only once
//! it says nothing a missing key would not.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

use wamesh_runtime::batch::{BatchConfig, Batcher};

use super::{Backend, BackendError};
use crate::model::{Bucket, BucketId, Decision, Level, Micros, Policy, Usage};

const ACQUIRE: &str = concat!(include_str!("bucket.lua"), include_str!("acquire.lua"));
const PENALIZE: &str = concat!(include_str!("bucket.lua"), include_str!("penalize.lua"));
const USAGE: &str = concat!(include_str!("bucket.lua"), include_str!("usage.lua"));

/// Marks a token bucket key (`…:tb:<key>`).
const TOKENS: &str = "tb";
/// Marks a distinct window key (`…:dw:<key>`).
const MEMBERS: &str = "dw";

/// Keys scanned per SCAN round trip in [`Backend::list`].
const SCAN_COUNT: usize = 1000;

/// Acquires decided in one script call at most (see [`Batcher`]).
const MAX_BATCH: usize = 64;

/// One acquire waiting for its batch: the scope and its buckets.
type Pending = (String, Vec<Bucket>);

/// The production backend: buckets shared by every replica through one Redis, over one
/// multiplexed connection that reconnects by itself after a Redis restart. Concurrent acquires
/// are batched: those waiting when a script call goes out share it, one call per scope (a
/// scope's keys share a Redis Cluster slot), each still decided on its own and all or nothing.
pub struct RedisBackend {
    client: redis::Client,
    con: ConnectionManager,
    keys: Keys,
    acquire: AcquireScript,
    batcher: Batcher<Pending, Result<Decision, BackendError>>,
    penalize: Script,
    usage: Script,
}

impl RedisBackend {
    /// Connects to `url` (fails if Redis cannot be reached now, so a bad address shows at
    /// start-up). Every key starts with `prefix`, so deployments and tests can share a Redis.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url)?;
        let con = ConnectionManager::new(client.clone()).await?;
        let keys = Keys(prefix.to_owned());
        let acquire = AcquireScript {
            script: Script::new(ACQUIRE),
            keys: keys.clone(),
        };
        let batcher = {
            let (acquire, con) = (acquire.clone(), con.clone());
            Batcher::start(
                BatchConfig {
                    workers: 4,
                    max_batch: MAX_BATCH,
                    queue_capacity: 4096,
                },
                move |pending: Vec<Pending>| {
                    let (acquire, con) = (acquire.clone(), con.clone());
                    async move { acquire.run_grouped(con, pending).await }
                },
            )
        };
        Ok(Self {
            client,
            con,
            keys,
            acquire,
            batcher,
            penalize: Script::new(PENALIZE),
            usage: Script::new(USAGE),
        })
    }

    /// One acquire, alone in its script call, on `con`: the benchmark's unpipelined baseline
    /// runs the service's own script this way, on connections of its own.
    pub async fn acquire_on<C: redis::aio::ConnectionLike + Send>(
        &self,
        con: &mut C,
        scope: &str,
        buckets: &[Bucket],
    ) -> Result<Decision, BackendError> {
        self.acquire.run_one(con, scope, buckets).await
    }

    /// A new connection of its own (not the shared one), for callers that want one.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, BackendError> {
        Ok(self.client.get_multiplexed_async_connection().await?)
    }
}

/// Redis key names, all under one prefix.
#[derive(Clone)]
struct Keys(String);

impl Keys {
    /// The Redis key of a bucket of `kind` ([`TOKENS`] or [`MEMBERS`]).
    fn bucket(&self, scope: &str, kind: &str, key: &str) -> String {
        format!("{}{{{scope}}}:{kind}:{key}", self.0)
    }

    /// The HASH of policy rules: selector -> JSON of [`Policy`].
    fn policies(&self) -> String {
        format!("{}policies", self.0)
    }

    /// The counter bumped by every rule change, so replicas reload only when it moves.
    fn version(&self) -> String {
        format!("{}policies:version", self.0)
    }
}

/// `acquire.lua` and how to call it.
#[derive(Clone)]
struct AcquireScript {
    script: Script,
    keys: Keys,
}

impl AcquireScript {
    /// Decides `acquires` (all of `scope`) in one script call, in order.
    async fn run<C: redis::aio::ConnectionLike + Send>(
        &self,
        con: &mut C,
        scope: &str,
        acquires: &[&[Bucket]],
    ) -> Result<Vec<Decision>, BackendError> {
        let mut call = self.script.prepare_invoke();
        call.arg(acquires.len());
        for buckets in acquires {
            call.arg(buckets.len());
        }
        for bucket in acquires.iter().flat_map(|buckets| buckets.iter()) {
            match bucket.policy {
                Policy::TokenBucket {
                    capacity,
                    refill_per_second,
                } => call
                    .key(self.keys.bucket(scope, TOKENS, &bucket.key))
                    .arg(TOKENS)
                    .arg(num(capacity))
                    .arg(num(refill_per_second))
                    .arg(num(bucket.cost))
                    .arg(""),
                Policy::DistinctWindow { limit, window_ms } => call
                    .key(self.keys.bucket(scope, MEMBERS, &bucket.key))
                    .arg(MEMBERS)
                    .arg(limit)
                    .arg(window_ms)
                    .arg(bucket.member.as_str())
                    .arg(if bucket.check_only { "1" } else { "0" }),
            };
        }
        let reply: Vec<String> = call.invoke_async(con).await?;
        let buckets = acquires.iter().map(|b| b.len()).sum();
        check_len(&reply, buckets, 4)?;
        let mut answers = reply.chunks_exact(4);
        acquires
            .iter()
            .map(|buckets| {
                let levels = buckets
                    .iter()
                    .zip(answers.by_ref())
                    .map(|(bucket, answer)| {
                        Ok(Level {
                            key: bucket.key.clone(),
                            remaining: parse_number(&answer[0])?,
                            capacity: bucket.policy.capacity(),
                            limiting: answer[1] == "1",
                            retry_after_us: parse_micros(&answer[2])?,
                            held_until_us: parse_micros(&answer[3])?,
                        })
                    })
                    .collect::<Result<Vec<_>, BackendError>>()?;
                Ok(Decision::from_levels(levels))
            })
            .collect()
    }

    /// One acquire alone in its script call.
    async fn run_one<C: redis::aio::ConnectionLike + Send>(
        &self,
        con: &mut C,
        scope: &str,
        buckets: &[Bucket],
    ) -> Result<Decision, BackendError> {
        let mut decisions = self.run(con, scope, &[buckets]).await?;
        decisions
            .pop()
            .ok_or_else(|| BackendError::bad_answer("redis: the acquire script answered nothing"))
    }

    /// A batch of acquires of any scopes: one script call per scope, all in flight at once on
    /// the shared connection. Answers one result per acquire, in order.
    async fn run_grouped(
        &self,
        con: ConnectionManager,
        pending: Vec<Pending>,
    ) -> Vec<Result<Decision, BackendError>> {
        let mut scopes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (scope, _)) in pending.iter().enumerate() {
            scopes.entry(scope.as_str()).or_default().push(i);
        }
        let calls = scopes.iter().map(|(scope, indexes)| {
            let acquires: Vec<&[Bucket]> =
                indexes.iter().map(|&i| pending[i].1.as_slice()).collect();
            let mut con = con.clone();
            async move { self.run(&mut con, scope, &acquires).await }
        });
        let answers = futures::future::join_all(calls).await;
        let mut results: Vec<Option<Result<Decision, BackendError>>> = vec![None; pending.len()];
        for ((scope, indexes), answer) in scopes.iter().zip(answers) {
            match answer {
                Ok(decisions) => {
                    for (&i, decision) in indexes.iter().zip(decisions) {
                        results[i] = Some(Ok(decision));
                    }
                }
                // Redis refused the call for what one bucket holds: each acquire again on its
                // own, so only the one that names it fails.
                Err(e) if !e.unreachable && indexes.len() > 1 => {
                    for &i in indexes {
                        let alone = self.run_one(&mut con.clone(), scope, &pending[i].1).await;
                        results[i] = Some(alone);
                    }
                }
                Err(e) => {
                    for &i in indexes {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(BackendError::bad_answer("redis: no answer for an acquire"))
                })
            })
            .collect()
    }
}

/// The scope and key of a bucket's Redis key, or `None` for a key that is not a bucket.
fn parse_bucket_key(prefix: &str, redis_key: &[u8]) -> Option<BucketId> {
    let rest = std::str::from_utf8(redis_key)
        .ok()?
        .strip_prefix(prefix)?
        .strip_prefix('{')?;
    // The first `}:tb:` or `}:dw:` ends the scope (the key after it may contain anything).
    let (end, marker) = [TOKENS, MEMBERS]
        .iter()
        .map(|kind| format!("}}:{kind}:"))
        .filter_map(|marker| Some((rest.find(&marker)?, marker)))
        .min()?;
    Some(BucketId {
        scope: rest[..end].to_owned(),
        key: rest[end + marker.len()..].to_owned(),
    })
}

/// A number for a script argument, exactly (Rust prints the shortest string that round-trips).
fn num(x: f64) -> String {
    x.to_string()
}

/// A number from a script reply (`inf` included).
fn parse_number(s: &str) -> Result<f64, BackendError> {
    s.parse().map_err(|_| {
        BackendError::bad_answer(format!(
            "redis: the rate-limit script answered {s:?}, not a number"
        ))
    })
}

/// Microseconds from a script reply (an endless wait, `inf`, is `Micros::MAX`).
fn parse_micros(s: &str) -> Result<Micros, BackendError> {
    let x = parse_number(s)?;
    if x.is_nan() || x < 0.0 {
        return Err(BackendError::bad_answer(format!(
            "redis: the rate-limit script answered {s:?}, not a time"
        )));
    }
    Ok(x as Micros)
}

/// Checks that a script answered `per` strings for each of `n` buckets.
fn check_len(reply: &[String], n: usize, per: usize) -> Result<(), BackendError> {
    if reply.len() == n * per {
        Ok(())
    } else {
        Err(BackendError::bad_answer(format!(
            "redis: the rate-limit script answered {} values for {n} buckets, not {}",
            reply.len(),
            n * per
        )))
    }
}

/// Escapes the glob characters of `s` for a SCAN MATCH pattern.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, scope: &str, buckets: &[Bucket]) -> Result<Decision, BackendError> {
        if buckets.is_empty() {
            return Ok(Decision::from_levels(Vec::new()));
        }
        self.batcher
            .submit((scope.to_owned(), buckets.to_vec()))
            .await
            .map_err(|e| BackendError::unreachable(format!("redis: {e}")))?
    }

    async fn penalize(
        &self,
        scope: &str,
        key: &str,
        capacity: f64,
        refill_per_second: f64,
        hold: Duration,
    ) -> Result<Micros, BackendError> {
        let held_until: String = self
            .penalize
            .key(self.keys.bucket(scope, TOKENS, key))
            .arg(num(capacity))
            .arg(num(refill_per_second))
            .arg(hold.as_micros() as Micros)
            .invoke_async(&mut self.con.clone())
            .await?;
        parse_micros(&held_until)
    }

    async fn usage(
        &self,
        scope: &str,
        buckets: &[(String, Policy)],
    ) -> Result<Vec<Usage>, BackendError> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = self.usage.prepare_invoke();
        for (key, policy) in buckets {
            match *policy {
                Policy::TokenBucket {
                    capacity,
                    refill_per_second,
                } => call
                    .key(self.keys.bucket(scope, TOKENS, key))
                    .arg(TOKENS)
                    .arg(num(capacity))
                    .arg(num(refill_per_second)),
                Policy::DistinctWindow { window_ms, .. } => call
                    .key(self.keys.bucket(scope, MEMBERS, key))
                    .arg(MEMBERS)
                    .arg(window_ms)
                    .arg(""),
            };
        }
        let reply: Vec<String> = call.invoke_async(&mut self.con.clone()).await?;
        check_len(&reply, buckets.len(), 3)?;
        buckets
            .iter()
            .zip(reply.chunks_exact(3))
            .map(|((key, policy), answer)| {
                Ok(Usage {
                    scope: scope.to_owned(),
                    key: key.clone(),
                    level: parse_number(&answer[0])?,
                    capacity: policy.capacity(),
                    time_to_full_us: parse_micros(&answer[1])?,
                    held_until_us: parse_micros(&answer[2])?,
                })
            })
            .collect()
    }

    async fn list(&self, limit: usize) -> Result<Vec<BucketId>, BackendError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pattern = format!("{}{{*}}:*", escape_glob(&self.keys.0));
        let mut con = self.con.clone();
        // The `limit` smallest ids, as sorting every id would give, in bounded memory.
        let mut ids = BTreeSet::new();
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await?;
            for id in keys
                .iter()
                .filter_map(|k| parse_bucket_key(&self.keys.0, k))
            {
                ids.insert(id);
                if ids.len() > limit {
                    ids.pop_last();
                }
            }
            if next == 0 {
                return Ok(ids.into_iter().collect());
            }
            cursor = next;
        }
    }

    async fn load_policies(&self) -> Result<(u64, Vec<(String, Policy)>), BackendError> {
        // The version first: rules newer than their version only cause one more reload, while
        // an older version would leave stale rules in place.
        let (version, rules): (Option<u64>, BTreeMap<String, String>) = redis::pipe()
            .cmd("GET")
            .arg(self.keys.version())
            .cmd("HGETALL")
            .arg(self.keys.policies())
            .query_async(&mut self.con.clone())
            .await?;
        let rules = rules
            .into_iter()
            .map(|(selector, json)| match serde_json::from_str(&json) {
                Ok(policy) => Ok((selector, policy)),
                Err(e) => Err(BackendError::bad_answer(format!(
                    "redis: the stored policy of {selector:?} is not valid: {e}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok((version.unwrap_or(0), rules))
    }

    async fn policies_version(&self) -> Result<u64, BackendError> {
        let version: Option<u64> = redis::cmd("GET")
            .arg(self.keys.version())
            .query_async(&mut self.con.clone())
            .await?;
        Ok(version.unwrap_or(0))
    }

    async fn store_policy(
        &self,
        selector: &str,
        policy: Option<&Policy>,
    ) -> Result<(), BackendError> {
        let mut pipe = redis::pipe();
        match policy {
            Some(policy) => {
                let json = serde_json::to_string(policy).map_err(|e| {
                    BackendError::bad_answer(format!(
                        "cannot encode the policy of {selector:?}: {e}"
                    ))
                })?;
                pipe.cmd("HSET")
                    .arg(self.keys.policies())
                    .arg(selector)
                    .arg(json)
            }
            None => pipe.cmd("HDEL").arg(self.keys.policies()).arg(selector),
        };
        // The version after the rule, in order on one connection: whoever sees the new version
        // then reads the new rule.
        pipe.cmd("INCR").arg(self.keys.version());
        pipe.exec_async(&mut self.con.clone()).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), BackendError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.con.clone())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_numbers_parse_including_infinity() {
        assert_eq!(parse_number("0.25").unwrap(), 0.25);
        assert_eq!(parse_number("inf").unwrap(), f64::INFINITY);
        assert_eq!(
            parse_micros("1700000000123456").unwrap(),
            1_700_000_000_123_456
        );
        assert_eq!(parse_micros("inf").unwrap(), Micros::MAX);
        assert!(parse_micros("-1").is_err() && parse_number("x").is_err());
    }

    #[test]
    fn glob_characters_of_the_prefix_are_escaped() {
        assert_eq!(escape_glob(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }

    #[test]
    fn bucket_keys_parse_back_into_scope_and_key() {
        let id = |scope: &str, key: &str| BucketId {
            scope: scope.into(),
            key: key.into(),
        };
        assert_eq!(parse_bucket_key("p:", b"p:{s}:tb:k"), Some(id("s", "k")));
        assert_eq!(
            parse_bucket_key("p:", b"p:{s}:dw:a}:tb:b"),
            Some(id("s", "a}:tb:b"))
        );
        assert_eq!(parse_bucket_key("p:", b"p:{s}:xx:k"), None);
        assert_eq!(parse_bucket_key("p:", b"q:{s}:tb:k"), None);
    }
}
