//! Every kind of content reaches Meta (the simulator) exactly as Meta documents its send body,
//! and content that breaks Meta's limits is refused by `SendMessage` naming the field, with
//! nothing queued and nothing sent.
use std::time::Duration;

use serde_json::{Value, json};
use wamesh_proto::messaging::v1 as pb;

use super::harness::{PHONE, SendMesh, SendSetup, WABA, sent_id, template, text};

const USER: &str = "15551230001";

fn with(content: pb::send_message_request::Content, key: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        business_phone_number_id: PHONE.into(),
        to: format!("+{USER}"),
        idempotency_key: key.into(),
        content: Some(content),
        ..Default::default()
    }
}

fn order_update() -> pb::Template {
    pb::Template {
        waba_id: WABA.into(),
        name: "order_update".into(),
        language: "en_US".into(),
        category: "utility".into(),
        status: pb::TemplateStatus::Approved as i32,
        components_json: json!([
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
            {"type": "BODY", "text": "Hi {{1}}, your order {{2}} is on its way."},
            {"type": "BUTTONS", "buttons": [
                {"type": "URL", "text": "Track", "url": "https://shop.example/track/{{1}}"},
                {"type": "QUICK_REPLY", "text": "Stop updates"}
            ]}
        ])
        .to_string(),
        ..Default::default()
    }
}

/// The body the simulator accepted for our message `id`, without its callback data (our id,
/// the send's time and span: checked by `sent_id`); the rest is what Meta documents.
fn sent_body(accepted: &[Value], id: i64) -> Value {
    let mut bodies: Vec<Value> = accepted
        .iter()
        .filter(|b| sent_id(b) == Some(id))
        .cloned()
        .collect();
    assert_eq!(
        bodies.len(),
        1,
        "message {id} reached Meta once: {accepted:#?}"
    );
    let mut body = bodies.remove(0);
    body.as_object_mut()
        .expect("a JSON object")
        .remove("biz_opaque_callback_data");
    body
}

