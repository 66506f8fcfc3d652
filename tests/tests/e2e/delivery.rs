//! How webhooks are stored: bytes exactly as signed, retries and concurrent duplicates once,
//! statuses in any order, big batches whole, and which business number's app verified each.
use std::collections::HashMap;

use futures::future::join3;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;
use wamesh_proto::messaging::v1::Direction;

use crate::harness::{self, Backend, TestMesh};
use crate::payloads::{self, PHONE, WABA, now_s};
use crate::reads;

on_both_backends!(
    escaped_unicode_is_verified_over_the_raw_bytes_and_stored_decoded,
    the_same_webhook_posted_three_times_at_once_is_stored_once,
    statuses_out_of_order_end_read_with_each_status_once_in_the_timeline,
    a_webhook_with_1000_statuses_is_stored_whole,
    a_webhook_of_nearly_3_mb_is_stored_whole,
    each_registered_number_verifies_its_own_webhooks_and_is_named,
    a_batch_call_stores_each_good_webhook_and_refuses_only_the_bad_one,
    several_webhooks_of_nearly_3_mb_at_once_are_all_stored,
);

fn sign(secret: &wamesh_runtime::Secret, body: &[u8]) -> String {
    wamesh_whatsapp::sign(secret.expose().as_bytes(), body)
}

async fn escaped_unicode_is_verified_over_the_raw_bytes_and_stored_decoded(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();
    // Meta escapes non-ASCII: these are the bytes on the wire, backslashes and all.
    let raw = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA}","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550001111","phone_number_id":"{PHONE}"}},"contacts":[{{"profile":{{"name":"Ren\u00e9"}},"wa_id":"15551230004"}}],"messages":[{{"from":"15551230004","id":"wamid.unicode","timestamp":"{}","type":"text","text":{{"body":"\u00e9\ud83d\ude00"}}}}]}}}}]}}]}}"#,
        now_s()
    )
    .into_bytes();
    assert!(raw.is_ascii(), "the test body carries escapes, not UTF-8");
    let signature = sign(&mesh.app_secret, &raw);

    let (status, answer) = mesh.post_raw(&raw, Some(&signature)).await;
    assert_eq!(status, 200, "{answer}");
    let message = reads::existing_message(&grpc, "wamid.unicode", Direction::Inbound).await;
    assert_eq!(message.text, "é😀");
    let contacts = reads::contacts(&grpc).await;
    assert_eq!(
        contacts
            .iter()
            .map(|c| c.profile_name.as_str())
            .collect::<Vec<_>>(),
        ["René"]
    );
    let delivery_id = answer["delivery_id"].as_i64().expect("delivery_id");
    assert!(
        reads::existing_delivery(&grpc, delivery_id).await.raw_body == raw,
        "stored as received, escapes kept"
    );

    // The same JSON re-serialised (UTF-8 instead of escapes) is other bytes: the signature fails.
    let parsed: Value = serde_json::from_slice(&raw).expect("JSON");
    let reserialised = serde_json::to_vec(&parsed).expect("serialise");
    assert_ne!(reserialised, raw);
    let (status, answer) = mesh.post_raw(&reserialised, Some(&signature)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let next = reads::delivery(&grpc, delivery_id + 1).await;
    assert_eq!(
        next.map_err(|s| s.code()).err(),
        Some(Code::NotFound),
        "the refused body made no delivery"
    );
    mesh.stop().await;
}

async fn the_same_webhook_posted_three_times_at_once_is_stored_once(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let body = payloads::inbound_text("15551230005", "wamid.thrice", now_s(), "only once");
    let (a, b, c) = join3(mesh.post(&body), mesh.post(&body), mesh.post(&body)).await;
    let answers = [a, b, c];
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
    }
    let new_messages: i64 = answers
        .iter()
        .map(|(_, a)| a["new_messages"].as_i64().expect("new_messages"))
        .sum();
    assert_eq!(new_messages, 1, "{answers:?}");
    let first_copies = answers
        .iter()
        .filter(|(_, a)| a["duplicate"] == false)
        .count();
    assert_eq!(
        first_copies, 1,
        "exactly one answer is not a duplicate: {answers:?}"
    );
    let conversation = reads::conversation(&mesh.grpc(), "15551230005", 50).await;
    assert_eq!(conversation.len(), 1, "{conversation:?}");
    assert_eq!(conversation[0].text, "only once");
    mesh.stop().await;
}

