//! ONE conformance suite for both backends: memory with a hand-moved clock, Redis (real, a fresh
//! key prefix per test) with real time. On Redis time also passes between calls, so rates are
//! chosen slow enough that it does not matter, or the checks allow what the test measured to
//! have passed (a millisecond or two, more on a busy machine).
use std::sync::Arc;
use std::time::{Duration, Instant};

use wamesh_ratelimit::backend::Backend;
use wamesh_ratelimit::backend::memory::{ManualClock, MemoryBackend};
use wamesh_ratelimit::backend::redis::RedisBackend;
use wamesh_ratelimit::model::{Bucket, BucketId, Policy};

struct Fixture {
    backend: Arc<dyn Backend>,
    /// Memory only: the clock the backend reads.
    clock: Option<Arc<ManualClock>>,
}

impl Fixture {
    async fn memory() -> Self {
        let clock = Arc::new(ManualClock::starting_at(1_700_000_000_000_000));
        Self {
            backend: Arc::new(MemoryBackend::new(Box::new(clock.clone()))),
            clock: Some(clock),
        }
    }

    async fn redis() -> Self {
        let backend = RedisBackend::connect(
            &wamesh_testkit::redis_url(),
            &wamesh_testkit::fresh_redis_prefix(),
        )
        .await
        .expect("Redis is needed for this test (scripts/test.sh starts it)");
        Self {
            backend: Arc::new(backend),
            clock: None,
        }
    }

    /// Lets time pass until `by` after `since`: on memory moves the clock by `by` (it does not
    /// move by itself), on Redis sleeps until then.
    async fn advance_until(&self, since: Instant, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep_until((since + by).into()).await,
        }
    }

    /// Lets time pass: moves the memory clock, or sleeps on Redis.
    async fn advance(&self, by: Duration) {
        match &self.clock {
            Some(clock) => clock.advance(by),
            None => tokio::time::sleep(by).await,
        }
    }

    /// On Redis, how much more than `intended` has passed since `since`, plus 1 ms: how far a
    /// Redis answer may be from the exact one. On memory nothing passes unless advanced: 0.
    fn slack_us(&self, since: Instant, intended: Duration) -> u64 {
        if self.clock.is_some() {
            return 0;
        }
        since.elapsed().saturating_sub(intended).as_micros() as u64 + 1_000
    }

    fn is_memory(&self) -> bool {
        self.clock.is_some()
    }
}

fn tokens(key: &str, capacity: f64, per_second: f64, cost: f64) -> Bucket {
    Bucket {
        key: key.into(),
        policy: Policy::TokenBucket {
            capacity,
            refill_per_second: per_second,
        },
        cost,
        member: String::new(),
        check_only: false,
    }
}

fn member(key: &str, limit: u64, window_ms: u64, member: &str) -> Bucket {
    Bucket {
        key: key.into(),
        policy: Policy::DistinctWindow { limit, window_ms },
        cost: 0.0,
        member: member.into(),
        check_only: false,
    }
}

/// A refill so slow that the time a test takes adds nothing measurable.
const SLOW: f64 = 1e-6;

async fn a_new_bucket_is_full_and_debits_exactly(f: Fixture) {
    let d = f
        .backend
        .acquire("s", &[tokens("k", 10.0, SLOW, 3.0)])
        .await
        .unwrap();
    assert!(d.allowed);
    assert_eq!(d.retry_after_us, 0);
    assert!((d.levels[0].remaining - 7.0).abs() < 1e-6, "{:?}", d.levels);
    assert_eq!(d.levels[0].capacity, 10.0);
    let d = f
        .backend
        .acquire("s", &[tokens("k", 10.0, SLOW, 7.5)])
        .await
        .unwrap();
    assert!(!d.allowed, "7 left, 7.5 asked");
    assert!(d.levels[0].limiting);
    let d = f
        .backend
        .acquire("s", &[tokens("k", 10.0, SLOW, 7.0)])
        .await
        .unwrap();
    assert!(d.allowed);
}

async fn fractional_tokens_are_kept_whole(f: Fixture) {
    for _ in 0..4 {
        let d = f
            .backend
            .acquire("s", &[tokens("k", 1.0, SLOW, 0.25)])
            .await
            .unwrap();
        assert!(d.allowed);
    }
    let d = f
        .backend
        .acquire("s", &[tokens("k", 1.0, SLOW, 0.25)])
        .await
        .unwrap();
    assert!(!d.allowed, "four quarters emptied it: {:?}", d.levels);
    assert!(d.levels[0].remaining.abs() < 1e-6);
}