fn envelope(kind: &str, content: Value) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": USER,
           "type": kind, kind: content})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_content_type_reaches_meta_as_documented() {
    use pb::send_message_request::Content as C;
    let mesh = SendMesh::start(SendSetup::default()).await;
    mesh.user_writes(USER, "hello").await;
    mesh.template(order_update(), Some("APPROVED")).await;

    let mut replying = text("text", USER, "Your code is 1234. https://shop.example");
    replying.to = format!("+{USER}");
    if let Some(C::Text(t)) = &mut replying.content {
        t.preview_url = true;
    }
    let mut order = template("template", USER, "order_update", &["Ana", "A-17"]);
    if let Some(C::Template(t)) = &mut order.content {
        t.header = Some(pb::TemplateParameter {
            name: String::new(),
            value: Some(pb::template_parameter::Value::Text("A-17".into())),
        });
        t.buttons = vec![pb::TemplateButton {
            sub_type: pb::ButtonSubType::Url as i32,
            index: 0,
            value: "A-17".into(),
        }];
    }
    let buttons = with(
        C::Interactive(pb::InteractiveContent {
            header_text: "Delivery".into(),
            body: "When should we come?".into(),
            footer: "Reply to choose".into(),
            action: Some(pb::interactive_content::Action::Buttons(pb::ReplyButtons {
                buttons: ["Morning", "Afternoon", "Evening"]
                    .iter()
                    .map(|t| pb::ReplyButton {
                        id: t.to_lowercase(),
                        title: (*t).into(),
                    })
                    .collect(),
            })),
        }),
        "buttons",
    );
    let list = with(
        C::Interactive(pb::InteractiveContent {
            body: "Pick a size".into(),
            action: Some(pb::interactive_content::Action::List(pb::ListAction {
                button: "Sizes".into(),
                sections: vec![
                    pb::ListSection {
                        title: "Shirts".into(),
                        rows: vec![pb::ListRow {
                            id: "s-m".into(),
                            title: "Medium".into(),
                            description: "Chest 100 cm".into(),
                        }],
                    },
                    pb::ListSection {
                        title: "Shoes".into(),
                        rows: vec![pb::ListRow {
                            id: "f-42".into(),
                            title: "42".into(),
                            description: String::new(),
                        }],
                    },
                ],
            })),
            ..Default::default()
        }),
        "list",
    );
    let image = with(
        C::Media(pb::MediaContent {
            kind: pb::MediaKind::Image as i32,
            link: "https://shop.example/a17.jpg".into(),
            caption: "Your parcel".into(),
            ..Default::default()
        }),
        "image",
    );
    let document = with(
        C::Media(pb::MediaContent {
            kind: pb::MediaKind::Document as i32,
            id: "1013859600285441".into(),
            filename: "invoice-A-17.pdf".into(),
            ..Default::default()
        }),
        "document",
    );
    let audio = with(
        C::Media(pb::MediaContent {
            kind: pb::MediaKind::Audio as i32,
            id: "2013859600285442".into(),
            ..Default::default()
        }),
        "audio",
    );

    let mut ids = Vec::new();
    for request in [replying, order, buttons, list, image, document, audio] {
        ids.push(mesh.queue(request).await);
    }
    for id in &ids {
        mesh.wait_for(*id, Duration::from_secs(30), "sent", |m| {
            m.queue_state == "sent"
        })
        .await;
    }
    let accepted = mesh.sim_accepted().await;
    let expected = [
        envelope(
            "text",
            json!({"body": "Your code is 1234. https://shop.example", "preview_url": true}),
        ),
        envelope(
            "template",
            json!({"name": "order_update", "language": {"policy": "deterministic", "code": "en_US"},
                   "components": [
                       {"type": "header", "parameters": [{"type": "text", "text": "A-17"}]},
                       {"type": "body", "parameters": [{"type": "text", "text": "Ana"},
                                                       {"type": "text", "text": "A-17"}]},
                       {"type": "button", "sub_type": "url", "index": "0",
                        "parameters": [{"type": "text", "text": "A-17"}]}]}),
        ),
        envelope(
            "interactive",
            json!({"type": "button", "header": {"type": "text", "text": "Delivery"},
                   "body": {"text": "When should we come?"}, "footer": {"text": "Reply to choose"},
                   "action": {"buttons": [
                       {"type": "reply", "reply": {"id": "morning", "title": "Morning"}},
                       {"type": "reply", "reply": {"id": "afternoon", "title": "Afternoon"}},
                       {"type": "reply", "reply": {"id": "evening", "title": "Evening"}}]}}),
        ),
        envelope(
            "interactive",
            json!({"type": "list", "body": {"text": "Pick a size"},
                   "action": {"button": "Sizes", "sections": [
                       {"title": "Shirts", "rows": [{"id": "s-m", "title": "Medium",
                                                     "description": "Chest 100 cm"}]},
                       {"title": "Shoes", "rows": [{"id": "f-42", "title": "42"}]}]}}),
        ),
        envelope(
            "image",
            json!({"link": "https://shop.example/a17.jpg", "caption": "Your parcel"}),
        ),
        envelope(
            "document",
            json!({"id": "1013859600285441", "filename": "invoice-A-17.pdf"}),
        ),
        envelope("audio", json!({"id": "2013859600285442"})),
    ];
    for (id, expected) in ids.iter().zip(expected) {
        assert_eq!(sent_body(&accepted, *id), expected);
    }
    // What users read is in the conversation history, the template's body filled in.
    let template = mesh.outbound(ids[1]).await;
    let history = mesh
        .grpc()
        .get_message(pb::GetMessageRequest {
            key: Some(pb::get_message_request::Key::Wamid(template.wamid.clone())),
            direction: pb::Direction::Outbound as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(history.origin, "api");
    assert_eq!(history.text, "Hi Ana, your order A-17 is on its way.");
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_is_refused_naming_the_field_and_nothing_is_queued() {
    use pb::send_message_request::Content as C;
    let mesh = SendMesh::start(SendSetup::default()).await;
    mesh.user_writes(USER, "hello").await;
    mesh.template(order_update(), Some("APPROVED")).await;
    let button = |title: &str| pb::ReplyButton {
        id: title.to_lowercase(),
        title: title.into(),
    };
    let buttons = |buttons: Vec<pb::ReplyButton>| {
        C::Interactive(pb::InteractiveContent {
            body: "Choose".into(),
            action: Some(pb::interactive_content::Action::Buttons(pb::ReplyButtons {
                buttons,
            })),
            ..Default::default()
        })
    };
    let rows = |n: usize| pb::ListSection {
        title: "Rows".into(),
        rows: (0..n)
            .map(|i| pb::ListRow {
                id: format!("r{i}"),
                title: format!("Row {i}"),
                description: String::new(),
            })
            .collect(),
    };
    let cases: Vec<(pb::SendMessageRequest, &str, tonic::Code)> = vec![
        (
            text("k1", USER, ""),
            "text.body",
            tonic::Code::InvalidArgument,
        ),
        (
            text("k2", USER, &"x".repeat(4097)),
            "text.body",
            tonic::Code::InvalidArgument,
        ),
        (
            text("k3", "call me", "hi"),
            "to",
            tonic::Code::InvalidArgument,
        ),
        (
            text("", USER, "hi"),
            "idempotency_key",
            tonic::Code::InvalidArgument,
        ),
        (
            with(
                buttons(vec![button("A"), button("B"), button("C"), button("D")]),
                "k4",
            ),
            "interactive.buttons.buttons",
            tonic::Code::InvalidArgument,
        ),
        (
            with(buttons(vec![button("Same"), button("Same")]), "k5"),
            "interactive.buttons.buttons[1].title",
            tonic::Code::InvalidArgument,
        ),
        (
            with(buttons(vec![button("A title longer than twenty")]), "k6"),
            "interactive.buttons.buttons[0].title",
            tonic::Code::InvalidArgument,
        ),
        (
            with(
                C::Interactive(pb::InteractiveContent {
                    body: "Pick".into(),
                    action: Some(pb::interactive_content::Action::List(pb::ListAction {
                        button: "Open".into(),
                        sections: vec![rows(6), rows(5)],
                    })),
                    ..Default::default()
                }),
                "k7",
            ),
            "interactive.list.sections",
            tonic::Code::InvalidArgument,
        ),
        (
            with(
                C::Media(pb::MediaContent {
                    kind: pb::MediaKind::Image as i32,
                    id: "1".into(),
                    link: "https://x.example/a.jpg".into(),
                    ..Default::default()
                }),
                "k8",
            ),
            "media",
            tonic::Code::InvalidArgument,
        ),
        (
            with(
                C::Media(pb::MediaContent {
                    kind: pb::MediaKind::Audio as i32,
                    id: "1".into(),
                    caption: "no captions on audio".into(),
                    ..Default::default()
                }),
                "k9",
            ),
            "media.caption",
            tonic::Code::InvalidArgument,
        ),
        (
            with(
                C::Media(pb::MediaContent {
                    id: "1".into(),
                    ..Default::default()
                }),
                "k10",
            ),
            "media.kind",
            tonic::Code::InvalidArgument,
        ),
        // order_update takes two body parameters (Meta would answer 132000).
        (
            template("k11", USER, "order_update", &["Ana"]),
            "template",
            tonic::Code::InvalidArgument,
        ),
        (
            template("k12", USER, "never_registered", &[]),
            "never_registered",
            tonic::Code::FailedPrecondition,
        ),
    ];
    for (request, field, code) in cases {
        let key = request.idempotency_key.clone();
        let refused = mesh
            .send(request)
            .await
            .expect_err("invalid content is refused");
        assert_eq!(refused.code(), code, "{key}: {refused:?}");
        assert!(
            refused.message().contains(field),
            "{key}: the error names {field}: {:?}",
            refused.message()
        );
        if !key.is_empty() {
            let looked_up = mesh
                .grpc()
                .get_outbound_message(pb::GetOutboundMessageRequest {
                    key: Some(pb::get_outbound_message_request::Key::IdempotencyKey(
                        pb::IdempotencyKey {
                            business_phone_number_id: PHONE.into(),
                            key: key.clone(),
                        },
                    )),
                })
                .await
                .expect_err("nothing was queued under the key");
            assert_eq!(looked_up.code(), tonic::Code::NotFound, "{key}");
        }
    }
    let status = mesh.send_status().await;
    assert_eq!(
        (status.queue_depth, status.in_flight, status.dead),
        (0, 0, 0),
        "nothing queued"
    );
    assert!(mesh.sim_received().await.is_empty(), "nothing reached Meta");
    mesh.stop().await;
}
