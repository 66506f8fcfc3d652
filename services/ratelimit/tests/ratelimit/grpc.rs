//! The RateLimiter gRPC service on port 0, over real Redis (a fresh key prefix per test): what a
//! client sees, including the refusals of bad requests.
use tonic::Code;
use wamesh_proto::ratelimit::v1 as pb;

use crate::{Service, acquire, bucket, set_policy, token_bucket};

#[tokio::test]
async fn whatsapp_defaults_apply_and_a_policy_set_at_run_time_takes_over() {
    let service = Service::on_shared_redis(&wamesh_testkit::fresh_redis_prefix()).await;
    let mut client = service.client();
    let policy = client
        .get_policy(pb::GetPolicyRequest {
            key: "throughput:123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policy.source, "builtin:throughput:");
    assert_eq!(policy.policy, Some(token_bucket(80.0, 80.0)));

    let first = acquire(&mut client, vec![bucket("throughput:123", 1.0)]).await;
    assert!(first.allowed);
    assert_eq!(first.buckets[0].capacity, 80.0);

    set_policy(&mut client, "throughput:*", token_bucket(2.0, 0.001)).await;
    // The existing bucket (79 left) now has a capacity of 2.
    assert!(
        acquire(&mut client, vec![bucket("throughput:123", 2.0)])
            .await
            .allowed
    );
    let denied = acquire(&mut client, vec![bucket("throughput:123", 1.0)]).await;
    assert!(!denied.allowed);
    assert!(
        denied.retry_after_us > 900_000_000,
        "1 token at 0.001/s: {}",
        denied.retry_after_us
    );
    assert!(!denied.degraded);
}

#[tokio::test]
async fn a_distinct_window_and_a_token_bucket_are_acquired_together() {
    let service = Service::on_shared_redis(&wamesh_testkit::fresh_redis_prefix()).await;
    let mut client = service.client();
    let tier = |user: &str| pb::BucketRequest {
        key: "tier:waba-1".into(),
        member: user.into(),
        policy: Some(pb::Policy {
            kind: Some(pb::policy::Kind::DistinctWindow(pb::DistinctWindow {
                limit: 2,
                window_ms: 60_000,
            })),
        }),
        ..Default::default()
    };
    // A refill slow enough that the level only moves by what the requests take.
    set_policy(&mut client, "throughput:9", token_bucket(10.0, 0.001)).await;
    for user in ["u1", "u2"] {
        assert!(
            acquire(&mut client, vec![bucket("throughput:9", 1.0), tier(user)])
                .await
                .allowed
        );
    }
    let denied = acquire(&mut client, vec![bucket("throughput:9", 1.0), tier("u3")]).await;
    assert!(!denied.allowed);
    assert!(denied.buckets[1].limiting && !denied.buckets[0].limiting);
    let usage = client
        .get_usage(pb::GetUsageRequest {
            scope: "waba-1".into(),
            keys: vec!["throughput:9".into()],
            top: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        (usage.buckets[0].level - 2.0).abs() < 0.01,
        "the denied request took nothing: {usage:?}"
    );
}

#[tokio::test]
async fn penalize_holds_a_bucket_and_usage_flags_the_busiest() {
    let service = Service::on_shared_redis(&wamesh_testkit::fresh_redis_prefix()).await;
    let mut client = service.client();
    for _ in 0..44 {
        assert!(
            acquire(&mut client, vec![bucket("pair:1:15550001", 1.0)])
                .await
                .allowed
        );
    }
    acquire(&mut client, vec![bucket("pair:1:15550002", 1.0)]).await;
    let top = client
        .get_usage(pb::GetUsageRequest {
            scope: String::new(),
            keys: vec![],
            top: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(top.buckets.len(), 1);
    assert_eq!(top.buckets[0].key, "pair:1:15550001");
    assert!(top.buckets[0].warning, "44 of 45 is above 0.8: {top:?}");

    let held = client
        .penalize(pb::PenalizeRequest {
            scope: "waba-1".into(),
            key: "pair:1:15550002".into(),
            hold_ms: 60_000,
            meta_error_code: 131_056,
        })
        .await
        .unwrap()
        .into_inner();
    let denied = acquire(&mut client, vec![bucket("pair:1:15550002", 1.0)]).await;
    assert!(!denied.allowed);
    assert_eq!(
        denied.buckets[0].held_until_unix_us,
        held.held_until_unix_us
    );
    assert!(denied.retry_after_us > 59_000_000);
}

#[tokio::test]
async fn penalties_are_counted_by_metas_known_codes_and_any_other_code_is_other() {
    let _ = wamesh_runtime::metrics::install();
    let service = Service::on_shared_redis(&wamesh_testkit::fresh_redis_prefix()).await;
    let mut client = service.client();
    for code in [130_429, 987_654] {
        client
            .penalize(pb::PenalizeRequest {
                scope: "waba-1".into(),
                key: "throughput:1065".into(),
                hold_ms: 1_000,
                meta_error_code: code,
            })
            .await
            .unwrap();
    }
    let metrics = wamesh_runtime::metrics::install().render();
    for code in ["130429", "other"] {
        let series = format!(
            "wamesh_ratelimit_penalties_total{{policy=\"throughput\",meta_code=\"{code}\"}}"
        );
        assert!(metrics.contains(&series), "{series} in:\n{metrics}");
    }
    assert!(!metrics.contains("987654"), "{metrics}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason_and_change_nothing() {
    let service = Service::on_shared_redis(&wamesh_testkit::fresh_redis_prefix()).await;
    let mut client = service.client();
    let cases: Vec<(pb::AcquireRequest, &str)> = vec![
        (
            pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![],
            },
            "1 to 16 buckets",
        ),
        (
            pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![bucket("unknown:1", 1.0)],
            },
            "no policy",
        ),
        (
            pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![bucket("throughput:1", 81.0)],
            },
            "exceeds its capacity",
        ),
        (
            pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![bucket("throughput:1", -1.0)],
            },
            "0 or more",
        ),
        (
            pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![bucket("throughput:1", 1.0), bucket("throughput:1", 1.0)],
            },
            "named twice",
        ),
        (
            pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![bucket("tier:1", 0.0)],
            },
            "give the member",
        ),
        (
            pb::AcquireRequest {
                scope: "{s}".into(),
                buckets: vec![bucket("throughput:1", 1.0)],
            },
            "scope",
        ),
        (
            pb::AcquireRequest {
                scope: "s".into(),
                buckets: vec![pb::BucketRequest {
                    policy: Some(token_bucket(0.0, 1.0)),
                    ..bucket("x", 0.0)
                }],
            },
            "capacity must be",
        ),
    ];
    for (request, needle) in cases {
        let status = client.acquire(request.clone()).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::InvalidArgument | Code::NotFound),
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().contains(needle),
            "{:?} should say {needle:?}",
            status.message()
        );
    }
    let status = client
        .set_policy(pb::SetPolicyRequest {
            selector: "*".into(),
            policy: Some(token_bucket(1.0, 1.0)),
            remove: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let full = acquire(&mut client, vec![bucket("throughput:1", 80.0)]).await;
    assert!(full.allowed, "no refused request took tokens");
}

#[tokio::test]
async fn a_stream_answers_every_acquire_in_order_and_a_bad_one_does_not_end_it() {
    let service = Service::on_shared_redis(&wamesh_testkit::fresh_redis_prefix()).await;
    let mut client = service.client();
    set_policy(&mut client, "throughput:s", token_bucket(5.0, 0.001)).await;
    let (requests, queued) = tokio::sync::mpsc::channel(64);
    let mut answers = client
        .acquire_stream(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    let streamed =
        |id: u64, buckets: Vec<pb::BucketRequest>, traceparent: &str| pb::AcquireStreamRequest {
            id,
            acquire: Some(pb::AcquireRequest {
                scope: "waba-1".into(),
                buckets,
            }),
            traceparent: traceparent.into(),
        };
    // Ten in flight at once: nine for one token of a 5-token bucket, one with no bucket.
    for id in 1..=10 {
        let buckets = if id == 6 {
            vec![]
        } else {
            vec![bucket("throughput:s", 1.0)]
        };
        let traceparent = if id == 2 {
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        } else {
            ""
        };
        requests
            .send(streamed(id, buckets, traceparent))
            .await
            .unwrap();
    }
    let mut admitted = 0;
    for id in 1..=10 {
        let answer = answers.message().await.unwrap().expect("an answer");
        assert_eq!(answer.id, id, "answers come in the order asked");
        match answer.result.unwrap() {
            pb::acquire_stream_response::Result::Decision(d) => admitted += u32::from(d.allowed),
            pb::acquire_stream_response::Result::Error(e) => {
                assert_eq!(id, 6, "only the request without buckets fails: {e:?}");
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert!(e.message.contains("1 to 16 buckets"), "{e:?}");
            }
        }
    }
    assert_eq!(admitted, 5, "the 5 tokens went to 5 of the 9 acquires");

    // A message without its acquire is refused by name, and the stream goes on.
    requests
        .send(pb::AcquireStreamRequest {
            id: 99,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = answers.message().await.unwrap().expect("an answer");
    let Some(pb::acquire_stream_response::Result::Error(e)) = refused.result else {
        panic!("no acquire is an error: {refused:?}");
    };
    assert_eq!((refused.id, e.code), (99, Code::InvalidArgument as i32));
    assert!(e.message.starts_with("acquire:"), "{e:?}");

    // The failed requests did not end the stream; closing our side ends it cleanly.
    requests
        .send(streamed(11, vec![bucket("throughput:s", 0.0)], ""))
        .await
        .unwrap();
    let check = answers.message().await.unwrap().expect("an answer");
    assert_eq!(check.id, 11);
    let Some(pb::acquire_stream_response::Result::Decision(level)) = check.result else {
        panic!("a cost-0 check is a decision: {check:?}");
    };
    assert!(level.allowed && level.buckets[0].remaining < 0.01);
    drop(requests);
    assert!(answers.message().await.unwrap().is_none());
}