async fn all_or_nothing_when_one_bucket_is_short_none_is_debited(f: Fixture) {
    let d = f
        .backend
        .acquire(
            "s",
            &[tokens("a", 5.0, SLOW, 3.0), tokens("b", 1.0, SLOW, 2.0)],
        )
        .await
        .unwrap();
    assert!(!d.allowed);
    assert!(!d.levels[0].limiting && d.levels[1].limiting);
    let d = f
        .backend
        .acquire("s", &[tokens("a", 5.0, SLOW, 5.0)])
        .await
        .unwrap();
    assert!(d.allowed, "a was not debited by the denied request");
    let d = f
        .backend
        .acquire(
            "s",
            &[member("t", 1, 60_000, "u1"), tokens("b", 1.0, SLOW, 2.0)],
        )
        .await
        .unwrap();
    assert!(!d.allowed);
    let d = f
        .backend
        .acquire("s", &[member("t", 1, 60_000, "u2")])
        .await
        .unwrap();
    assert!(d.allowed, "u1 was not admitted by the denied request");
}

async fn cost_zero_checks_without_debiting(f: Fixture) {
    f.backend
        .acquire("s", &[tokens("k", 2.0, SLOW, 1.5)])
        .await
        .unwrap();
    for _ in 0..3 {
        let d = f
            .backend
            .acquire("s", &[tokens("k", 2.0, SLOW, 0.0)])
            .await
            .unwrap();
        assert!(d.allowed);
        assert!((d.levels[0].remaining - 0.5).abs() < 1e-6);
    }
}

async fn retry_after_is_exact(f: Fixture) {
    // One token every 100 ms. A request denied with retry-after t is denied just before t (1 µs
    // before on memory's clock, 2 ms on Redis) and admitted at t. On Redis a trial whose early
    // request was answered after t proves nothing (the machine stalled): it is tried again.
    let early_by = if f.is_memory() {
        Duration::from_micros(1)
    } else {
        Duration::from_millis(2)
    };
    for trial in 0..10 {
        let bucket = tokens(&format!("k{trial}"), 1.0, 10.0, 1.0);
        let taken = Instant::now();
        let take = f.backend.acquire("s", std::slice::from_ref(&bucket));
        assert!(take.await.unwrap().allowed);
        let denied_sent = Instant::now();
        let d = f.backend.acquire("s", std::slice::from_ref(&bucket));
        let d = d.await.unwrap();
        let denied_answered = Instant::now();
        assert!(!d.allowed);
        let wait = Duration::from_micros(d.retry_after_us);
        assert!(
            d.retry_after_us <= 100_000
                && d.retry_after_us + f.slack_us(taken, Duration::ZERO) >= 100_000,
            "retry after {wait:?}, expected 100 ms less what passed since the take"
        );
        f.advance_until(denied_sent, wait - early_by).await;
        let early = f.backend.acquire("s", std::slice::from_ref(&bucket));
        let early = early.await.unwrap();
        if !f.is_memory() && denied_sent.elapsed() >= wait {
            continue;
        }
        assert!(!early.allowed, "denied just before the retry-after");
        f.advance_until(denied_answered, wait).await;
        let at = f.backend.acquire("s", std::slice::from_ref(&bucket));
        assert!(at.await.unwrap().allowed, "admitted at the retry-after");
        return;
    }
    panic!("no conclusive trial in 10: every early request took over 2 ms");
}

async fn the_retry_after_of_a_request_is_its_slowest_bucket(f: Fixture) {
    let since = Instant::now();
    f.backend
        .acquire(
            "s",
            &[
                tokens("fast", 1.0, 100.0, 1.0),
                tokens("slow", 1.0, 2.0, 1.0),
            ],
        )
        .await
        .unwrap();
    let d = f
        .backend
        .acquire(
            "s",
            &[
                tokens("fast", 1.0, 100.0, 1.0),
                tokens("slow", 1.0, 2.0, 1.0),
            ],
        )
        .await
        .unwrap();
    assert!(!d.allowed);
    assert!(
        d.retry_after_us <= 500_000
            && d.retry_after_us + f.slack_us(since, Duration::ZERO) >= 500_000,
        "{}",
        d.retry_after_us
    );
    assert_eq!(d.retry_after_us, d.levels[1].retry_after_us);
}

