//! A scripted day of traffic through the simulator, read back exactly through every analytics
//! RPC and the gateway's REST API. Meta answers a send after 100 ms (so its `sent` webhook
//! usually overtakes its answer, as Meta's can), delivers 300 ms after accepting and, while the
//! read probability is 1, has the message read 600 ms after; users 5, 6 and 11 cannot receive
//! (Meta accepts, then fails those with 131026); `promo_gone` is known to messaging but not to
//! Meta, which refuses it before taking it (132001). Each user is answered as soon as they write.
//!
//! | user | writes | we send | Meta | then |
//! |---|---|---|---|---|
//! | 0 | hi | welcome | read | taps Yes; we send a list (read); user picks a row |
//! | 1 | hi | welcome | read | taps No |
//! | 2 | hi | welcome | read | answers with a text; we answer with a text (read) |
//! | 3 | hi | welcome | read | |
//! | 4 | hi | welcome | delivered | |
//! | 5, 6 | hi | welcome | failed 131026 | |
//! | 7 | hi | order_update | read | taps Yes |
//! | 8 | hi | order_update | read | answers with a text; we answer with a text (read) |
//! | 9 | hi | order_update, promo_gone | delivered; refused 132001 | |
//! | 10 | hi | order_update | delivered | writes again, without a context |
//! | 11 | hi | order_update | failed 131026 | |
//!
//! So: 19 in, 15 out (12 templates, a list, 2 texts), 12 delivered, 9 read, 4 failed (3 x
//! 131026, 1 x 132001, of 16 attempted); 12 active users in 12 sessions; 19 users' turns, 15 of
//! them answered (15 response times); 15 of ours, 7 of them answered; engagement 100 x (9/15 +
//! 7/15) / 2. Templates: `welcome` 7 sent, 5 delivered, 4 read, 3 replied, 2 clicked, 2 failed;
//! `order_update` 5, 4, 2, 2, 1, 1; `promo_gone` 0 sent, 1 failed. Percentiles are held to the
//! sketch's 1% of the true values, computed from messaging's event log ([`log`]); the checks
//! are in [`expect`], the operators' gateway in [`operators`]. Every wait has a deadline.
mod expect;
mod log;
mod operators;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh_analytics::alerts::AlertConfig;
use wamesh_analytics::consumer::ConsumerConfig;
use wamesh_analytics::{Analytics, AnalyticsConfig};
use wamesh_proto::analytics::v1 as an;
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;
use wamesh_proto::messaging::v1 as pb;
use wamesh_runtime::Shutdown;
use wamesh_simulator::Behaviour;

use super::harness::{PHONE, SendMesh, SendSetup, WABA, template, text};
use expect::Day;
use log::Log;
use operators::Operators;

const WAIT: Duration = Duration::from_secs(60);
/// Meta's delay from accepting a send to its `delivered` status.
const DELIVERED_AFTER_MS: u64 = 300;
const UNDELIVERABLE: [usize; 3] = [5, 6, 11];

fn user(n: usize) -> String {
    format!("1555444{n:04}")
}

fn template_of(n: usize) -> &'static str {
    if n < 7 { "welcome" } else { "order_update" }
}

/// A template of `body` with two quick replies, registered in messaging and, when `at_meta`,
/// at the simulated Meta.
async fn register(mesh: &SendMesh, name: &str, category: &str, body: &str, at_meta: bool) {
    let buttons: Vec<Value> = ["Yes", "No"]
        .iter()
        .map(|text| json!({"type": "QUICK_REPLY", "text": text}))
        .collect();
    mesh.template(
        pb::Template {
            waba_id: WABA.into(),
            name: name.into(),
            language: "en_US".into(),
            category: category.into(),
            status: pb::TemplateStatus::Approved as i32,
            components_json: json!([{"type": "BODY", "text": body},
                                    {"type": "BUTTONS", "buttons": buttons}])
            .to_string(),
            ..Default::default()
        },
        at_meta.then_some("APPROVED"),
    )
    .await;
}

