//! Health and rate-limit peaks through the real server: a real rate-limit's usage becomes the
//! overview's peak; each service's error rate is the increase of its request counters.
use super::*;

/// rate-limit in memory on port 0, one bucket (`load:test` of scope `waba`) 90% used.
async fn rate_limit_90_percent_used() -> (String, Shutdown) {
    use wamesh_proto::ratelimit::v1 as rl;
    let ratelimit = wamesh_ratelimit::RateLimit::build(&wamesh_ratelimit::RateLimitConfig {
        redis_url: None,
        redis_prefix: String::new(),
        limiter: wamesh_ratelimit::LimiterConfig::default(),
    })
    .await
    .expect("rate-limit in memory");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = Shutdown::new();
    tokio::spawn(ratelimit.serve(listener, stop.clone()));
    let mut client = rl::rate_limiter_client::RateLimiterClient::new(
        Channel::from_shared(url.clone()).unwrap().connect_lazy(),
    );
    let bucket = rl::policy::Kind::TokenBucket(rl::TokenBucket {
        capacity: 10.0,
        refill_per_second: 1e-6,
    });
    client
        .set_policy(rl::SetPolicyRequest {
            selector: "load:test".into(),
            policy: Some(rl::Policy { kind: Some(bucket) }),
            remove: false,
        })
        .await
        .expect("SetPolicy");
    let taken = client
        .acquire(rl::AcquireRequest {
            scope: "waba".into(),
            buckets: vec![rl::BucketRequest {
                key: "load:test".into(),
                cost: 9.0,
                ..Default::default()
            }],
        })
        .await
        .expect("Acquire")
        .into_inner();
    assert!(taken.allowed);
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_rate_limit_reports_is_the_overviews_peak() {
    let (url, rate_limit) = rate_limit_90_percent_used().await;
    let started = wamesh_analytics::now_ms();
    let (mut client, stop) = serve(&[], &[], Some(url)).await;
    let last_24h = Some(pb::Period {
        period: Some(pb::period::Period::Named("24h".into())),
    });
    // The evaluator asks rate-limit at once, and writes the first peak it sees at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let peaks = loop {
        let o = client
            .get_overview(pb::GetOverviewRequest {
                period: last_24h.clone(),
                business_phone_number_id: String::new(),
            })
            .await
            .expect("GetOverview")
            .into_inner();
        if !o.rate_limit_peaks.is_empty() {
            break o.rate_limit_peaks;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no peak within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(peaks.len(), 1, "{peaks:?}");
    let peak = &peaks[0];
    assert_eq!(
        (peak.scope.as_str(), peak.key.as_str()),
        ("waba", "load:test")
    );
    assert!((peak.usage_ratio - 0.9).abs() < 1e-3, "{peak:?}");
    assert!(
        (started..=wamesh_analytics::now_ms()).contains(&peak.at_unix_ms),
        "{peak:?}"
    );
    stop.cancel();
    rate_limit.cancel();
}

/// A `/metrics` on port 0 answering whatever `text` holds at the time; its URL.
async fn metrics_server(text: std::sync::Arc<std::sync::Mutex<String>>) -> (String, Shutdown) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = text.clone();
            async move { text.lock().unwrap().clone() }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = Shutdown::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
    });
    (url, stop)
}

/// The counters of a gateway and a messaging sharing one `/metrics`, as in `wamesh dev`.
fn exposition(
    ok: u64,
    not_found: u64,
    unavailable: u64,
    grpc_ok: u64,
    invalid: u64,
    internal: u64,
) -> String {
    format!(
        r#"# HELP http_server_requests_total HTTP requests answered.
# TYPE http_server_requests_total counter
http_server_requests_total{{service="gateway",method="POST",route="/api/webhooks/whatsapp",status="200"}} {ok}
http_server_requests_total{{service="gateway",method="GET",route="other",status="404"}} {not_found}
http_server_requests_total{{service="gateway",method="POST",route="/api/webhooks/whatsapp",status="503"}} {unavailable}
# TYPE rpc_server_requests_total counter
rpc_server_requests_total{{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="OK"}} {grpc_ok}
rpc_server_requests_total{{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="INVALID_ARGUMENT"}} {invalid}
rpc_server_requests_total{{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="INTERNAL"}} {internal}
# TYPE rpc_server_duration_seconds histogram
rpc_server_duration_seconds_bucket{{service="messaging",rpc_service="x",rpc_method="y",le="+Inf"}} 99
"#
    )
}

/// The scraped services of a health report: (service, total, errors), in order.
fn scraped(health: &pb::SystemHealth) -> Vec<(String, u64, u64)> {
    health
        .errors
        .iter()
        .filter(|e| !e.service.contains('.'))
        .map(|e| (e.service.clone(), e.total, e.errors))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rates_per_service_are_the_metrics_increase_over_the_window() {
    let text = std::sync::Arc::new(std::sync::Mutex::new(exposition(100, 5, 2, 40, 3, 1)));
    let (url, metrics) = metrics_server(text.clone()).await;
    // Nothing listens on port 9.
    let unreachable = "http://127.0.0.1:9/metrics".to_owned();
    let (client, stop) = serve_scraping(&[], &[], None, 3650, vec![url, unreachable.clone()]).await;
    let health = || {
        let mut client = client.clone();
        async move {
            client
                .get_system_health(pb::GetSystemHealthRequest {})
                .await
                .expect("GetSystemHealth")
                .into_inner()
        }
    };

    // The first read is the baseline: both services seen, nothing counted yet.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let first = loop {
        let h = health().await;
        if scraped(&h).len() == 2 && !h.unavailable.iter().all(|u| !u.contains(&unreachable)) {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never scraped: {h:?}"
        );
        tokio::time::sleep(SCRAPE_EVERY).await;
    };
    assert_eq!(
        scraped(&first),
        [("gateway".to_owned(), 0, 0), ("messaging".to_owned(), 0, 0)]
    );
    let services: Vec<&str> = first.errors.iter().map(|e| e.service.as_str()).collect();
    assert_eq!(
        services,
        ["messaging.send", "meta.delivery", "gateway", "messaging"]
    );
    let prefix = format!("metrics {unreachable}: ");
    assert!(
        first.unavailable.iter().any(|u| u.starts_with(&prefix)),
        "{:?}",
        first.unavailable
    );

    // gateway: 20 more answered (15 + 2 + 3), 3 of them 503 (a 404 is the client's);
    // messaging: 10 more calls (2 + 4 + 4), 4 INTERNAL (INVALID_ARGUMENT is the client's).
    *text.lock().unwrap() = exposition(115, 7, 5, 42, 7, 5);
    let want = [
        ("gateway".to_owned(), 20, 3),
        ("messaging".to_owned(), 10, 4),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let later = loop {
        let h = health().await;
        if scraped(&h) == want {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never counted: {h:?}"
        );
        tokio::time::sleep(SCRAPE_EVERY).await;
    };
    let gateway = later
        .errors
        .iter()
        .find(|e| e.service == "gateway")
        .unwrap();
    assert!(
        (gateway.error_rate - 3.0 / 20.0).abs() < 1e-9,
        "{gateway:?}"
    );

    // messaging restarted: its counters start again from zero, and what it counted since
    // adds to the window's increase.
    *text.lock().unwrap() = exposition(115, 7, 5, 1, 0, 1);
    let want = [
        ("gateway".to_owned(), 20, 3),
        ("messaging".to_owned(), 12, 5),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h = health().await;
        if scraped(&h) == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reset not counted: {h:?}"
        );
        tokio::time::sleep(SCRAPE_EVERY).await;
    }
    stop.cancel();
    metrics.cancel();
}