async fn keys_and_scopes_are_isolated(f: Fixture) {
    assert!(
        f.backend
            .acquire("s1", &[tokens("k", 1.0, SLOW, 1.0)])
            .await
            .unwrap()
            .allowed
    );
    assert!(
        f.backend
            .acquire("s1", &[tokens("k2", 1.0, SLOW, 1.0)])
            .await
            .unwrap()
            .allowed
    );
    assert!(
        f.backend
            .acquire("s2", &[tokens("k", 1.0, SLOW, 1.0)])
            .await
            .unwrap()
            .allowed
    );
    assert!(
        !f.backend
            .acquire("s1", &[tokens("k", 1.0, SLOW, 1.0)])
            .await
            .unwrap()
            .allowed
    );
}

async fn distinct_window_counts_new_members_and_ages_them_out(f: Fixture) {
    let window_ms = 400;
    let since = Instant::now();
    assert!(
        f.backend
            .acquire("s", &[member("tier", 3, window_ms, "u1")])
            .await
            .unwrap()
            .allowed
    );
    f.advance(Duration::from_millis(100)).await;
    for user in ["u2", "u3"] {
        let d = f
            .backend
            .acquire("s", &[member("tier", 3, window_ms, user)])
            .await
            .unwrap();
        assert!(d.allowed, "{user}");
    }
    let d = f
        .backend
        .acquire("s", &[member("tier", 3, window_ms, "u4")])
        .await
        .unwrap();
    assert!(!d.allowed, "the 4th new user is denied");
    assert_eq!(d.levels[0].remaining, 0.0);
    // u1 ages out 400 ms after it was admitted: about 300 ms from now.
    let wait = d.retry_after_us;
    assert!(
        wait <= 300_000 && wait + f.slack_us(since, Duration::from_millis(100)) >= 300_000,
        "{wait}"
    );
    let d = f
        .backend
        .acquire("s", &[member("tier", 3, window_ms, "u2")])
        .await
        .unwrap();
    assert!(d.allowed, "a repeat user costs nothing");
    let check = Bucket {
        check_only: true,
        ..member("tier", 3, window_ms, "u5")
    };
    assert!(!f.backend.acquire("s", &[check]).await.unwrap().allowed);
    // From the denial's answer, `wait` is at or after u1's age-out (u2 and u3 count 100 ms
    // longer).
    f.advance(Duration::from_micros(wait)).await;
    let d = f
        .backend
        .acquire("s", &[member("tier", 3, window_ms, "u4")])
        .await
        .unwrap();
    assert!(d.allowed, "u1 aged out");
    let d = f
        .backend
        .acquire("s", &[member("tier", 3, window_ms, "u5")])
        .await
        .unwrap();
    assert!(!d.allowed, "u2 and u3 still count");
}

async fn an_unlimited_window_admits_everyone(f: Fixture) {
    for n in 0..50 {
        let d = f
            .backend
            .acquire("s", &[member("tier", 0, 1_000, &format!("u{n}"))])
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.levels[0].remaining, f64::INFINITY);
    }
}

async fn a_penalty_holds_the_bucket_closed_then_it_refills_from_empty(f: Fixture) {
    let since = Instant::now();
    let held_until = f
        .backend
        .penalize("s", "k", 2.0, 10.0, Duration::from_millis(200))
        .await
        .unwrap();
    let d = f
        .backend
        .acquire("s", &[tokens("k", 2.0, 10.0, 1.0)])
        .await
        .unwrap();
    assert!(!d.allowed);
    assert_eq!(d.levels[0].held_until_us, held_until);
    // The rest of the hold, then 100 ms for one token.
    assert!(
        d.retry_after_us <= 300_000
            && d.retry_after_us + f.slack_us(since, Duration::ZERO) >= 300_000,
        "{}",
        d.retry_after_us
    );
    let check = f
        .backend
        .acquire("s", &[tokens("k", 2.0, 10.0, 0.0)])
        .await
        .unwrap();
    assert!(!check.allowed, "even a check is denied while held");
    f.advance(Duration::from_millis(310)).await;
    let d = f
        .backend
        .acquire("s", &[tokens("k", 2.0, 10.0, 1.0)])
        .await
        .unwrap();
    assert!(d.allowed);
    // Refilled from empty at the end of the hold: 110 ms at 10/s is 1.1 tokens, less the one
    // taken, plus what refilled while the test ran longer.
    let late = f.slack_us(since, Duration::from_millis(310)) as f64 / 1e6;
    let remaining = d.levels[0].remaining;
    assert!(
        remaining >= 0.1 - 1e-6 && remaining <= 0.1 + 10.0 * late + 1e-6,
        "{:?}",
        d.levels
    );
}

