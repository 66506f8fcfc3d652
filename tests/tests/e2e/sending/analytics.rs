//! Counted exactly once: analytics follows messaging's event log while users write and we
//! answer, and both are killed in the middle (their runtimes dropped: no drain, batches cut
//! mid-flight) and started again. At the end analytics' numbers equal what messaging's own log
//! says happened: nothing counted twice, nothing missed.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_proto::analytics::v1 as an;
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::events_client::EventsClient;
use wamesh_simulator::SendLimits;

use super::harness::{PHONE, SendMesh, SendSetup, text};

/// analytics in a runtime of its own, so a test can kill it as a crash would.
struct AnalyticsProcess {
    runtime: tokio::runtime::Runtime,
}

impl AnalyticsProcess {
    async fn start(config: &AnalyticsConfig, addr: SocketAddr) -> Self {
        let listener = crate::harness::bind_again(addr).await.into_std().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("analytics")
            .enable_all()
            .build()
            .expect("analytics' runtime");
        let config = config.clone();
        let (built, ready) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("analytics' listener");
            match Analytics::build(config).await {
                Ok(analytics) => {
                    let _ = built.send(Ok(()));
                    let _ = analytics
                        .serve(listener, wamesh_runtime::Shutdown::new())
                        .await;
                }
                Err(e) => {
                    let _ = built.send(Err(format!("{e:#}")));
                }
            }
        });
        ready
            .await
            .expect("analytics' runtime runs")
            .unwrap_or_else(|e| panic!("starting analytics: {e}"));
        Self { runtime }
    }

    fn kill(self) {
        self.runtime.shutdown_background();
    }
}

/// What messaging's own log says happened: the facts analytics must arrive at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    messages_in: u64,
    messages_out: u64,
    delivered: u64,
    read: u64,
    /// Messages whose `delivered` status came before any `read` (each gives a delivery time).
    delivery_times: u64,
    /// The last entry of the log.
    head: u64,
}

