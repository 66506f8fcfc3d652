//! Alerts end to end: analytics follows a sending mesh's event log while the simulated Meta
//! fails half of the sends; one ERROR_RATE alert fires (seen live on `StreamAlerts`, and in
//! the snapshot of a later subscriber), and once Meta recovers and sends go on succeeding it
//! resolves, once. `ListAlerts` then holds that one alert, resolved. Every wait has a deadline;
//! nothing is asserted after a sleep.
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Streaming;
use tonic::transport::Channel;
use wamesh_analytics::alerts::AlertConfig;
use wamesh_analytics::consumer::ConsumerConfig;
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_proto::analytics::v1 as an;
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_runtime::Shutdown;

use super::harness::{SendMesh, SendSetup, text};

/// Long enough for a loaded machine; the alerts themselves take a few seconds.
const WAIT: Duration = Duration::from_secs(60);

/// The next change of an ERROR_RATE alert on `stream` (other kinds are skipped), before
/// `within` runs out.
async fn next_error_rate_change(
    stream: &mut Streaming<an::AlertChange>,
    within: Duration,
    what: &str,
) -> an::AlertChange {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("{what}: no ERROR_RATE change within {within:?}"))
            .unwrap_or_else(|e| panic!("{what}: the alert stream failed: {e}"))
            .unwrap_or_else(|| panic!("{what}: the alert stream ended"));
        let alert = item.alert.as_ref().expect("a change carries its alert");
        if alert.kind == an::AlertKind::ErrorRate as i32 {
            return item;
        }
    }
}

