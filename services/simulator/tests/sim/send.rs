//! The send endpoint: Meta's answers, and the record of everything received.
use serde_json::{Value, json};
use std::time::Duration;

use wamesh_simulator::{SendLimits, SimulatorConfig};

use crate::harness::{Sim, TOKEN, config, refusal};

fn text(to: &str, body: &str) -> String {
    crate::harness::text(to, body).to_string()
}

fn buttons(titles: &[&str]) -> String {
    let buttons: Vec<Value> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"type": "reply", "reply": {"id": format!("b{i}"), "title": t}}))
        .collect();
    json!({"messaging_product": "whatsapp", "to": "15551234567", "type": "interactive",
           "interactive": {"type": "button", "body": {"text": "Pick one"},
                           "action": {"buttons": buttons}}})
    .to_string()
}

#[tokio::test]
async fn an_accepted_text_gets_a_wamid_and_is_recorded_as_sent() {
    let sim = Sim::start().await;
    let body = text("+1 555 123 4567", "hello");
    let (status, answer) = sim.send(Some(TOKEN), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["messaging_product"], "whatsapp");
    assert_eq!(answer["contacts"][0]["input"], "+1 555 123 4567");
    assert_eq!(answer["contacts"][0]["wa_id"], "15551234567");
    let wamid = answer["messages"][0]["id"].as_str().expect("a wamid");
    assert!(wamid.starts_with("wamid."), "{wamid}");

    let (_, again) = sim.send(Some(TOKEN), &body).await;
    assert_ne!(
        again["messages"][0]["id"], wamid,
        "every send is a new message"
    );

    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), 2, "duplicates are recorded too");
    assert_eq!(recorded[0].seq, 1);
    assert_eq!(recorded[0].phone_number_id, "1065");
    assert_eq!(recorded[0].version, "v23.0");
    assert_eq!(recorded[0].wamid.as_deref(), Some(wamid));
    assert_eq!(recorded[0].body["text"]["body"], "hello");

    let listed: Value = sim
        .http
        .get(format!("{}/_sim/messages", sim.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["more"], false);
    assert_eq!(listed["dropped"], 0);
    let listed = listed["messages"].as_array().expect("messages").clone();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["wamid"], wamid);
    assert_eq!(listed[1]["seq"], 2);
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_refused_with_190_and_never_recorded_in_clear() {
    let sim = Sim::start().await;
    for token in [None, Some("not-ours")] {
        let (status, answer) = sim.send(token, &text("15551234567", "hi")).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(refusal(&answer).0, 190);
        assert_eq!(answer["error"]["type"], "OAuthException");
    }
    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded
            .iter()
            .all(|r| r.error_code == Some(190) && r.wamid.is_none())
    );
    let listed = serde_json::to_string(&recorded).unwrap();
    assert!(
        !listed.contains("not-ours"),
        "tokens are not kept: {listed}"
    );
}