async fn statuses_out_of_order_end_read_with_each_status_once_in_the_timeline(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();
    let (wamid, to, t0) = ("wamid.out.of.order", "15551230006", now_s() - 100);
    let steps = [
        ("read", t0 + 20, 1),
        ("sent", t0, 1),
        ("delivered", t0 + 10, 1),
        ("delivered", t0 + 10, 0),
    ];
    for (status, at, new) in steps {
        let (code, answer) = mesh
            .post(&payloads::statuses(vec![payloads::status(
                wamid, status, at, to,
            )]))
            .await;
        assert_eq!(code, 200, "{status}: {answer}");
        assert_eq!(answer["new_statuses"], json!(new), "{status}: {answer}");
        let message = reads::existing_message(&grpc, wamid, Direction::Outbound).await;
        assert_eq!(
            message.status, "read",
            "after {status}, the state stays read"
        );
    }
    let message = reads::existing_message(&grpc, wamid, Direction::Outbound).await;
    assert_eq!(reads::timeline(&message), ["sent", "delivered", "read"]);
    assert_eq!(message.contact_id, to);
    mesh.stop().await;
}

async fn a_webhook_with_1000_statuses_is_stored_whole(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();
    let t0 = now_s() - 10_000;
    let wamid = |i: i64| format!("wamid.batch.{i:04}");
    let items = (0..1000)
        .map(|i| payloads::status(&wamid(i), "delivered", t0 + i, "15551230007"))
        .collect();
    let (status, answer) = mesh.post(&payloads::statuses(items)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["new_statuses"], json!(1000));
    let delivery =
        reads::existing_delivery(&grpc, answer["delivery_id"].as_i64().expect("delivery_id")).await;
    assert_eq!(delivery.counts.expect("counts").statuses, 1000);
    for i in (0..1000).step_by(111).chain([999]) {
        let message = reads::existing_message(&grpc, &wamid(i), Direction::Outbound).await;
        assert_eq!(
            (message.status.as_str(), reads::timeline(&message)),
            ("delivered", vec!["delivered"]),
            "{}",
            wamid(i)
        );
        assert_eq!(message.timestamp_unix_s, t0 + i);
    }
    mesh.stop().await;
}

async fn a_webhook_of_nearly_3_mb_is_stored_whole(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();
    let from = "15551230008";
    let t0 = now_s() - 10_000;
    let texts: HashMap<String, String> = (0..1000)
        .map(|i| {
            (
                format!("wamid.big.{i:04}"),
                format!("{i:04} {}", "lorem ipsum é ".repeat(180)),
            )
        })
        .collect();
    let messages = texts
        .iter()
        .enumerate()
        .map(|(n, (wamid, text))| payloads::text(from, wamid, t0 + n as i64, text))
        .collect();
    let body = payloads::to_bytes(&payloads::envelope(
        "messages",
        payloads::messages_value(vec![payloads::contact(from)], messages, vec![]),
    ));
    assert!(
        (2_800_000..=wamesh_whatsapp::MAX_WEBHOOK_BYTES).contains(&body.len()),
        "the body is close to 3 MB: {} bytes",
        body.len()
    );

    let (status, answer) = mesh.post(&body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["new_messages"], json!(1000));
    let delivery =
        reads::existing_delivery(&grpc, answer["delivery_id"].as_i64().expect("delivery_id")).await;
    assert_eq!(delivery.size_bytes, body.len() as u64);
    assert!(
        delivery.raw_body == body,
        "the body is stored byte for byte"
    );
    assert_eq!(delivery.counts.expect("counts").messages, 1000);
    let conversation = reads::conversation(&grpc, from, 200).await;
    assert_eq!(conversation.len(), 1000);
    for message in &conversation {
        assert_eq!(
            Some(&message.text),
            texts.get(&message.wamid),
            "{}",
            message.wamid
        );
    }
    mesh.stop().await;
}