async fn a_penalty_without_a_hold_only_drains(f: Fixture) {
    let since = Instant::now();
    f.backend
        .penalize("s", "k", 5.0, 10.0, Duration::ZERO)
        .await
        .unwrap();
    let d = f
        .backend
        .acquire("s", &[tokens("k", 5.0, 10.0, 1.0)])
        .await
        .unwrap();
    assert!(!d.allowed, "drained");
    assert_eq!(d.levels[0].held_until_us, 0, "not held");
    assert!(
        d.retry_after_us <= 100_000
            && d.retry_after_us + f.slack_us(since, Duration::ZERO) >= 100_000,
        "it refills at once: one token in 100 ms, not {} µs",
        d.retry_after_us
    );
}

async fn a_policy_change_applies_to_existing_buckets(f: Fixture) {
    f.backend
        .acquire("s", &[tokens("k", 10.0, SLOW, 8.0)])
        .await
        .unwrap();
    // The capacity shrinks to 1: the 2 tokens left become 1.
    let d = f
        .backend
        .acquire("s", &[tokens("k", 1.0, SLOW, 1.0)])
        .await
        .unwrap();
    assert!(d.allowed);
    assert!(
        !f.backend
            .acquire("s", &[tokens("k", 1.0, SLOW, 1.0)])
            .await
            .unwrap()
            .allowed
    );
}

async fn idle_buckets_expire_once_full(f: Fixture) {
    // Full again 10 ms after the take.
    f.backend
        .acquire("s", &[tokens("k", 1.0, 100.0, 1.0)])
        .await
        .unwrap();
    f.backend
        .acquire("s", &[member("t", 5, 30, "u1")])
        .await
        .unwrap();
    let ids = f.backend.list(100).await.unwrap();
    let id = |key: &str| BucketId {
        scope: "s".into(),
        key: key.into(),
    };
    assert!(ids.contains(&id("k")) && ids.contains(&id("t")), "{ids:?}");
    f.advance(Duration::from_millis(60)).await;
    // Both are past their TTLs now. Under a loaded test run Redis has once still listed one
    // (an expired key goes when Redis next looks at it, or in its expiry cycle), so on Redis
    // allow it a moment; the memory backend must be exact at once (its clock stands still).
    let mut ids = f.backend.list(100).await.unwrap();
    for _ in 0..25 {
        if ids.is_empty() || f.clock.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ids = f.backend.list(100).await.unwrap();
    }
    assert!(ids.is_empty(), "{ids:?}");
}

async fn usage_reports_level_and_time_to_full(f: Fixture) {
    let policy = Policy::TokenBucket {
        capacity: 10.0,
        refill_per_second: 1.0,
    };
    let since = Instant::now();
    f.backend
        .acquire("s", &[tokens("k", 10.0, 1.0, 4.0)])
        .await
        .unwrap();
    let usage = f
        .backend
        .usage("s", &[("k".into(), policy), ("never".into(), policy)])
        .await
        .unwrap();
    // 4 taken, less what refilled (1 a second) while the test ran.
    let refilled = f.slack_us(since, Duration::ZERO) as f64 / 1e6;
    assert!(
        usage[0].level <= 4.0 + 1e-9 && usage[0].level >= 4.0 - refilled,
        "{usage:?}"
    );
    assert!((usage[0].ratio() - usage[0].level / 10.0).abs() < 1e-9);
    assert!(
        usage[0].time_to_full_us <= 4_000_000
            && usage[0].time_to_full_us + f.slack_us(since, Duration::ZERO) >= 4_000_000
    );
    assert_eq!(usage[1].level, 0.0, "a bucket never used is full");
}

async fn usage_of_a_distinct_window_counts_its_members_until_they_age_out(f: Fixture) {
    let policy = Policy::DistinctWindow {
        limit: 10,
        window_ms: 60_000,
    };
    let since = Instant::now();
    for user in ["u1", "u2", "u1"] {
        let d = f
            .backend
            .acquire("s", &[member("t", 10, 60_000, user)])
            .await;
        assert!(d.unwrap().allowed);
    }
    let usage = f
        .backend
        .usage("s", &[("t".into(), policy), ("none".into(), policy)])
        .await
        .unwrap();
    assert_eq!(usage[0].level, 2.0, "two distinct users: {usage:?}");
    assert!(
        usage[0].time_to_full_us <= 60_000_000
            && usage[0].time_to_full_us + f.slack_us(since, Duration::ZERO) >= 60_000_000,
        "empty once the newest ages out: {usage:?}"
    );
    assert_eq!(usage[1].level, 0.0);
    assert_eq!(usage[1].time_to_full_us, 0);
}