#[tokio::test]
async fn meta_limits_are_enforced_and_name_the_field() {
    let sim = Sim::start().await;
    let long = "x".repeat(4097);
    let cases: Vec<(String, i64, &str)> = vec![
        ("not json".to_owned(), 100, "not JSON"),
        (
            json!({"to": "1555", "type": "text", "text": {"body": "hi"}}).to_string(),
            100,
            "messaging_product",
        ),
        (
            json!({"messaging_product": "whatsapp", "type": "text", "text": {"body": "hi"}})
                .to_string(),
            131008,
            "Param to",
        ),
        (text("15551234567", &long), 100, "text['body'] must be at most 4096"),
        (text("15551234567", ""), 131008, "text['body'] is required"),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "hologram", "hologram": {}})
                .to_string(),
            131051,
            "hologram",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "image",
                   "image": {"id": "1", "link": "https://example.com/a.png"}})
            .to_string(),
            100,
            "not both",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "image",
                   "image": {"link": "https://example.com/a.png", "caption": "c".repeat(1025)}})
            .to_string(),
            100,
            "image['caption']",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "template",
                   "template": {"name": "hello_world"}})
            .to_string(),
            131008,
            "template['language']['code']",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "contacts", "contacts": []})
                .to_string(),
            100,
            "contacts must be a non-empty array",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "location",
                   "location": {"latitude": "north"}})
            .to_string(),
            131008,
            "location['latitude'] must be a number",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": "1555", "type": "reaction",
                   "reaction": {"emoji": "👍"}})
            .to_string(),
            131008,
            "reaction['message_id'] is required",
        ),
        (buttons(&["a", "b", "c", "d"]), 100, "1 to 3 buttons, not 4"),
        (buttons(&["same", "same"]), 100, "must be unique"),
        (
            buttons(&["a title over twenty chars"]),
            100,
            "['title'] must be at most 20",
        ),
    ];
    for (body, code, details) in &cases {
        let (status, answer) = sim.send(Some(TOKEN), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let (got_code, got_details) = refusal(&answer);
        assert_eq!(got_code, *code, "{body}: {answer}");
        assert!(
            got_details.contains(details),
            "{body}: {got_details:?} names {details:?}"
        );
    }
    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), cases.len(), "refusals are recorded too");
    assert!(recorded.iter().all(|r| r.wamid.is_none()));
    assert_eq!(recorded[0].body, Value::String("not json".into()));
}

#[tokio::test]
async fn lists_within_meta_limits_are_accepted_and_beyond_them_refused() {
    let sim = Sim::start().await;
    let list = |sections: Value| {
        json!({"messaging_product": "whatsapp", "to": "15551234567", "type": "interactive",
               "interactive": {"type": "list", "body": {"text": "Choose"},
                               "action": {"button": "Options", "sections": sections}}})
        .to_string()
    };
    let rows = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("r{i}"), "title": format!("Row {i}")}))
            .collect()
    };
    let (status, answer) = sim
        .send(Some(TOKEN), &list(json!([{"rows": rows(10)}])))
        .await;
    assert_eq!(status, 200, "ten rows in one untitled section: {answer}");

    let (status, answer) = sim
        .send(
            Some(TOKEN),
            &list(json!([{"title": "A", "rows": rows(6)}, {"title": "B", "rows": rows(5)}])),
        )
        .await;
    assert_eq!(status, 400);
    assert!(refusal(&answer).1.contains("11 rows"), "{answer}");

    let (status, answer) = sim
        .send(
            Some(TOKEN),
            &list(json!([{"rows": rows(1)}, {"title": "B", "rows": rows(1)}])),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        refusal(&answer)
            .1
            .contains("sections'][0]['title'] is required"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_number_over_its_throughput_gets_130429_and_a_pair_over_its_rate_131056() {
    // Refills too slow to matter within the test (one token in 1,000 s and in an hour).
    let sim = Sim::start_with(SimulatorConfig {
        limits: SendLimits {
            throughput_per_s: 0.001,
            throughput_burst: 3.0,
            pair_burst: 2.0,
            pair_interval: Duration::from_secs(3600),
        },
        ..config(None)
    })
    .await;
    let codes = |answers: &[(u16, Value)]| -> Vec<i64> {
        answers
            .iter()
            .map(|(status, a)| if *status == 200 { 0 } else { refusal(a).0 })
            .collect()
    };
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(sim.send(Some(TOKEN), &text("15550000001", "again")).await);
    }
    assert_eq!(
        codes(&answers),
        vec![0, 0, 131056],
        "a burst of 2 to one user"
    );

    let mut answers = Vec::new();
    for to in ["15550000002", "15550000003"] {
        answers.push(sim.send(Some(TOKEN), &text(to, "hi")).await);
    }
    assert_eq!(
        codes(&answers),
        vec![0, 130429],
        "3 at once for the number: the refused pair send took none of them"
    );
    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded.iter().filter(|r| r.wamid.is_some()).count(), 3);
}
