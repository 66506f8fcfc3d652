//! Simulated users: they message the business at a rate, and reply and tap what it sends them.
use serde_json::{Value, json};

use crate::harness::{Gateway, NUMBER, Sim, config, template, text};

async fn start_users(sim: &Sim, spec: Value) -> Value {
    let (status, answer) = sim.post("/_sim/users", &spec).await;
    assert_eq!(status, 200, "{spec}: {answer}");
    answer
}

#[tokio::test]
async fn a_population_messages_the_business_at_its_rate_until_stopped() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let started = start_users(
        &sim,
        json!({"phone_number_id": NUMBER, "users": 50, "messages_per_second": 20.0,
               "reply_probability": 0.0, "tap_probability": 0.0}),
    )
    .await;
    assert_eq!(started["running"], true);
    assert_eq!(started["first_wa_id"], "19990000000");

    gateway
        .wait_for("10 user messages", |g| g.messages().len() >= 10)
        .await;
    assert_eq!(gateway.bad_signatures(), 0);
    for message in gateway.messages() {
        let from = message["from"].as_str().unwrap();
        let index: u64 = from.strip_prefix("1999").unwrap().parse().unwrap();
        assert!(index < 50, "{from} is one of the 50 users");
        assert_eq!(message["type"], "text");
    }
    // Each of them opened the user's window: a free-form message to that user is delivered.
    let user = gateway.messages()[0]["from"].as_str().unwrap().to_owned();
    let wamid = sim.accepted(&text(&user, "thanks for writing")).await;
    let statuses = gateway.wait_for_statuses(&wamid, 3).await;
    assert!(
        statuses.iter().all(|s| s["status"] != "failed"),
        "{statuses:?}"
    );

    let (status, stopped) = sim
        .call(reqwest::Method::DELETE, "/_sim/users", &json!(null))
        .await;
    assert_eq!((status, stopped["stopped"].clone()), (200, json!(1)));
    let listed = sim.get("/_sim/users").await;
    let population = &listed["populations"][0];
    assert_eq!(population["running"], false);
    let sent = population["messages_sent"].as_u64().unwrap();
    assert!(sent >= 10, "{population}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        sim.get("/_sim/users").await["populations"][0]["messages_sent"],
        sent,
        "a stopped population sends nothing more"
    );
    let stats = sim
        .wait_for_stats("user messages delivered", |s| {
            s["inbound"]["delivered"].as_u64() == Some(sent)
        })
        .await;
    assert_eq!(stats["inbound"]["sent"].as_u64(), Some(sent), "{stats}");
}

#[tokio::test]
async fn users_tap_buttons_and_reply_to_what_the_business_sends_them_with_context() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let (status, answer) = sim
        .call(
            reqwest::Method::PUT,
            "/_sim/templates",
            &json!({"name": "survey", "language": "en_US", "status": "APPROVED",
                    "category": "MARKETING", "components": [
                        {"type": "BODY", "text": "Did you like it?"},
                        {"type": "BUTTONS", "buttons": [
                            {"type": "QUICK_REPLY", "text": "Yes"},
                            {"type": "QUICK_REPLY", "text": "No"}]}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    start_users(
        &sim,
        json!({"phone_number_id": NUMBER, "users": 3, "messages_per_second": 0.0,
               "reply_probability": 1.0, "tap_probability": 1.0}),
    )
    .await;
    let user = "19990000002";
    sim.inbound(user).await;

    let buttons = sim
        .accepted(
            &json!({"messaging_product": "whatsapp", "to": user, "type": "interactive",
            "interactive": {"type": "button", "body": {"text": "Pick"}, "action": {"buttons": [
                {"type": "reply", "reply": {"id": "b-yes", "title": "Yes"}},
                {"type": "reply", "reply": {"id": "b-no", "title": "No"}}]}}}),
        )
        .await;
    let list = sim
        .accepted(
            &json!({"messaging_product": "whatsapp", "to": user, "type": "interactive",
            "interactive": {"type": "list", "body": {"text": "Choose"}, "action": {
                "button": "Options", "sections": [{"rows": [
                    {"id": "r-1", "title": "One", "description": "the first"}]}]}}}),
        )
        .await;
    let survey = sim
        .accepted(&template(
            user,
            "survey",
            json!([
            {"type": "button", "sub_type": "quick_reply", "index": "1",
             "parameters": [{"type": "payload", "payload": "NO-PAYLOAD"}]}]),
        ))
        .await;
    let plain = sim.accepted(&text(user, "no buttons here")).await;

    gateway
        .wait_for("4 answers", |g| {
            g.messages()
                .iter()
                .filter(|m| m["context"].is_object())
                .count()
                >= 4
        })
        .await;
    let answers = gateway.messages();
    let answer_to = |wamid: &str| -> Value {
        answers
            .iter()
            .find(|m| m["context"]["id"] == wamid)
            .unwrap_or_else(|| panic!("no answer to {wamid}: {answers:?}"))
            .clone()
    };
    let tap = answer_to(&buttons);
    assert_eq!(tap["from"], user);
    assert_eq!(tap["type"], "interactive");
    assert_eq!(tap["interactive"]["type"], "button_reply");
    let id = tap["interactive"]["button_reply"]["id"].as_str().unwrap();
    assert!(["b-yes", "b-no"].contains(&id), "{tap}");

    let choice = answer_to(&list);
    assert_eq!(choice["interactive"]["list_reply"]["id"], "r-1", "{choice}");

    let quick = answer_to(&survey);
    assert_eq!(quick["type"], "button", "{quick}");
    let pair = (
        quick["button"]["payload"].as_str().unwrap(),
        quick["button"]["text"].as_str().unwrap(),
    );
    assert!(
        [("Yes", "Yes"), ("NO-PAYLOAD", "No")].contains(&pair),
        "the payload the send gave, else the text: {quick}"
    );

    let reply = answer_to(&plain);
    assert_eq!(reply["type"], "text", "{reply}");
    assert!(reply["text"]["body"].is_string());
    assert_eq!(reply["context"]["from"], "15550001234");

    let listed = sim.get("/_sim/users").await;
    assert_eq!(listed["populations"][0]["taps_sent"], 3, "{listed}");
    assert_eq!(listed["populations"][0]["replies_sent"], 1);
}

#[tokio::test]
async fn a_bad_population_is_refused_by_name() {
    let sim = Sim::start().await;
    let base = json!({"phone_number_id": NUMBER, "users": 10, "messages_per_second": 1.0,
                      "reply_probability": 0.5, "tap_probability": 0.5});
    for (field, value, expected) in [
        ("users", json!(0), "users must be 1 to"),
        ("messages_per_second", json!(-1.0), "messages_per_second"),
        ("tap_probability", json!(2.0), "tap_probability"),
        ("phone_number_id", json!(""), "phone_number_id"),
        ("rate", json!(1), "unknown field `rate`"),
    ] {
        let mut spec = base.clone();
        spec[field] = value;
        let (status, answer) = sim.post("/_sim/users", &spec).await;
        assert_eq!(status, 400, "{spec}");
        let details = answer["error"]["error_data"]["details"].as_str().unwrap();
        assert!(details.contains(expected), "{spec}: {details}");
    }
    assert_eq!(sim.get("/_sim/users").await["populations"], json!([]));
}
