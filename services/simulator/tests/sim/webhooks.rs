//! Status webhooks: signed, in Meta's shape, batched, retried until answered 200, bounded.
use std::time::Duration;

use serde_json::{Value, json};
use wamesh_simulator::{Behaviour, Delivery, SimulatorConfig};
use wamesh_whatsapp::{Updates, Webhook};

use crate::harness::{Gateway, NUMBER, Sim, config, names, template, text};

fn hello(to: &str) -> Value {
    template(to, "hello_world", json!([]))
}

#[tokio::test]
async fn an_accepted_send_gets_sent_delivered_and_read_signed_in_metas_shape() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(SimulatorConfig {
        behaviour: Behaviour {
            delivered_after: Duration::from_millis(100),
            read_after: Duration::from_millis(200),
            ..Behaviour::default()
        },
        ..config(Some(&gateway))
    })
    .await;
    sim.inbound("15550000001").await;
    let mut body = text("15550000001", "café ☕");
    body["biz_opaque_callback_data"] = json!("job-17");
    let wamid = sim.accepted(&body).await;

    let statuses = gateway.wait_for_statuses(&wamid, 3).await;
    let mut sorted = names(&statuses);
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec!["delivered", "read", "sent"],
        "each exactly once"
    );
    let by_name = |name: &str| statuses.iter().find(|s| s["status"] == name).unwrap();
    let time = |name: &str| {
        by_name(name)["timestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(time("sent") <= time("delivered") && time("delivered") <= time("read"));
    for status in &statuses {
        assert_eq!(status["recipient_id"], "15550000001", "{status}");
        assert_eq!(status["biz_opaque_callback_data"], "job-17", "{status}");
    }
    let sent = by_name("sent");
    assert_eq!(sent["pricing"]["category"], "service", "{sent}");
    assert_eq!(sent["pricing"]["type"], "free_customer_service");
    assert_eq!(sent["pricing"]["pricing_model"], "PMP");
    assert_eq!(sent["pricing"]["billable"], false);
    assert_eq!(sent["conversation"]["origin"]["type"], "service");
    assert!(sent["conversation"]["id"].is_string());
    assert!(sent["conversation"]["expiration_timestamp"].is_string());

    assert_eq!(gateway.bad_signatures(), 0, "every webhook verifies");
    for (raw, webhook) in gateway.bodies().iter().zip(gateway.webhooks()) {
        assert!(raw.is_ascii(), "Meta escapes non-ASCII");
        assert_eq!(webhook["object"], "whatsapp_business_account");
        let entry = &webhook["entry"][0];
        assert_eq!(entry["id"], "100000000000001");
        assert_eq!(entry["changes"][0]["field"], "messages");
        let value = &entry["changes"][0]["value"];
        assert_eq!(value["messaging_product"], "whatsapp");
        assert_eq!(value["metadata"]["phone_number_id"], NUMBER);
        assert_eq!(value["metadata"]["display_phone_number"], "15550001234");
    }
    // wamesh's own parser takes them as Meta's.
    let parsed: Vec<_> = gateway
        .bodies()
        .iter()
        .flat_map(|b| Updates::from_webhook(&Webhook::parse(b).unwrap()).statuses)
        .filter(|s| s.wamid == wamid)
        .collect();
    assert_eq!(parsed.len(), 3);
    assert!(parsed.iter().all(|s| s.business_phone_number_id == NUMBER));

    let stats = sim
        .wait_for_stats("statuses delivered", |s| s["statuses"]["delivered"] == 3)
        .await;
    assert_eq!(stats["statuses"]["by_status"]["sent"], 1, "{stats}");
    assert_eq!(stats["statuses"]["pending"], 0);
    assert_eq!(stats["accepted"], 1);
}

#[tokio::test]
async fn statuses_due_together_share_webhooks_of_at_most_the_batch_size() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(SimulatorConfig {
        delivery: Delivery {
            batch_max: 7,
            flush_interval: Duration::from_millis(300),
            ..config(None).delivery
        },
        ..config(Some(&gateway))
    })
    .await;
    let mut wamids = Vec::new();
    for i in 0..12 {
        wamids.push(sim.accepted(&hello(&format!("1555000{i:04}"))).await);
    }
    gateway
        .wait_for("36 statuses", |g| g.statuses().len() >= 36)
        .await;
    let sizes: Vec<usize> = gateway
        .values()
        .iter()
        .map(|v| v["statuses"].as_array().map_or(0, Vec::len))
        .collect();
    assert!(sizes.iter().all(|n| (1..=7).contains(n)), "{sizes:?}");
    assert!(
        sizes.len() < 36,
        "statuses due together share a webhook: {sizes:?}"
    );
    for wamid in &wamids {
        assert_eq!(gateway.statuses_of(wamid).len(), 3, "{wamid}");
    }
}

#[tokio::test]
async fn a_webhook_answered_500_is_retried_until_every_status_arrives() {
    let gateway = Gateway::failing_first(3).await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let first = sim.accepted(&hello("15550000001")).await;
    let second = sim.accepted(&hello("15550000002")).await;
    gateway
        .wait_for("6 statuses", |g| g.statuses().len() >= 6)
        .await;
    for wamid in [&first, &second] {
        let mut got = names(&gateway.statuses_of(wamid))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got, vec!["delivered", "read", "sent"], "{wamid}");
    }
    assert!(
        gateway.posts() >= 4,
        "3 refused, then at least one accepted"
    );
    let stats = sim
        .wait_for_stats("all delivered", |s| s["statuses"]["delivered"] == 6)
        .await;
    assert_eq!(stats["webhooks"]["failed_attempts"], 3, "{stats}");
    assert!(
        stats["statuses"]["retried"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert_eq!(stats["statuses"]["pending"], 0, "{stats}");
}

#[tokio::test]
async fn without_a_webhook_url_statuses_are_counted_as_skipped() {
    let sim = Sim::start().await;
    sim.accepted(&hello("15550000001")).await;
    let stats = sim
        .wait_for_stats("skipped", |s| s["statuses"]["skipped"] == 3)
        .await;
    assert_eq!(stats["statuses"]["delivered"], 0, "{stats}");
    assert_eq!(stats["statuses"]["pending"], 0, "{stats}");
}

#[tokio::test]
async fn statuses_beyond_the_queue_bound_are_dropped_and_counted() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(SimulatorConfig {
        behaviour: Behaviour {
            sent_after: Duration::from_secs(3600),
            ..Behaviour::default()
        },
        delivery: Delivery {
            queue_limit: 2,
            ..config(None).delivery
        },
        ..config(Some(&gateway))
    })
    .await;
    sim.accepted(&hello("15550000001")).await;
    let stats = sim.stats().await;
    assert_eq!(stats["statuses"]["pending"], 2, "{stats}");
    assert_eq!(stats["statuses"]["dropped"], 1, "{stats}");
    assert_eq!(
        stats["statuses"]["by_status"]["read"], 1,
        "scheduled, then dropped"
    );
}