/// Reads messaging's whole event log (until it has been quiet for a second).
async fn read_log(messaging: &str) -> Expected {
    let channel = Channel::from_shared(messaging.to_owned()).unwrap();
    let mut stream = EventsClient::new(channel.connect().await.unwrap())
        .subscribe(pb::SubscribeRequest {
            after_seq: 0,
            kinds: Vec::new(),
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let mut expected = Expected::default();
    let (mut received, mut accepted, mut delivered, mut read) = (
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
        HashSet::new(),
    );
    while let Ok(item) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        let Some(item) = item.expect("a log entry") else {
            break;
        };
        let item = item.item.expect("an item");
        let pb::subscribe_response::Item::Event(e) = item else {
            continue;
        };
        expected.head = e.seq;
        match (e.kind.as_str(), e.status.as_str()) {
            ("message.received", _) => {
                received.insert(e.wamid);
            }
            ("send.accepted", _) => {
                accepted.insert(e.outbound_id);
            }
            ("status.updated", "delivered") if delivered.insert(e.wamid.clone()) => {
                expected.delivery_times += 1;
            }
            ("status.updated", "read") => {
                delivered.insert(e.wamid.clone());
                read.insert(e.wamid);
            }
            _ => {}
        }
    }
    expected.messages_in = received.len() as u64;
    expected.messages_out = accepted.len() as u64;
    expected.delivered = delivered.len() as u64;
    expected.read = read.len() as u64;
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_and_messaging_killed_mid_stream_count_every_event_exactly_once() {
    let mut mesh = SendMesh::start(SendSetup {
        throughput: Some(50.0),
        limits: SendLimits {
            throughput_per_s: 50.0,
            throughput_burst: 60.0,
            ..SendSetup::default().limits
        },
        lease: Duration::from_secs(3),
        graph_timeout: Duration::from_secs(1),
        evidence_window: Duration::from_secs(8),
        ..SendSetup::default()
    })
    .await;
    let analytics_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = AnalyticsConfig {
        database_url: wamesh_testkit::fresh_postgres_url().await,
        max_db_connections: 4,
        messaging_url: mesh.messaging_url(),
        aggregation_interval_ms: 3_600_000,
        retention_days: 90,
        // Small batches, so a kill cuts the stream between many commits.
        consumer: wamesh_analytics::consumer::ConsumerConfig {
            max_batch: 50,
            linger: Duration::from_millis(5),
            retry: Duration::from_millis(100),
        },
        alerts: wamesh_analytics::alerts::AlertConfig::default(),
        metrics_urls: Vec::new(),
    };
    let analytics = AnalyticsProcess::start(&config, analytics_addr).await;
    let client = AnalyticsClient::new(
        Channel::from_shared(format!("http://{analytics_addr}"))
            .unwrap()
            .connect_lazy(),
    );
    let started = wamesh_analytics::now_ms();

    let users: Vec<String> = (0..8).map(|n| format!("155560000{n:02}")).collect();
    for user in &users {
        mesh.user_writes(user, "hi").await;
    }
    let queued = (0..240).map(|n| {
        let user = &users[n % users.len()];
        mesh.queue(text(&format!("turn-{n}"), user, &format!("#{n}")))
    });
    let ids: Vec<i64> = futures::future::join_all(queued).await;

    // analytics dies once it has counted part of the stream, and comes back.
    wait_for_cursor(&client, 100).await;
    analytics.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let analytics = AnalyticsProcess::start(&config, analytics_addr).await;
    // Then messaging dies in the middle of sending, and comes back.
    wait_for_cursor(&client, 300).await;
    mesh.kill_messaging();
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.restart_messaging().await;

    for id in &ids {
        mesh.wait_for(*id, Duration::from_secs(120), "read", |m| {
            m.delivery_status == "read"
        })
        .await;
    }
    // Everything messaging logged, analytics has counted.
    let expected = read_log(&mesh.messaging_url()).await;
    assert_eq!(expected.messages_out, ids.len() as u64);
    assert_eq!(expected.read, ids.len() as u64);
    wait_for_cursor(&client, expected.head).await;

    let overview = client
        .clone()
        .get_overview(an::GetOverviewRequest {
            period: Some(an::Period {
                period: Some(an::period::Period::Range(an::TimeRange {
                    from_unix_ms: started - 60_000,
                    to_unix_ms: wamesh_analytics::now_ms() + 60_000,
                })),
            }),
            business_phone_number_id: PHONE.into(),
        })
        .await
        .expect("GetOverview")
        .into_inner();
    let counted = Expected {
        messages_in: overview.messages_in,
        messages_out: overview.messages_out,
        delivered: overview.delivered,
        read: overview.read,
        delivery_times: overview.delivery_time.unwrap_or_default().count,
        head: expected.head,
    };
    assert_eq!(counted, expected, "every event counted once");
    assert_eq!(overview.failed, 0);
    assert_eq!(overview.active_users, users.len() as u64);
    let response = overview.response_time.unwrap();
    assert_eq!(
        response.count,
        users.len() as u64,
        "each user's message answered once"
    );

    let health = client
        .clone()
        .get_system_health(an::GetSystemHealthRequest {})
        .await
        .expect("GetSystemHealth")
        .into_inner();
    assert_eq!(health.queue_depth, 0, "everything was sent");
    assert_eq!(
        health.unavailable,
        ["rate-limit: not configured (WAMESH_RATELIMIT_URL)"],
        "messaging answered"
    );
    let sends = &health.errors[0];
    assert_eq!(
        (sends.service.as_str(), sends.errors),
        ("messaging.send", 0)
    );
    assert!(
        sends.total > 0,
        "the sends counted since analytics restarted"
    );
    analytics.kill();
    mesh.stop().await;
}

/// Waits until analytics has counted the log up to `seq`.
async fn wait_for_cursor(client: &AnalyticsClient<Channel>, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(status) = client
            .clone()
            .get_consumer_status(an::GetConsumerStatusRequest {})
            .await
            && status.get_ref().cursor >= seq
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "analytics never counted up to {seq}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
