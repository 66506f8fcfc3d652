//! Templates: Meta's synchronous refusals, and sends that fit.
use serde_json::{Value, json};

use crate::harness::{Gateway, Sim, TOKEN, config, names, refusal, template};

fn order_update(status: &str) -> Value {
    json!({"name": "order_update", "language": "en_US", "status": status, "category": "MARKETING",
           "components": [
               {"type": "BODY", "text": "Hi {{1}}, order {{2}} ships today"},
               {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Thanks"}]}]})
}

async fn register(sim: &Sim, def: &Value) -> (u16, Value) {
    sim.call(reqwest::Method::PUT, "/_sim/templates", def).await
}

fn body(values: &[&str]) -> Value {
    let parameters: Vec<Value> = values
        .iter()
        .map(|v| json!({"type": "text", "text": v}))
        .collect();
    json!([{"type": "body", "parameters": parameters}])
}

#[tokio::test]
async fn template_sends_get_metas_synchronous_refusals_and_nothing_is_accepted() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let (status, answer) = register(&sim, &order_update("APPROVED")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replaced"], false);
    for (name, status) in [
        ("rejected_one", "REJECTED"),
        ("pending_one", "PENDING"),
        ("paused_one", "PAUSED"),
        ("disabled_one", "DISABLED"),
    ] {
        let mut def = order_update(status);
        def["name"] = json!(name);
        assert_eq!(register(&sim, &def).await.0, 200);
    }
    let to = "15550000001";
    let cases = [
        (
            template(to, "no_such_template", json!([])),
            132001,
            "no_such_template",
        ),
        (
            json!({"messaging_product": "whatsapp", "to": to, "type": "template",
                   "template": {"name": "hello_world", "language": {"code": "fr"}}}),
            132001,
            "does not exist in fr",
        ),
        (
            template(to, "rejected_one", body(&["a", "b"])),
            132001,
            "not approved",
        ),
        (
            template(to, "pending_one", body(&["a", "b"])),
            132001,
            "not approved",
        ),
        (
            template(to, "paused_one", body(&["a", "b"])),
            132015,
            "paused",
        ),
        (
            template(to, "disabled_one", body(&["a", "b"])),
            132016,
            "disabled",
        ),
        (
            template(to, "order_update", body(&["Ana"])),
            132000,
            "body: expected 2 parameters, got 1",
        ),
        (
            template(to, "hello_world", body(&["x"])),
            132000,
            "body: expected 0 parameters, got 1",
        ),
    ];
    for (send, code, details) in &cases {
        let (status, answer) = sim.send(Some(TOKEN), &send.to_string()).await;
        assert_eq!(status, 400, "{send}: {answer}");
        let (got_code, got_details) = refusal(&answer);
        assert_eq!(got_code, *code, "{send}: {answer}");
        assert!(got_details.contains(details), "{send}: {got_details}");
    }
    let recorded = sim.recorder.all();
    assert_eq!(recorded.len(), cases.len(), "refusals are recorded");
    assert!(
        recorded
            .iter()
            .all(|r| r.wamid.is_none() && r.error_code.is_some())
    );
    let stats = sim.stats().await;
    assert_eq!(stats["accepted"], 0);
    assert_eq!(stats["refused"]["132001"], 4, "{stats}");
    assert_eq!(
        stats["statuses"]["by_status"]["sent"], 0,
        "no status follows a refusal"
    );

    let wamid = sim
        .accepted(&template(to, "order_update", body(&["Ana", "42"])))
        .await;
    let statuses = gateway.wait_for_statuses(&wamid, 3).await;
    let sent = statuses.iter().find(|s| s["status"] == "sent").unwrap();
    assert_eq!(sent["pricing"]["category"], "marketing", "{sent}");
    assert!(!names(&statuses).contains(&"failed"));
}

#[tokio::test]
async fn templates_are_listed_replaced_and_bad_ones_refused_by_name() {
    let sim = Sim::start().await;
    let listed = sim.get("/_sim/templates").await;
    let templates = listed["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0]["name"], "hello_world");
    assert_eq!(templates[0]["language"], "en_US");
    assert_eq!(templates[0]["status"], "APPROVED");
    assert_eq!(templates[0]["category"], "UTILITY");

    assert_eq!(register(&sim, &order_update("APPROVED")).await.0, 200);
    let (status, answer) = register(&sim, &order_update("PAUSED")).await;
    assert_eq!((status, answer["replaced"].clone()), (200, json!(true)));
    let (status, answer) = sim
        .send(
            Some(TOKEN),
            &template("1555", "order_update", body(&["a", "b"])).to_string(),
        )
        .await;
    assert_eq!(
        (status, refusal(&answer).0),
        (400, 132015),
        "the replacement applies"
    );

    let mut gap = order_update("APPROVED");
    gap["components"][0]["text"] = json!("{{1}} and {{3}}");
    let mut bad_status = order_update("APPROVED");
    bad_status["status"] = json!("LIVE");
    let mut bad_name = order_update("APPROVED");
    bad_name["name"] = json!("Order Update");
    for (def, expected) in [
        (gap, "{{2}} is missing"),
        (bad_status, "unknown variant `LIVE`"),
        (bad_name, "lower-case letters"),
        (json!({"name": "x", "language": "en"}), "missing field"),
    ] {
        let (status, answer) = register(&sim, &def).await;
        assert_eq!(status, 400, "{def}");
        let details = refusal(&answer).1;
        assert!(details.contains(expected), "{def}: {details}");
    }
    let listed = sim.get("/_sim/templates").await;
    let names: Vec<&str> = listed["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["hello_world", "order_update"],
        "nothing else changed"
    );
    assert_eq!(listed["templates"][1]["status"], "PAUSED");
}
