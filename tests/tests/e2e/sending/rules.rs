//! The rules of sending, end to end through the simulated Meta: the 24-hour window, template
//! fallback chains, idempotency keys, retries of transient errors (and none of permanent
//! ones), dead letters, the delivery timeline from status webhooks, and the workers' report.
use std::time::Duration;

use serde_json::json;
use wamesh_proto::messaging::v1 as pb;

use super::harness::{PHONE, SendMesh, SendSetup, registered, sent_id, template, text};

const WAIT: Duration = Duration::from_secs(30);

fn sent(m: &pb::OutboundMessage) -> bool {
    m.queue_state == "sent"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_form_outside_the_window_is_refused_before_queueing_unless_a_fallback_applies() {
    let mesh = SendMesh::start(SendSetup::default()).await;
    mesh.template(
        registered(
            "welcome_back",
            pb::TemplateStatus::Approved,
            "Welcome back, {{1}}!",
        ),
        Some("APPROVED"),
    )
    .await;
    let refused = mesh
        .send(text("early", "15551230002", "hi"))
        .await
        .expect_err("the user never wrote");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("window"), "{refused:?}");
    assert_eq!(mesh.send_status().await.queue_depth, 0, "nothing queued");

    // With a fallback template, the template goes instead, and the decision is recorded.
    let mut with_fallback = text("fallback", "15551230002", "hi");
    with_fallback.fallback_template = match template("_", "_", "welcome_back", &["Ana"]).content {
        Some(pb::send_message_request::Content::Template(t)) => Some(t),
        _ => unreachable!(),
    };
    let id = mesh.queue(with_fallback).await;
    let message = mesh.wait_for(id, WAIT, "sent", sent).await;
    assert_eq!(message.r#type, "template");
    let fallback = message.fallback.expect("the decision is recorded");
    assert_eq!(fallback.requested, "text");
    assert_eq!(fallback.sent_as, "template welcome_back (en_US)");
    assert!(fallback.reason.contains("window"), "{fallback:?}");

    // Once the user writes, free-form goes as asked.
    mesh.user_writes("15551230002", "hello again").await;
    let id = mesh.queue(text("after", "15551230002", "hi")).await;
    let message = mesh.wait_for(id, WAIT, "sent", sent).await;
    assert_eq!((message.r#type.as_str(), message.fallback), ("text", None));
    let bodies = mesh.sim_accepted().await;
    assert_eq!(bodies.len(), 2, "the refused message never reached Meta");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_cannot_be_sent_falls_back_along_its_chain() {
    let mesh = SendMesh::start(SendSetup::default()).await;
    let user = "15551230003";
    // promo (paused) -> promo_v2 (disabled) -> promo_v3 (approved).
    let mut promo = registered("promo", pb::TemplateStatus::Paused, "Hi {{1}}, 10% off");
    promo.fallback_template_name = "promo_v2".into();
    let mut promo_v2 = registered(
        "promo_v2",
        pb::TemplateStatus::Disabled,
        "Hi {{1}}, 10% off",
    );
    promo_v2.fallback_template_name = "promo_v3".into();
    let promo_v3 = registered(
        "promo_v3",
        pb::TemplateStatus::Approved,
        "Hello {{1}}: 10% off",
    );
    mesh.template(promo, None).await;
    mesh.template(promo_v2, None).await;
    mesh.template(promo_v3, Some("APPROVED")).await;
    let id = mesh.queue(template("chain", user, "promo", &["Ana"])).await;
    let message = mesh.wait_for(id, WAIT, "sent", sent).await;
    assert_eq!(
        (
            message.template_name.as_str(),
            message.template_language.as_str()
        ),
        ("promo_v3", "en_US")
    );
    let fallback = message.fallback.expect("recorded");
    assert_eq!(
        (fallback.requested.as_str(), fallback.sent_as.as_str()),
        ("template promo (en_US)", "template promo_v3 (en_US)")
    );
    assert!(
        fallback.reason.contains("promo (en_US) is paused")
            && fallback.reason.contains("promo_v2 (en_US) is disabled"),
        "{fallback:?}"
    );
    let body = &mesh.sim_accepted().await[0];
    assert_eq!(body["template"]["name"], "promo_v3");
    assert_eq!(
        body["template"]["components"][0]["parameters"][0]["text"], "Ana",
        "the same parameters"
    );

    // A paused template with a fallback text: text inside the window, refused outside it.
    let mut notice = registered("notice", pb::TemplateStatus::Paused, "Dear {{1}}, news");
    notice.fallback_text = "Dear {{1}}, we have news for you.".into();
    mesh.template(notice, None).await;
    let refused = mesh
        .send(template("notice-closed", user, "notice", &["Ana"]))
        .await
        .expect_err("the fallback text needs an open window");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("notice (en_US) is paused"),
        "{refused:?}"
    );
    mesh.user_writes(user, "hi").await;
    let id = mesh
        .queue(template("notice-open", user, "notice", &["Ana"]))
        .await;
    let message = mesh.wait_for(id, WAIT, "sent", sent).await;
    assert_eq!(message.r#type, "text");
    assert_eq!(message.fallback.expect("recorded").sent_as, "text");
    let body = mesh.sim_accepted().await.pop().expect("sent");
    assert_eq!(body["text"]["body"], "Dear Ana, we have news for you.");

    // An unregistered template with the request's own fallback text (window open).
    let mut asked = template("unknown", user, "not_there", &[]);
    asked.fallback_text = "Plain words instead".into();
    let id = mesh.queue(asked).await;
    let message = mesh.wait_for(id, WAIT, "sent", sent).await;
    assert!(
        message
            .fallback
            .expect("recorded")
            .reason
            .contains("not_there (en_US) is not registered")
    );
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_is_the_same_message_and_meta_gets_it_once() {
    let mesh = SendMesh::start(SendSetup::default()).await;
    let user = "15551230004";
    mesh.user_writes(user, "hi").await;
    let first = mesh.send(text("order-42", user, "Shipped")).await.unwrap();
    let again = mesh.send(text("order-42", user, "Shipped")).await.unwrap();
    assert!(!first.duplicate && again.duplicate);
    let id = first.message.unwrap().id;
    assert_eq!(again.message.unwrap().id, id);
    let other = mesh
        .send(text("order-42", user, "Something else"))
        .await
        .expect_err("a key is one message");
    assert_eq!(other.code(), tonic::Code::AlreadyExists);
    mesh.wait_for(id, WAIT, "sent", sent).await;
    let late = mesh.send(text("order-42", user, "Shipped")).await.unwrap();
    assert_eq!(
        late.message.unwrap().queue_state,
        "sent",
        "answers its state now"
    );
    assert_eq!(mesh.sim_accepted().await.len(), 1, "Meta got it once");

    // Asked again after what it depended on changed (its template paused since), a key still
    // answers its message rather than today's decision.
    let notice = registered("notice", pb::TemplateStatus::Approved, "Hi {{1}}");
    mesh.template(notice.clone(), Some("APPROVED")).await;
    let first = mesh
        .send(template("notice-7", user, "notice", &["Ana"]))
        .await
        .unwrap();
    mesh.grpc()
        .update_template(pb::Template {
            status: pb::TemplateStatus::Paused as i32,
            ..notice
        })
        .await
        .expect("UpdateTemplate");
    let again = mesh
        .send(template("notice-7", user, "notice", &["Ana"]))
        .await
        .expect("the key's message, not a refusal");
    assert!(again.duplicate);
    assert_eq!(again.message.unwrap().id, first.message.unwrap().id);
    let fresh = mesh
        .send(template("notice-8", user, "notice", &["Ana"]))
        .await
        .expect_err("a new key meets the paused template");
    assert_eq!(fresh.code(), tonic::Code::FailedPrecondition);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_permanent_ones_are_not_and_the_last_attempt_is_dead() {
    let mesh = SendMesh::start(SendSetup {
        max_attempts: 4,
        ..SendSetup::default()
    })
    .await;
    let user = "15551230005";
    mesh.user_writes(user, "hi").await;
    // Meta is failing: 131000, transient.
    mesh.sim_config(json!({"error_rate": 1.0, "error_code": 131000}))
        .await;
    let id = mesh.queue(text("retry", user, "eventually")).await;
    let retrying = mesh
        .wait_for(id, WAIT, "retried", |m| m.attempts >= 2)
        .await;
    assert_eq!(retrying.queue_state, "queued", "{retrying:?}");
    assert_eq!(retrying.error.as_ref().map(|e| e.code), Some(131000));
    // The workers report it.
    let (status, report) = mesh.gateway_json("/api/workers/whatsapp").await;
    assert_eq!(status, 200, "{report}");
    assert!(
        report["overall"]["retried_per_minute"].as_u64() >= Some(1),
        "{report}"
    );
    assert_eq!(report["overall"]["last_error"]["code"], 131000, "{report}");
    mesh.sim_config(json!({"error_rate": 0.0})).await;
    let done = mesh.wait_for(id, WAIT, "sent", sent).await;
    assert!(done.attempts >= 2 && !done.wamid.is_empty());

    // A permanent error (Meta does not know the template: 132001) fails at once.
    mesh.template(
        registered("only_here", pb::TemplateStatus::Approved, "Hi {{1}}"),
        None,
    )
    .await;
    let id = mesh
        .queue(template("permanent", user, "only_here", &["Ana"]))
        .await;
    let failed = mesh
        .wait_for(id, WAIT, "failed", |m| m.queue_state == "failed")
        .await;
    assert_eq!(
        (failed.attempts, failed.error.map(|e| e.code)),
        (1, Some(132001))
    );

    // Out of attempts: dead, after exactly max_attempts calls.
    mesh.sim_config(json!({"error_rate": 1.0, "error_code": 131016, "error_http_status": 503}))
        .await;
    let id = mesh.queue(text("dead", user, "never")).await;
    let dead = mesh
        .wait_for(id, WAIT, "dead", |m| m.queue_state == "dead")
        .await;
    assert_eq!(
        (dead.attempts, dead.error.map(|e| e.code)),
        (4, Some(131016))
    );
    let calls = mesh
        .sim_received()
        .await
        .into_iter()
        .filter(|r| sent_id(&r["body"]) == Some(id))
        .count();
    assert_eq!(calls, 4, "one call per attempt");
    let permanent_calls = mesh
        .sim_received()
        .await
        .into_iter()
        .filter(|r| r["body"]["type"] == "template")
        .count();
    assert_eq!(permanent_calls, 1, "a permanent error is not retried");
    assert_eq!(mesh.send_status().await.dead, 1);
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_webhooks_build_the_timeline_to_read_and_failures_carry_metas_code() {
    let undeliverable = "15559990000";
    let mesh = SendMesh::start(SendSetup {
        undeliverable: vec![undeliverable.into()],
        ..SendSetup::default()
    })
    .await;
    let user = "15551230006";
    mesh.user_writes(user, "hi").await;
    mesh.user_writes(undeliverable, "hi").await;
    let id = mesh.queue(text("read-me", user, "Hello")).await;
    let read = mesh
        .wait_for(id, WAIT, "read", |m| m.delivery_status == "read")
        .await;
    let timeline: Vec<&str> = read.timeline.iter().map(|s| s.status.as_str()).collect();
    assert_eq!(timeline, ["sent", "delivered", "read"]);
    assert!(read.delivered_at_unix_ms >= read.queued_at_unix_ms && read.delivered_at_unix_ms > 0);
    assert!(read.read_at_unix_ms >= read.delivered_at_unix_ms);
    assert_eq!(
        read.time_to_delivered_ms,
        read.delivered_at_unix_ms - read.queued_at_unix_ms
    );
    assert!(read.accepted_at_unix_ms >= read.queued_at_unix_ms);

    let id = mesh.queue(text("bounce", undeliverable, "Hello")).await;
    let failed = mesh
        .wait_for(id, WAIT, "failed at Meta", |m| {
            m.delivery_status == "failed"
        })
        .await;
    assert_eq!(failed.queue_state, "sent", "Meta accepted it first");
    assert_eq!(failed.error.map(|e| e.code), Some(131026));

    // messaging saw the user write (a webhook straight to the gateway), the simulated Meta
    // did not: it accepts the free-form message, then fails it with 131047.
    let stranger = "15551230007";
    let webhook = json!({"object": "whatsapp_business_account", "entry": [{"id": super::harness::WABA,
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": PHONE},
            "contacts": [{"wa_id": stranger, "profile": {"name": "S"}}],
            "messages": [{"from": stranger, "id": "wamid.DIRECT1", "timestamp":
                (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).to_string(),
                "type": "text", "text": {"body": "hi"}}]}}]}]});
    let body = serde_json::to_vec(&webhook).unwrap();
    let signature = wamesh_whatsapp::sign(mesh.app_secret.expose().as_bytes(), &body);
    let answer = reqwest::Client::new()
        .post(format!("{}/api/webhooks/whatsapp", mesh.gateway_url))
        .header(wamesh_whatsapp::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let id = mesh.queue(text("window", stranger, "Hello")).await;
    let failed = mesh
        .wait_for(id, WAIT, "failed at Meta", |m| {
            m.delivery_status == "failed"
        })
        .await;
    assert_eq!(failed.error.map(|e| e.code), Some(131047));
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_endpoint_shows_the_queue_and_every_worker() {
    let mesh = SendMesh::start(SendSetup::default()).await;
    let user = "15551230008";
    mesh.user_writes(user, "hi").await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(mesh.queue(text(&format!("w{n}"), user, "hi")).await);
    }
    for id in &ids {
        mesh.wait_for(*id, WAIT, "sent", sent).await;
    }
    let (status, report) = mesh.gateway_json("/api/workers/whatsapp").await;
    assert_eq!(status, 200, "{report}");
    let overall = &report["overall"];
    assert_eq!(overall["workers"], 2, "{report}");
    assert_eq!(overall["live_workers"], 2, "{report}");
    assert_eq!(overall["sent_per_minute"], 5, "{report}");
    assert_eq!(
        (
            overall["queue_depth"].as_u64(),
            overall["in_flight"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(overall["oldest_age_ms"], 0);
    let workers = report["workers"].as_array().expect("a list of workers");
    let sent: u64 = workers
        .iter()
        .map(|w| w["sent_total"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 5);
    for worker in workers {
        assert!(
            worker["worker_id"]
                .as_str()
                .is_some_and(|id| id.contains('/'))
        );
        assert_eq!(worker["live"], true);
    }

    // Meta throttles: messages wait in the queue, and the report says so.
    mesh.sim_config(json!({"error_rate": 1.0, "error_code": 131000}))
        .await;
    mesh.queue(text("stuck", user, "hi")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, report) = mesh.gateway_json("/api/workers/whatsapp").await;
    assert_eq!(report["overall"]["queue_depth"], 1, "{report}");
    assert!(
        report["overall"]["oldest_age_ms"].as_i64() > Some(0),
        "{report}"
    );
    mesh.stop().await;
}