/// The user sends `content` (`/_sim/inbound` fields) through the simulator; waits until
/// messaging has stored it, and answers its wamid.
async fn say(mesh: &SendMesh, user: &str, content: Value) -> String {
    let mut body = json!({"phone_number_id": PHONE, "from": user});
    for (name, value) in content.as_object().expect("fields") {
        body[name] = value.clone();
    }
    let (status, answer) = mesh.sim_call("POST", "/_sim/inbound", body).await;
    assert_eq!(status, 200, "the simulated user wrote: {answer}");
    let wamid = answer["wamid"].as_str().expect("a wamid").to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        let found = mesh
            .grpc()
            .get_message(pb::GetMessageRequest {
                key: Some(pb::get_message_request::Key::Wamid(wamid.clone())),
                direction: pb::Direction::Inbound as i32,
            })
            .await;
        if found.is_ok() {
            return wamid;
        }
        assert!(Instant::now() < deadline, "{wamid} never reached messaging");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for our message `id` to reach delivery status `last`; answers its wamid.
async fn settled(mesh: &SendMesh, id: i64, last: &'static str) -> String {
    let m = mesh
        .wait_for(id, WAIT, last, |m| m.delivery_status == last)
        .await;
    m.wamid
}

/// A list of time slots for `to`.
fn slots(key: &str, to: &str) -> pb::SendMessageRequest {
    let mut request = text(key, to, "");
    request.content = Some(pb::send_message_request::Content::Interactive(
        pb::InteractiveContent {
            body: "When should we come?".into(),
            action: Some(pb::interactive_content::Action::List(pb::ListAction {
                button: "Slots".into(),
                sections: vec![pb::ListSection {
                    title: "Tomorrow".into(),
                    rows: ["Morning", "Afternoon"]
                        .iter()
                        .map(|t| pb::ListRow {
                            id: format!("slot-{}", t.to_lowercase()),
                            title: (*t).into(),
                            description: String::new(),
                        })
                        .collect(),
                }],
            })),
            ..Default::default()
        },
    ));
    request
}

/// Plays the day (see the module's doc).
async fn play_the_day(mesh: &SendMesh) {
    let mut greeted: HashMap<usize, String> = HashMap::new();
    // Users write and are answered at once with their template: first those who will read it,
    // then those who will not (Meta decides when it accepts a send).
    for (reads, users) in [
        (true, &[0, 1, 2, 3, 5, 7, 8][..]),
        (false, &[4, 6, 9, 10, 11]),
    ] {
        let probability = if reads { 1.0 } else { 0.0 };
        mesh.sim_config(json!({"read_probability": probability}))
            .await;
        let mut ids = Vec::new();
        for &n in users {
            mesh.user_writes(&user(n), "hi").await;
            let request = template(&format!("greet-{n}"), &user(n), template_of(n), &["Ana"]);
            ids.push((n, mesh.queue(request).await));
        }
        for (n, id) in ids {
            let last = match (UNDELIVERABLE.contains(&n), reads) {
                (true, _) => "failed",
                (false, true) => "read",
                (false, false) => "delivered",
            };
            greeted.insert(n, settled(mesh, id, last).await);
        }
    }
    let refused = mesh
        .queue(template("promo-9", &user(9), "promo_gone", &["Ana"]))
        .await;
    let refused = mesh
        .wait_for(refused, WAIT, "refused", |m| m.queue_state == "failed")
        .await;
    assert_eq!(refused.error.map(|e| e.code), Some(132_001));

    // Users answer: quick replies (replies and clicks), texts in reply (replies), a text out of
    // the blue (neither). We answer three of them; Meta has those read.
    mesh.sim_config(json!({"read_probability": 1.0})).await;
    let tap = |n: usize, label: &str| {
        let button = json!({"payload": label, "text": label});
        json!({"button": button, "context_wamid": greeted[&n]})
    };
    say(mesh, &user(0), tap(0, "Yes")).await;
    let list = mesh.queue(slots("slots-0", &user(0))).await;
    say(mesh, &user(1), tap(1, "No")).await;
    say(mesh, &user(7), tap(7, "Yes")).await;
    let mut answers = vec![list];
    for (n, question) in [(2, "What time?"), (8, "Where is it now?")] {
        let context = &greeted[&n];
        say(
            mesh,
            &user(n),
            json!({"text": question, "context_wamid": context}),
        )
        .await;
        let answer = text(&format!("answer-{n}"), &user(n), "Around noon.");
        answers.push(mesh.queue(answer).await);
    }
    say(mesh, &user(10), json!({"text": "Thanks!"})).await;
    let mut wamids = Vec::new();
    for id in answers {
        wamids.push(settled(mesh, id, "read").await);
    }
    // User 0 picks a slot of the list.
    let pick = json!({"list_reply": {"id": "slot-morning", "title": "Morning"},
                      "context_wamid": wamids[0]});
    say(mesh, &user(0), pick).await;
}

/// Waits until nothing more is on its way: the simulator has no status or user message left
/// to deliver and messaging nothing left to send.
async fn wait_until_quiet(mesh: &SendMesh) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = mesh.sim_get("/_sim/stats").await;
        let pending = [&stats["statuses"]["pending"], &stats["inbound"]["pending"]];
        if pending.iter().all(|n| n.as_u64() == Some(0))
            && mesh.send_status().await.queue_depth == 0
        {
            return;
        }
        assert!(Instant::now() < deadline, "still busy: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until analytics has counted the log up to `seq`.
async fn wait_for_cursor(client: &AnalyticsClient<Channel>, seq: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = client
            .clone()
            .get_consumer_status(an::GetConsumerStatusRequest {})
            .await
            .expect("GetConsumerStatus")
            .into_inner();
        if status.cursor >= seq {
            assert_eq!(status.cursor, seq, "analytics counted past the log's end");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "analytics never counted up to {seq}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_day_reads_back_exactly_through_every_rpc_and_rest_endpoint() {
    let mesh = SendMesh::start(SendSetup {
        behaviour: Behaviour {
            latency: Duration::from_millis(100),
            delivered_after: Duration::from_millis(DELIVERED_AFTER_MS),
            read_after: Duration::from_millis(600),
            ..Behaviour::default()
        },
        undeliverable: UNDELIVERABLE.iter().map(|&n| user(n)).collect(),
        ..SendSetup::default()
    })
    .await;
    let welcome = "Hi {{1}}, welcome! Shall we keep you posted?";
    register(&mesh, "welcome", "marketing", welcome, true).await;
    let shipped = "{{1}}, your order has shipped. Did it arrive?";
    register(&mesh, "order_update", "utility", shipped, true).await;
    // Known to messaging, never approved at Meta: refused when sent.
    register(&mesh, "promo_gone", "marketing", "{{1}}: 10% off", false).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let analytics_url = format!("http://{}", listener.local_addr().unwrap());
    let analytics = Analytics::build(AnalyticsConfig {
        database_url: wamesh_testkit::fresh_postgres_url().await,
        max_db_connections: 4,
        messaging_url: mesh.messaging_url(),
        aggregation_interval_ms: 3_600_000,
        retention_days: 90,
        consumer: ConsumerConfig::default(),
        alerts: AlertConfig {
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
        Channel::from_shared(analytics_url.clone())
            .unwrap()
            .connect_lazy(),
    );
    let operators = Operators::start(analytics_url).await;
    // Every alert change from now on, to show none happened.
    let mut changes = client
        .clone()
        .stream_alerts(an::StreamAlertsRequest {})
        .await
        .expect("StreamAlerts")
        .into_inner();

    let started = wamesh_analytics::now_ms();
    play_the_day(&mesh).await;
    wait_until_quiet(&mesh).await;
    let stats = mesh.sim_get("/_sim/stats").await;
    assert_eq!(
        (&stats["accepted"], &stats["refused"]),
        (&json!(15), &json!({"132001": 1})),
        "{stats}"
    );
    assert_eq!(
        stats["statuses"]["by_status"],
        json!({"sent": 12, "delivered": 12, "read": 9, "failed": 3}),
        "Meta did as scripted"
    );
    let log = Log::read(&mesh.messaging_url()).await;
    wait_for_cursor(&client, log.head).await;
    assert_eq!(log.response_ms.len(), 15, "{log:?}");
    assert_eq!(
        log.delivery_ms.len(),
        12,
        "each delivered before read: {log:?}"
    );
    let range = an::TimeRange {
        from_unix_ms: started - 1_000,
        to_unix_ms: wamesh_analytics::now_ms() + 60_000,
    };
    // No alert: no change since before the day began, through three evaluations of all of it.
    let change = tokio::time::timeout(Duration::from_secs(3), changes.message()).await;
    assert!(change.is_err(), "healthy traffic, yet: {change:?}");
    let day = Day { log, range };
    day.check_grpc(&client).await;
    day.check_rest(&operators).await;
    operators.stop().await;
    stop_analytics.cancel();
    tokio::time::timeout(Duration::from_secs(30), serving)
        .await
        .expect("analytics stops within 30 s")
        .expect("analytics' task")
        .expect("analytics stops cleanly");
    mesh.stop().await;
}
