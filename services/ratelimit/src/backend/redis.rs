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
//! [`crate::model::token_bucket`] and `memory.rs` line by line, return every number as a string
//! (Redis would truncate Lua numbers to integers) and set the TTLs: a key expires only once it
//! says nothing a missing key would not.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;

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

/// The production backend: buckets shared by every replica through one Redis. Cheap to clone
/// (the connection is multiplexed and reconnects by itself after a Redis restart).
#[derive(Clone)]
pub struct RedisBackend {
    con: ConnectionManager,
    prefix: String,
    acquire: Script,
    penalize: Script,
    usage: Script,
}

impl RedisBackend {
    /// Connects to `url` (fails if Redis cannot be reached now, so a bad address shows at
    /// start-up). Every key starts with `prefix`, so deployments and tests can share a Redis.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BackendError> {
        let client = redis::Client::open(url)?;
        let con = ConnectionManager::new(client).await?;
        Ok(Self {
            con,
            prefix: prefix.to_owned(),
            acquire: Script::new(ACQUIRE),
            penalize: Script::new(PENALIZE),
            usage: Script::new(USAGE),
        })
    }

    /// The Redis key of a bucket of `kind` ([`TOKENS`] or [`MEMBERS`]).
    fn bucket_key(&self, scope: &str, kind: &str, key: &str) -> String {
        format!("{}{{{scope}}}:{kind}:{key}", self.prefix)
    }

    /// The HASH of policy rules: selector -> JSON of [`Policy`].
    fn policies_key(&self) -> String {
        format!("{}policies", self.prefix)
    }

    /// The counter bumped by every rule change, so replicas reload only when it moves.
    fn version_key(&self) -> String {
        format!("{}policies:version", self.prefix)
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
        BackendError(format!(
            "redis: the rate-limit script answered {s:?}, not a number"
        ))
    })
}

/// Microseconds from a script reply (an endless wait, `inf`, is `Micros::MAX`).
fn parse_micros(s: &str) -> Result<Micros, BackendError> {
    let x = parse_number(s)?;
    if x.is_nan() || x < 0.0 {
        return Err(BackendError(format!(
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
        Err(BackendError(format!(
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
        let mut call = self.acquire.prepare_invoke();
        for bucket in buckets {
            match bucket.policy {
                Policy::TokenBucket {
                    capacity,
                    refill_per_second,
                } => call
                    .key(self.bucket_key(scope, TOKENS, &bucket.key))
                    .arg(TOKENS)
                    .arg(num(capacity))
                    .arg(num(refill_per_second))
                    .arg(num(bucket.cost))
                    .arg(""),
                Policy::DistinctWindow { limit, window_ms } => call
                    .key(self.bucket_key(scope, MEMBERS, &bucket.key))
                    .arg(MEMBERS)
                    .arg(limit)
                    .arg(window_ms)
                    .arg(bucket.member.as_str())
                    .arg(if bucket.check_only { "1" } else { "0" }),
            };
        }
        let reply: Vec<String> = call.invoke_async(&mut self.con.clone()).await?;
        check_len(&reply, buckets.len(), 4)?;
        let levels = buckets
            .iter()
            .zip(reply.chunks_exact(4))
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
    }

    async fn penalize(
        &self,
        scope: &str,
        key: &str,
        policy: &Policy,
        hold: Duration,
    ) -> Result<Micros, BackendError> {
        let Policy::TokenBucket {
            capacity,
            refill_per_second,
        } = *policy
        else {
            return Err(BackendError("penalize applies to token buckets".into()));
        };
        let held_until: String = self
            .penalize
            .key(self.bucket_key(scope, TOKENS, key))
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
                    .key(self.bucket_key(scope, TOKENS, key))
                    .arg(TOKENS)
                    .arg(num(capacity))
                    .arg(num(refill_per_second)),
                Policy::DistinctWindow { window_ms, .. } => call
                    .key(self.bucket_key(scope, MEMBERS, key))
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
        let pattern = format!("{}{{*}}:*", escape_glob(&self.prefix));
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
                .filter_map(|k| parse_bucket_key(&self.prefix, k))
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
            .arg(self.version_key())
            .cmd("HGETALL")
            .arg(self.policies_key())
            .query_async(&mut self.con.clone())
            .await?;
        let rules = rules
            .into_iter()
            .map(|(selector, json)| match serde_json::from_str(&json) {
                Ok(policy) => Ok((selector, policy)),
                Err(e) => Err(BackendError(format!(
                    "redis: the stored policy of {selector:?} is not valid: {e}"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok((version.unwrap_or(0), rules))
    }

    async fn policies_version(&self) -> Result<u64, BackendError> {
        let version: Option<u64> = redis::cmd("GET")
            .arg(self.version_key())
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
                    BackendError(format!("cannot encode the policy of {selector:?}: {e}"))
                })?;
                pipe.cmd("HSET")
                    .arg(self.policies_key())
                    .arg(selector)
                    .arg(json)
            }
            None => pipe.cmd("HDEL").arg(self.policies_key()).arg(selector),
        };
        // The version after the rule, in order on one connection: whoever sees the new version
        // then reads the new rule.
        pipe.cmd("INCR").arg(self.version_key());
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
