//! Never lost, never sent twice: messaging is killed in the middle of a load (its runtime
//! dropped: no drain, claims left `sending`, calls cut mid-flight, transactions aborted) and
//! started again; meanwhile Meta loses some answers (its drop rate). Every queued message
//! reaches the simulated Meta exactly once: claims that died go in doubt, a status webhook
//! carrying a message's callback data proves it reached Meta, and only a message with no such
//! evidence after the window is sent again.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use wamesh_simulator::SendLimits;

use super::harness::{SendMesh, SendSetup, sent_id, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_killed_mid_load_and_restarted_sends_every_message_exactly_once() {
    let mut mesh = SendMesh::start(SendSetup {
        throughput: Some(50.0),
        limits: SendLimits {
            throughput_per_s: 50.0,
            throughput_burst: 60.0,
            ..SendSetup::default().limits
        },
        // Short, so a dead claim goes in doubt soon; the window leaves the status webhooks
        // (retried by the simulator while messaging is down) ample time to prove a send.
        lease: Duration::from_secs(3),
        graph_timeout: Duration::from_secs(1),
        evidence_window: Duration::from_secs(8),
        ..SendSetup::default()
    })
    .await;
    let users: Vec<String> = (0..10).map(|n| format!("155540000{n:02}")).collect();
    for user in &users {
        mesh.user_writes(user, "hi").await;
    }
    mesh.sim_config(json!({"drop_rate": 0.05})).await;
    // 400 messages queued at once, 40 to each user (within the pair burst of 45): about 8 s
    // of sending at 50/s.
    let queued = (0..400).map(|n| {
        let user = &users[n % users.len()];
        mesh.queue(text(&format!("load-{n}"), user, &format!("#{n}")))
    });
    let ids: Vec<i64> = futures::future::join_all(queued).await;
    // Kill it once Meta has some of them, while the rest are in flight or queued.
    let deadline = Instant::now() + Duration::from_secs(60);
    while mesh.sim_accepted().await.len() < 60 {
        assert!(Instant::now() < deadline, "sending never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mesh.kill_messaging();
    let at_kill = mesh.sim_accepted().await.len();
    assert!(at_kill < ids.len(), "killed in the middle of the load");
    tokio::time::sleep(Duration::from_millis(500)).await;
    mesh.restart_messaging().await;

    for id in &ids {
        mesh.wait_for(*id, Duration::from_secs(90), "sent", |m| {
            m.queue_state == "sent"
        })
        .await;
    }
    // What Meta saw: each of our messages exactly once.
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for body in mesh.sim_accepted().await {
        let id = sent_id(&body).expect("every send carries our callback data");
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "message {id}");
    }
    assert_eq!(seen.len(), ids.len());
    let dropped = mesh.sim_get("/_sim/stats").await["answers_dropped"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "{} messages, {at_kill} at Meta when killed, {dropped} answers lost",
        ids.len()
    );
    mesh.stop().await;
}