async fn each_registered_number_verifies_its_own_webhooks_and_is_named(backend: Backend) {
    let numbered = harness::number(Some("111"));
    let default = harness::number(None);
    let (numbered_secret, default_secret) =
        (numbered.app_secret.clone(), default.app_secret.clone());
    let mesh = TestMesh::start_with_numbers(backend, vec![numbered, default]).await;
    let grpc = mesh.grpc();

    for (secret, wamid, label) in [
        (&numbered_secret, "wamid.by.111", "111"),
        (&default_secret, "wamid.by.default", "default"),
    ] {
        let body = payloads::inbound_text("15551230009", wamid, now_s(), label);
        let (status, answer) = mesh.post_raw(&body, Some(&sign(secret, &body))).await;
        assert_eq!(status, 200, "{label}: {answer}");
        let delivery =
            reads::existing_delivery(&grpc, answer["delivery_id"].as_i64().expect("delivery_id"))
                .await;
        assert_eq!(delivery.verified_by, label);
        reads::existing_message(&grpc, wamid, Direction::Inbound).await;
    }
    let body = payloads::inbound_text("15551230009", "wamid.by.stranger", now_s(), "stranger");
    let stranger = wamesh_runtime::Secret::generate();
    let (status, answer) = mesh.post_raw(&body, Some(&sign(&stranger, &body))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    reads::assert_no_message(&grpc, "wamid.by.stranger").await;
    mesh.stop().await;
}

async fn a_batch_call_stores_each_good_webhook_and_refuses_only_the_bad_one(backend: Backend) {
    use wamesh_proto::messaging::v1::{
        IngestWebhookRequest, IngestWebhooksRequest, ingest_webhook_result::Result as Answer,
    };
    let mesh = TestMesh::start(backend).await;
    let item = |raw_body: Vec<u8>| IngestWebhookRequest {
        raw_body,
        verified_by: "default".into(),
        ..Default::default()
    };
    let webhooks = vec![
        item(payloads::inbound_text(
            "15551230040",
            "wamid.batch.1",
            now_s(),
            "first",
        )),
        item(b"{\"object\":\"page\"}".to_vec()),
        item(payloads::inbound_text(
            "15551230040",
            "wamid.batch.2",
            now_s(),
            "second",
        )),
    ];
    let results = mesh
        .grpc()
        .ingest_webhooks(IngestWebhooksRequest { webhooks })
        .await
        .expect("the batch call succeeds")
        .into_inner()
        .results;
    assert_eq!(results.len(), 3);
    let answers: Vec<_> = results
        .into_iter()
        .map(|r| r.result.expect("a result"))
        .collect();
    assert!(
        matches!(&answers[0], Answer::Stored(s) if s.new_messages == 1),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[1], Answer::Error(e) if e.code == Code::InvalidArgument as i32 && e.message.contains("raw_body")),
        "{answers:?}"
    );
    assert!(
        matches!(&answers[2], Answer::Stored(s) if s.new_messages == 1),
        "{answers:?}"
    );
    let conversation = reads::conversation(&mesh.grpc(), "15551230040", 50).await;
    assert_eq!(conversation.len(), 2, "{conversation:?}");
    mesh.stop().await;
}

/// Concurrent webhooks share gRPC calls to messaging; big ones must not add up past a limit.
async fn several_webhooks_of_nearly_3_mb_at_once_are_all_stored(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let bodies: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            payloads::inbound_text_of_len("15551230050", &format!("wamid.huge.{i}"), 2_900_000)
        })
        .collect();
    let answers = futures::future::join_all(bodies.iter().map(|body| mesh.post(body))).await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["new_messages"], json!(1));
    }
    let conversation = reads::conversation(&mesh.grpc(), "15551230050", 10).await;
    assert_eq!(conversation.len(), 4);

    // The largest call the gateway makes (it splits batches at 12 MB of bodies) is accepted.
    use wamesh_proto::messaging::v1::{IngestWebhookRequest, IngestWebhooksRequest};
    let webhooks = (0..4)
        .map(|i| IngestWebhookRequest {
            raw_body: payloads::inbound_text_of_len(
                "15551230051",
                &format!("wamid.huger.{i}"),
                2_900_000,
            ),
            verified_by: "default".into(),
            ..Default::default()
        })
        .collect();
    let results = mesh
        .grpc()
        .ingest_webhooks(IngestWebhooksRequest { webhooks })
        .await
        .expect("an 11.6 MB call is accepted")
        .into_inner()
        .results;
    assert_eq!(results.len(), 4);
    assert_eq!(
        reads::conversation(&mesh.grpc(), "15551230051", 10)
            .await
            .len(),
        4
    );
    mesh.stop().await;
}