async fn policy_rules_are_stored_and_versioned(f: Fixture) {
    let (v0, rules) = f.backend.load_policies().await.unwrap();
    assert!(rules.is_empty());
    let policy = Policy::TokenBucket {
        capacity: 3.0,
        refill_per_second: 0.5,
    };
    f.backend
        .store_policy("throughput:*", Some(&policy))
        .await
        .unwrap();
    let (v1, rules) = f.backend.load_policies().await.unwrap();
    assert!(v1 > v0);
    assert_eq!(rules, vec![("throughput:*".to_owned(), policy)]);
    assert_eq!(f.backend.policies_version().await.unwrap(), v1);
    f.backend.store_policy("throughput:*", None).await.unwrap();
    let (v2, rules) = f.backend.load_policies().await.unwrap();
    assert!(v2 > v1 && rules.is_empty());
}

/// Concurrent acquires (on Redis they share script calls) are each decided on their own, in
/// some order, all or nothing: a bucket of 10 admits exactly 10 of 30, and a two-bucket
/// acquire denied for one bucket takes nothing from the other.
async fn concurrent_acquires_are_each_all_or_nothing(f: Fixture) {
    let acquires = (0..30).map(|n| {
        let backend = f.backend.clone();
        async move {
            let scope = format!("s{}", n % 3);
            let mut buckets = vec![tokens("shared", 10.0, SLOW, 1.0)];
            if n % 2 == 1 {
                // "tiny" is empty once any acquire took it (this one's first step does, or
                // finds it done): the two-bucket acquire is denied and "shared" keeps its token.
                let tiny = tokens("tiny", 1.0, SLOW, 1.0);
                backend
                    .acquire(&scope, std::slice::from_ref(&tiny))
                    .await
                    .unwrap();
                buckets.push(tiny);
            }
            let decision = backend.acquire(&scope, &buckets).await.unwrap();
            (scope, decision)
        }
    });
    let decisions = futures::future::join_all(acquires).await;
    for scope in ["s0", "s1", "s2"] {
        let of_scope: Vec<_> = decisions.iter().filter(|(s, _)| s == scope).collect();
        let allowed = of_scope.iter().filter(|(_, d)| d.allowed).count();
        let denied_by_tiny = of_scope
            .iter()
            .filter(|(_, d)| d.levels.len() == 2 && d.levels[1].limiting)
            .count();
        assert_eq!(
            denied_by_tiny, 5,
            "{scope}: every two-bucket acquire was short"
        );
        assert_eq!(allowed, 5, "{scope}: the one-bucket acquires all fit");
        let d = f
            .backend
            .acquire(scope, &[tokens("shared", 10.0, SLOW, 5.0)])
            .await
            .unwrap();
        assert!(
            d.allowed,
            "{scope}: the denied acquires took nothing: {:?}",
            d.levels
        );
        let d = f
            .backend
            .acquire(scope, &[tokens("shared", 10.0, SLOW, 1.0)])
            .await
            .unwrap();
        assert!(!d.allowed, "{scope}: exactly 10 were taken");
    }
}

async fn many_acquires_of_one_bucket_admit_exactly_its_tokens(f: Fixture) {
    let bucket = [tokens("k", 10.0, SLOW, 1.0)];
    let acquires = (0..40).map(|_| f.backend.acquire("s", &bucket));
    let decisions = futures::future::join_all(acquires).await;
    let allowed = decisions
        .iter()
        .filter(|d| d.as_ref().unwrap().allowed)
        .count();
    assert_eq!(allowed, 10);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Fixture::memory().await).await;
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Fixture::redis().await).await;
            })*
        }
    };
}

conformance!(
    a_new_bucket_is_full_and_debits_exactly,
    fractional_tokens_are_kept_whole,
    all_or_nothing_when_one_bucket_is_short_none_is_debited,
    cost_zero_checks_without_debiting,
    retry_after_is_exact,
    the_retry_after_of_a_request_is_its_slowest_bucket,
    keys_and_scopes_are_isolated,
    distinct_window_counts_new_members_and_ages_them_out,
    an_unlimited_window_admits_everyone,
    a_penalty_holds_the_bucket_closed_then_it_refills_from_empty,
    a_penalty_without_a_hold_only_drains,
    a_policy_change_applies_to_existing_buckets,
    idle_buckets_expire_once_full,
    usage_reports_level_and_time_to_full,
    usage_of_a_distinct_window_counts_its_members_until_they_age_out,
    policy_rules_are_stored_and_versioned,
    concurrent_acquires_are_each_all_or_nothing,
    many_acquires_of_one_bucket_admit_exactly_its_tokens,
);
