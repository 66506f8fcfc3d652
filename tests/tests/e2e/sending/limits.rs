//! WhatsApp's limits hold on the way out: offered more than a number's throughput, a user's
//! pair rate or the messaging-limit tier allow, the send workers wait for rate-limit's tokens,
//! so the simulated Meta never has to refuse (no 130429, no 131056), and every message goes in
//! the end (the tier's excess waits for its window). Rates are checked from the simulator's own
//! clock as upper bounds only: a slow machine can only send slower.
use std::time::{Duration, Instant};

use serde_json::Value;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::ratelimit::v1 as rl;
use wamesh_simulator::SendLimits;

use super::harness::{SendMesh, SendSetup, registered, template, text};

const WAIT: Duration = Duration::from_secs(60);

/// hello_world: Meta gives it to every business; the simulator knows it, messaging registers it.
async fn hello_world(mesh: &SendMesh) {
    mesh.template(
        registered("hello_world", pb::TemplateStatus::Approved, "Hello World"),
        None,
    )
    .await;
}

/// When the simulator received each accepted send (its clock, Unix ms), in order.
fn accepted_times(received: &[Value]) -> Vec<i64> {
    received
        .iter()
        .filter(|r| r["wamid"].is_string())
        .map(|r| r["received_at_ms"].as_i64().expect("a time"))
        .collect()
}

fn refused_with(received: &[Value], code: i64) -> usize {
    received
        .iter()
        .filter(|r| r["error_code"].as_i64() == Some(code))
        .count()
}

async fn all_sent(mesh: &SendMesh, ids: &[i64]) {
    for id in ids {
        mesh.wait_for(*id, WAIT, "sent", |m| m.queue_state == "sent")
            .await;
    }
}

/// The least time `n` sends can take through a bucket of `capacity` refilled at `rate`/s that
/// starts full: all but the burst (and the token being refilled) wait for the refill.
fn least_span_ms(n: usize, capacity: f64, rate: f64) -> i64 {
    (((n as f64 - capacity - 1.0) / rate) * 1000.0).floor() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_twice_its_throughput_a_number_sends_at_its_limit_and_meta_never_refuses() {
    // Our number: 20 messages a second. The simulated Meta allows 20/s with a little more
    // burst (as Meta tolerates), so the jitter of a busy test machine between our decision and
    // Meta's clock cannot look like a breach.
    let mesh = SendMesh::start(SendSetup {
        throughput: Some(20.0),
        limits: SendLimits {
            throughput_per_s: 20.0,
            throughput_burst: 25.0,
            ..SendSetup::default().limits
        },
        ..SendSetup::default()
    })
    .await;
    hello_world(&mesh).await;
    // Offered at 40/s for 1.5 s: 60 messages to 60 users.
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..60 {
        let due = started + Duration::from_millis(25 * n);
        tokio::time::sleep_until(due.into()).await;
        let user = format!("1555300{n:04}");
        ids.push(
            mesh.queue(template(&format!("t{n}"), &user, "hello_world", &[]))
                .await,
        );
    }
    all_sent(&mesh, &ids).await;
    let received = mesh.sim_received().await;
    assert_eq!(
        refused_with(&received, 130429),
        0,
        "Meta never had to refuse"
    );
    let times = accepted_times(&received);
    assert_eq!(times.len(), 60, "each message reached Meta once");
    let span = times[59] - times[0];
    assert!(
        span >= least_span_ms(60, 20.0, 20.0),
        "60 sends at 20/s (burst 20) take at least {} ms, not {span} ms",
        least_span_ms(60, 20.0, 20.0)
    );
    let deferred: u32 = mesh
        .send_status()
        .await
        .workers
        .iter()
        .map(|w| w.deferred_last_minute)
        .sum();
    assert!(deferred > 0, "rate-limit held messages back, not Meta");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_rate_to_one_user_holds_and_every_message_goes() {
    // One user: 3 at once, then one every 200 ms (Meta's 45 and 6 s, scaled down); the
    // simulated Meta allows one more in a burst.
    let mesh = SendMesh::start(SendSetup {
        limits: SendLimits {
            pair_burst: 4.0,
            pair_interval: Duration::from_millis(200),
            ..SendSetup::default().limits
        },
        ..SendSetup::default()
    })
    .await;
    mesh.set_policy(
        "pair:*",
        rl::policy::Kind::TokenBucket(rl::TokenBucket {
            capacity: 3.0,
            refill_per_second: 5.0,
        }),
    )
    .await;
    let user = "15553100001";
    mesh.user_writes(user, "hi").await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(
            mesh.queue(text(&format!("p{n}"), user, &format!("message {n}")))
                .await,
        );
    }
    all_sent(&mesh, &ids).await;
    let received = mesh.sim_received().await;
    assert_eq!(
        refused_with(&received, 131056),
        0,
        "Meta never had to refuse"
    );
    let times = accepted_times(&received);
    assert_eq!(times.len(), 12);
    let span = times[11] - times[0];
    assert!(
        span >= least_span_ms(12, 3.0, 5.0),
        "12 sends to one user at 5/s (burst 3) take at least {} ms, not {span} ms",
        least_span_ms(12, 3.0, 5.0)
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messaging_limit_tier_caps_new_users_outside_the_window() {
    // A number on a tier of 3 users a day (Meta's 250, scaled down).
    let mesh = SendMesh::start(SendSetup {
        tier: Some(3),
        ..SendSetup::default()
    })
    .await;
    hello_world(&mesh).await;
    let users: Vec<String> = (0..5).map(|n| format!("1555320000{n}")).collect();
    let mut ids = Vec::new();
    for (n, user) in users.iter().enumerate() {
        ids.push(
            mesh.queue(template(&format!("tier{n}"), user, "hello_world", &[]))
                .await,
        );
    }
    // Three go; two wait for the tier's window, a day away.
    let deadline = Instant::now() + WAIT;
    let (sent, waiting) = loop {
        let mut sent = Vec::new();
        let mut waiting = Vec::new();
        for id in &ids {
            let m = mesh.outbound(*id).await;
            let now_ms = chrono_now_ms();
            match m.queue_state.as_str() {
                "sent" => sent.push(m),
                "queued" if m.next_attempt_at_unix_ms > now_ms + 3_600_000 => waiting.push(m),
                _ => {}
            }
        }
        if sent.len() + waiting.len() == ids.len() {
            break (sent, waiting);
        }
        assert!(Instant::now() < deadline, "the tier did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((sent.len(), waiting.len()), (3, 2));
    assert_eq!(accepted_times(&mesh.sim_received().await).len(), 3);
    // A user already counted costs nothing: a second template to one goes at once.
    let again = sent[0].to.clone();
    let id = mesh
        .queue(template("tier-again", &again, "hello_world", &[]))
        .await;
    all_sent(&mesh, &[id]).await;
    // Inside the window the tier does not apply.
    let writer = &waiting[0].to;
    mesh.user_writes(writer, "hi").await;
    let id = mesh.queue(text("tier-window", writer, "hello")).await;
    all_sent(&mesh, &[id]).await;
    assert_eq!(accepted_times(&mesh.sim_received().await).len(), 5);
    mesh.stop().await;
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