/// Queues a text to one of `users` in turn every 100 ms until `stop` says so.
async fn keep_sending(
    messaging: MessagingClient<Channel>,
    users: Vec<String>,
    mut stop: watch::Receiver<bool>,
) {
    for n in 0.. {
        let user = &users[n % users.len()];
        let request = text(&format!("steady-{n}"), user, &format!("steady #{n}"));
        messaging
            .clone()
            .send_message(request)
            .await
            .unwrap_or_else(|e| panic!("SendMessage steady-{n}: {e}"));
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_rate_above_the_threshold_fires_one_alert_that_resolves_once_sends_succeed() {
    let mesh = SendMesh::start(SendSetup::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let analytics = Analytics::build(AnalyticsConfig {
        database_url: wamesh_testkit::fresh_postgres_url().await,
        max_db_connections: 4,
        messaging_url: mesh.messaging_url(),
        aggregation_interval_ms: 3_600_000,
        retention_days: 90,
        consumer: ConsumerConfig::default(),
        // A 10 s window, judged every 200 ms; rate-limit asked too (its buckets stay far
        // from the warning here).
        alerts: AlertConfig {
            window: Duration::from_secs(10),
            eval_interval: Duration::from_millis(200),
            ratelimit_url: Some(mesh.ratelimit_url()),
            ..AlertConfig::default()
        },
        metrics_urls: Vec::new(),
    })
    .await
    .expect("build analytics");
    let stop_analytics = Shutdown::new();
    let serving = tokio::spawn(analytics.serve(listener, stop_analytics.clone()));
    let client = AnalyticsClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
    );
    let mut changes = client
        .clone()
        .stream_alerts(an::StreamAlertsRequest {})
        .await
        .expect("StreamAlerts")
        .into_inner();

    // Sixteen users write first, so free-form answers may go (each stays far below its pair
    // rate).
    let users: Vec<String> = (0..16).map(|n| format!("155570000{n:02}")).collect();
    for user in &users {
        mesh.user_writes(user, "hi").await;
    }

    // Meta fails half of the sends (transient: retried, so failures keep coming for a while).
    mesh.sim_config(json!({"error_rate": 0.5, "error_code": 131000}))
        .await;
    let queued = (0..48).map(|n| {
        let user = &users[n % users.len()];
        mesh.queue(text(&format!("failing-{n}"), user, &format!("#{n}")))
    });
    futures::future::join_all(queued).await;
    let fired = next_error_rate_change(&mut changes, WAIT, "firing").await;
    assert!(!fired.initial, "a change, not part of the snapshot");
    let fired = fired.alert.expect("the alert");
    assert_eq!(
        (
            fired.state,
            fired.subject.as_str(),
            fired.resolved_at_unix_ms
        ),
        (an::AlertState::Firing as i32, "all", 0)
    );
    assert_eq!(fired.threshold, 0.05);
    assert!(fired.value > 0.05 && fired.peak >= fired.value, "{fired:?}");

    // A subscriber arriving now gets it in the snapshot.
    let mut late = client
        .clone()
        .stream_alerts(an::StreamAlertsRequest {})
        .await
        .expect("StreamAlerts")
        .into_inner();
    let snapshot = next_error_rate_change(&mut late, WAIT, "the snapshot").await;
    assert!(snapshot.initial, "{snapshot:?}");
    assert_eq!(snapshot.alert.expect("the alert").id, fired.id);
    drop(late);

    // Meta recovers; sends go on, all succeeding. The failures leave the window and the alert
    // resolves: once, the same alert, with no new one after it.
    mesh.sim_config(json!({"error_rate": 0.0})).await;
    let (stop_sending, stopped) = watch::channel(false);
    let sending = tokio::spawn(keep_sending(mesh.grpc(), users.clone(), stopped));
    let resolved = next_error_rate_change(&mut changes, WAIT, "resolving").await;
    let resolved = resolved.alert.expect("the alert");
    assert_eq!(
        (resolved.id, resolved.state),
        (fired.id, an::AlertState::Resolved as i32)
    );
    assert!(resolved.resolved_at_unix_ms >= resolved.fired_at_unix_ms);
    // Ten more evaluations with sends going on: no ERROR_RATE change at all.
    let quiet = tokio::time::timeout(
        Duration::from_secs(2),
        next_error_rate_change(&mut changes, Duration::from_secs(3), "quiet"),
    )
    .await;
    assert!(quiet.is_err(), "a change after the resolution: {quiet:?}");
    stop_sending.send(true).unwrap();
    sending.await.expect("the sender ends");

    let listed = client
        .clone()
        .list_alerts(an::ListAlertsRequest {
            firing_only: false,
            limit: 0,
        })
        .await
        .expect("ListAlerts")
        .into_inner()
        .alerts;
    let error_rate: Vec<&an::Alert> = listed
        .iter()
        .filter(|a| a.kind == an::AlertKind::ErrorRate as i32)
        .collect();
    assert_eq!(error_rate.len(), 1, "{listed:#?}");
    let stored = error_rate[0];
    assert_eq!(
        (stored.id, stored.state, stored.resolved_at_unix_ms),
        (
            fired.id,
            an::AlertState::Resolved as i32,
            resolved.resolved_at_unix_ms
        )
    );
    assert!(stored.peak >= fired.value, "{stored:?}");
    let firing = client
        .clone()
        .list_alerts(an::ListAlertsRequest {
            firing_only: true,
            limit: 1_000,
        })
        .await
        .expect("ListAlerts")
        .into_inner()
        .alerts;
    assert!(
        firing
            .iter()
            .all(|a| a.kind != an::AlertKind::ErrorRate as i32),
        "{firing:#?}"
    );
    let refused = client
        .clone()
        .list_alerts(an::ListAlertsRequest {
            firing_only: false,
            limit: 1_001,
        })
        .await
        .expect_err("above the maximum");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().starts_with("limit:"), "{refused:?}");

    // Shutdown stops the evaluator and ends the open stream; analytics stops cleanly.
    stop_analytics.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(30), changes.message())
        .await
        .expect("the alert stream ends at shutdown");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("analytics stops within 30 s")
        .expect("analytics' task")
        .expect("analytics stops cleanly");
    mesh.stop().await;
}
