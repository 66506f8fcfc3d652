//! The 24-hour window and the users' messages that open it.
use serde_json::{Value, json};
use wamesh_testkit::webhook_corpus;

use crate::harness::{Gateway, NUMBER, Sim, config, names, template, text};

/// A JSON value's shape: objects keep their keys, every leaf becomes its type.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), shape(v))).collect(),
        Value::Array(items) => Value::Array(items.iter().take(1).map(shape).collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => Value::Null,
    }
}

/// The first message and contact of a corpus file.
fn corpus_message(name: &str) -> (Value, Value) {
    let (_, body) = webhook_corpus()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is in the corpus"));
    let webhook: Value = serde_json::from_slice(&body).unwrap();
    let value = &webhook["entry"][0]["changes"][0]["value"];
    (value["messages"][0].clone(), value["contacts"][0].clone())
}

#[tokio::test]
async fn free_form_outside_the_window_is_accepted_then_fails_with_131047_but_a_template_is_delivered()
 {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let wamid = sim.accepted(&text("15550000009", "hello?")).await;
    let statuses = gateway.wait_for_statuses(&wamid, 1).await;
    assert_eq!(names(&statuses), vec!["failed"], "only a failed status");
    let error = &statuses[0]["errors"][0];
    assert_eq!(error["code"], 131047, "{error}");
    assert_eq!(error["title"], "Re-engagement message");
    assert_eq!(
        error["error_data"]["details"],
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number."
    );
    assert!(error["message"].is_string() && error["href"].is_string());
    let recorded = sim.recorder.all();
    assert_eq!(recorded[0].wamid.as_deref(), Some(wamid.as_str()));
    assert_eq!(recorded[0].fails_with, Some(131047));

    let wamid = sim
        .accepted(&template("15550000009", "hello_world", json!([])))
        .await;
    let statuses = gateway.wait_for_statuses(&wamid, 3).await;
    assert!(!names(&statuses).contains(&"failed"), "{statuses:?}");
    let sent = statuses.iter().find(|s| s["status"] == "sent").unwrap();
    assert_eq!(sent["pricing"]["category"], "utility");
    assert_eq!(
        sent["pricing"]["type"], "regular",
        "a template outside the window is paid"
    );
    assert_eq!(sent["pricing"]["billable"], true);
}

