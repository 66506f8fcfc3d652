//! The behaviour knobs: undeliverable recipients, error and drop rates, latency, and run-time
//! changes through /_sim/config.
use std::time::{Duration, Instant};

use serde_json::json;
use wamesh_simulator::{Behaviour, SimulatorConfig};

use crate::harness::{Gateway, Sim, TOKEN, config, names, refusal, template};

fn hello(to: &str) -> serde_json::Value {
    template(to, "hello_world", json!([]))
}

#[tokio::test]
async fn an_undeliverable_recipient_is_accepted_then_fails_with_131026() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(SimulatorConfig {
        undeliverable: vec!["+1 555 000 0066".to_owned()],
        ..config(Some(&gateway))
    })
    .await;
    let wamid = sim.accepted(&hello("15550000066")).await;
    let statuses = gateway.wait_for_statuses(&wamid, 1).await;
    assert_eq!(names(&statuses), vec!["failed"]);
    assert_eq!(statuses[0]["errors"][0]["code"], 131026);
    assert_eq!(statuses[0]["errors"][0]["title"], "Message undeliverable");
    assert_eq!(sim.recorder.all()[0].fails_with, Some(131026));
    let other = sim.accepted(&hello("15550000067")).await;
    assert_eq!(gateway.wait_for_statuses(&other, 3).await.len(), 3);
}

#[tokio::test]
async fn an_error_rate_of_1_answers_transient_errors_and_accepts_nothing() {
    let sim = Sim::start_with(SimulatorConfig {
        behaviour: Behaviour {
            error_rate: 1.0,
            ..Behaviour::default()
        },
        ..config(None)
    })
    .await;
    for i in 0..5 {
        let (status, answer) = sim.send_json(&hello(&format!("1555000000{i}"))).await;
        assert_eq!(status, 500, "{answer}");
        assert_eq!(refusal(&answer).0, 131000);
        assert_eq!(answer["error"]["message"], "(#131000) Something went wrong");
    }
    sim.configure(json!({"error_code": 131016, "error_http_status": 503}))
        .await;
    let (status, answer) = sim.send_json(&hello("15550000009")).await;
    assert_eq!((status, refusal(&answer).0), (503, 131016));

    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), 6, "recorded all the same");
    assert!(recorded.iter().all(|r| r.wamid.is_none()));
    let stats = sim.stats().await;
    assert_eq!(stats["accepted"], 0, "{stats}");
    assert_eq!(stats["refused"]["131000"], 5);
    assert_eq!(stats["statuses"]["by_status"]["sent"], 0);

    sim.configure(json!({"error_rate": 0})).await;
    sim.accepted(&hello("15550000009")).await;
}

#[tokio::test]
async fn a_drop_rate_of_1_loses_the_answer_but_the_message_is_accepted_and_its_statuses_arrive() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(SimulatorConfig {
        behaviour: Behaviour {
            drop_rate: 1.0,
            ..Behaviour::default()
        },
        ..config(Some(&gateway))
    })
    .await;
    let answer = sim
        .http
        .post(format!("{}/v23.0/1065/messages", sim.base))
        .bearer_auth(TOKEN)
        .json(&hello("15550000001"))
        .send()
        .await;
    let error = answer.expect_err("no answer comes back");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");

    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), 1, "sent once, recorded once");
    assert!(recorded[0].answer_dropped);
    let wamid = recorded[0].wamid.clone().expect("accepted");
    assert_eq!(gateway.wait_for_statuses(&wamid, 3).await.len(), 3);
    let stats = sim.stats().await;
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["answers_dropped"], 1);
}

#[tokio::test]
async fn the_latency_delays_every_answer() {
    let sim = Sim::start_with(SimulatorConfig {
        behaviour: Behaviour {
            latency: Duration::from_millis(300),
            ..Behaviour::default()
        },
        ..config(None)
    })
    .await;
    let started = Instant::now();
    sim.accepted(&hello("15550000001")).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    let (status, _) = sim.send(Some(TOKEN), "not json").await;
    assert_eq!(status, 400);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "refusals too"
    );

    sim.configure(json!({"latency_ms": 600, "latency_jitter_ms": 100}))
        .await;
    let started = Instant::now();
    sim.accepted(&hello("15550000002")).await;
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn config_changes_apply_and_bad_ones_change_nothing() {
    let sim = Sim::start().await;
    let before = sim.get("/_sim/config").await;
    assert_eq!(before["error_rate"], 0.0);
    assert_eq!(before["window_ms"], 86_400_000);
    assert_eq!(before["throughput_per_s"], 80.0);
    assert_eq!(before["webhook_url"], json!(null));
    assert_eq!(before["record_limit"], 200_000);

    for (patch, expected) in [
        (
            json!({"error_rate": 1.5}),
            "error_rate must be between 0 and 1",
        ),
        (
            json!({"drop_rate": 0.5, "read_probability": -1}),
            "read_probability",
        ),
        (json!({"error_http_status": 200}), "error_http_status"),
        (
            json!({"pair_burst": 0}),
            "pair_burst must be a positive number",
        ),
        (json!({"webhook_url": "ftp://x"}), "app_secret"),
        (
            json!({"webhook_url": "ftp://x", "app_secret": "s"}),
            "http or https",
        ),
        (json!({"latency": 5}), "unknown field `latency`"),
        (json!({"undeliverable": ["abc"]}), "wa_id"),
        (json!({"record_limit": 0}), "record_limit"),
        (json!({"webhook_batch_max": 5000}), "webhook_batch_max"),
    ] {
        let (status, answer) = sim.post("/_sim/config", &patch).await;
        assert_eq!(status, 400, "{patch}: {answer}");
        let details = refusal(&answer).1;
        assert!(details.contains(expected), "{patch}: {details}");
    }
    assert_eq!(sim.get("/_sim/config").await, before, "nothing changed");

    let after = sim
        .configure(json!({"throughput_burst": 1, "throughput_per_s": 0.001,
                          "undeliverable": ["+1 555 000 0001"], "read_probability": 0.5,
                          "webhook_url": "http://127.0.0.1:9/hook", "app_secret": "s3cret"}))
        .await;
    assert_eq!(after["throughput_burst"], 1.0);
    assert_eq!(after["undeliverable"], json!(["15550000001"]));
    assert_eq!(after["read_probability"], 0.5);
    assert_eq!(after["webhook_url"], "http://127.0.0.1:9/hook");
    assert_eq!(after["app_secret_set"], true);
    assert!(
        !after.to_string().contains("s3cret"),
        "the secret is not shown"
    );
    assert_eq!(
        after["error_rate"], 0.0,
        "fields not named keep their value"
    );

    sim.accepted(&hello("15550000002")).await;
    let (status, answer) = sim.send_json(&hello("15550000003")).await;
    assert_eq!(
        (status, refusal(&answer).0),
        (400, 130429),
        "the new limits apply"
    );
}