#[tokio::test]
async fn a_user_message_opens_the_window_and_arrives_signed_in_metas_shape() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let (status, answer) = sim
        .post(
            "/_sim/inbound",
            &json!({"phone_number_id": NUMBER, "from": "+1 555 000 0042", "name": "Ana",
                    "text": "Bonjour, ça va ?"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let inbound = answer["wamid"].as_str().unwrap().to_owned();

    let wamid = sim
        .accepted(&text("15550000042", "inside the window"))
        .await;
    let statuses = gateway.wait_for_statuses(&wamid, 3).await;
    assert!(!names(&statuses).contains(&"failed"), "{statuses:?}");

    gateway
        .wait_for("the user's message", |g| !g.messages().is_empty())
        .await;
    assert_eq!(gateway.bad_signatures(), 0);
    let value = gateway
        .values()
        .into_iter()
        .find(|v| v["messages"].is_array())
        .unwrap();
    assert_eq!(value["metadata"]["phone_number_id"], NUMBER);
    let message = &value["messages"][0];
    assert_eq!(message["id"], inbound.as_str());
    assert_eq!(message["from"], "15550000042");
    assert_eq!(message["type"], "text");
    assert_eq!(message["text"]["body"], "Bonjour, ça va ?");
    assert_eq!(value["contacts"][0]["wa_id"], "15550000042");
    assert_eq!(value["contacts"][0]["profile"]["name"], "Ana");
    let (corpus, corpus_contact) = corpus_message("message__text.json");
    assert_eq!(shape(message), shape(&corpus), "{message}");
    for key in value["contacts"][0].as_object().unwrap().keys() {
        assert!(
            corpus_contact.get(key).is_some(),
            "contacts[].{key} is Meta's"
        );
    }
}

#[tokio::test]
async fn taps_and_replies_sent_by_hand_match_metas_shapes() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let cases = [
        (
            json!({"button_reply": {"id": "callback_data", "title": "title"}}),
            "callback_button__button.json",
        ),
        (
            json!({"list_reply": {"id": "callback_data", "title": "title"}}),
            "callback_selection__callback.json",
        ),
        (
            json!({"button": {"payload": "callback_data", "text": "title"}}),
            "callback_button__quick_reply.json",
        ),
        (json!({"text": "replied text"}), "message__reply.json"),
    ];
    for (content, _) in &cases {
        let mut request = json!({"phone_number_id": NUMBER, "from": "15550000042",
                                 "context_wamid": "wamid.CTX"});
        request
            .as_object_mut()
            .unwrap()
            .extend(content.as_object().unwrap().clone());
        let (status, answer) = sim.post("/_sim/inbound", &request).await;
        assert_eq!(status, 200, "{request}: {answer}");
    }
    gateway
        .wait_for("4 user messages", |g| g.messages().len() >= 4)
        .await;
    let messages = gateway.messages();
    for (_, corpus_file) in &cases {
        let (corpus, _) = corpus_message(corpus_file);
        let ours = messages
            .iter()
            .find(|m| m["type"] == corpus["type"] && shape(m) == shape(&corpus))
            .unwrap_or_else(|| panic!("no message shaped like {corpus_file}: {messages:?}"));
        assert_eq!(ours["context"]["id"], "wamid.CTX");
        assert_eq!(
            ours["context"]["from"], "15550001234",
            "the business's number"
        );
    }
}

#[tokio::test]
async fn a_bad_inbound_message_is_refused_by_name_and_opens_nothing() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    let cases = [
        (
            json!({"phone_number_id": NUMBER, "from": "15550000001"}),
            "give one of",
        ),
        (
            json!({"phone_number_id": NUMBER, "from": "15550000001", "text": "a",
                   "button": {"payload": "p", "text": "t"}}),
            "not 2",
        ),
        (
            json!({"phone_number_id": NUMBER, "from": "abc", "text": "a"}),
            "from must be",
        ),
        (
            json!({"phone_number_id": "", "from": "15550000001", "text": "a"}),
            "phone_number_id",
        ),
        (
            json!({"phone_number_id": NUMBER, "from": "15550000001", "txt": "a"}),
            "unknown field `txt`",
        ),
    ];
    for (request, expected) in cases {
        let (status, answer) = sim.post("/_sim/inbound", &request).await;
        assert_eq!(status, 400, "{request}");
        let details = answer["error"]["error_data"]["details"].as_str().unwrap();
        assert!(details.contains(expected), "{request}: {details}");
    }
    let wamid = sim.accepted(&text("15550000001", "hello?")).await;
    let statuses = gateway.wait_for_statuses(&wamid, 1).await;
    assert_eq!(
        statuses[0]["errors"][0]["code"], 131047,
        "no window was opened"
    );
    assert_eq!(sim.stats().await["inbound"]["sent"], 0);
}

#[tokio::test]
async fn the_window_closes_after_its_configured_length() {
    let gateway = Gateway::start().await;
    let sim = Sim::start_with(config(Some(&gateway))).await;
    sim.configure(json!({"window_ms": 1})).await;
    sim.inbound("15550000001").await;
    gateway
        .wait_for("the user's message", |g| !g.messages().is_empty())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let wamid = sim.accepted(&text("15550000001", "too late")).await;
    let statuses = gateway.wait_for_statuses(&wamid, 1).await;
    assert_eq!(statuses[0]["errors"][0]["code"], 131047);

    sim.configure(json!({"enforce_window": false})).await;
    let wamid = sim.accepted(&text("15550000077", "load test")).await;
    let statuses = gateway.wait_for_statuses(&wamid, 3).await;
    assert!(!names(&statuses).contains(&"failed"), "{statuses:?}");
}
