use serde_json::json;

use crate::outgoing::*;

fn message(content: Content) -> OutgoingMessage {
    OutgoingMessage {
        to: "15550102030".into(),
        reply_to: None,
        callback_data: None,
        content,
    }
}

fn param(value: ParameterValue) -> Parameter {
    Parameter { name: None, value }
}

#[test]
fn text_renders_meta_envelope_and_body() {
    let text = message(Content::Text(Text {
        body: "Hello".into(),
        preview_url: true,
    }));
    assert_eq!(
        text.to_graph_body(),
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15550102030",
            "type": "text",
            "text": {"body": "Hello", "preview_url": true},
        })
    );
    assert_eq!(text.kind(), "text");
}

#[test]
fn a_reply_carries_its_context_and_callback_data() {
    let mut reply = message(Content::Text(Text {
        body: "Yes".into(),
        preview_url: false,
    }));
    reply.reply_to = Some("wamid.ABC".into());
    reply.callback_data = Some("out-42".into());
    assert_eq!(
        reply.to_graph_body(),
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": "15550102030",
            "type": "text",
            "context": {"message_id": "wamid.ABC"},
            "biz_opaque_callback_data": "out-42",
            "text": {"body": "Yes", "preview_url": false},
        })
    );
}

#[test]
fn media_renders_id_or_link_with_caption_and_filename_only_when_set() {
    let document = message(Content::Media(Media {
        kind: MediaKind::Document,
        source: MediaSource::Link("https://example.com/a.pdf".into()),
        caption: Some("Your invoice".into()),
        filename: Some("invoice.pdf".into()),
    }));
    assert_eq!(document.kind(), "document");
    assert_eq!(
        document.to_graph_body()["document"],
        json!({"link": "https://example.com/a.pdf", "caption": "Your invoice", "filename": "invoice.pdf"})
    );
    assert_eq!(document.to_graph_body()["type"], "document");

    let sticker = message(Content::Media(Media {
        kind: MediaKind::Sticker,
        source: MediaSource::Id("1234".into()),
        caption: None,
        filename: None,
    }));
    let body = sticker.to_graph_body();
    assert_eq!(body["type"], "sticker");
    assert_eq!(body["sticker"], json!({"id": "1234"}));
    for (kind, name) in [
        (MediaKind::Image, "image"),
        (MediaKind::Video, "video"),
        (MediaKind::Audio, "audio"),
    ] {
        let media = message(Content::Media(Media {
            kind,
            source: MediaSource::Id("9".into()),
            caption: None,
            filename: None,
        }));
        assert_eq!(media.kind(), name);
        assert_eq!(media.to_graph_body()[name], json!({"id": "9"}));
    }
}

#[test]
fn reply_buttons_render_as_meta_button_interactive() {
    let buttons = message(Content::Interactive(Interactive {
        header_text: Some("Order 42".into()),
        body: "Confirm?".into(),
        footer: Some("Reply below".into()),
        action: InteractiveAction::Buttons(vec![
            ReplyButton {
                id: "yes".into(),
                title: "Yes".into(),
            },
            ReplyButton {
                id: "no".into(),
                title: "No".into(),
            },
        ]),
    }));
    assert_eq!(buttons.kind(), "interactive");
    assert_eq!(
        buttons.to_graph_body()["interactive"],
        json!({
            "type": "button",
            "header": {"type": "text", "text": "Order 42"},
            "body": {"text": "Confirm?"},
            "footer": {"text": "Reply below"},
            "action": {"buttons": [
                {"type": "reply", "reply": {"id": "yes", "title": "Yes"}},
                {"type": "reply", "reply": {"id": "no", "title": "No"}},
            ]},
        })
    );
}

#[test]
fn lists_render_sections_and_rows_leaving_absent_options_out() {
    let list = message(Content::Interactive(Interactive {
        header_text: None,
        body: "Pick a slot".into(),
        footer: None,
        action: InteractiveAction::List {
            button: "Slots".into(),
            sections: vec![
                ListSection {
                    title: Some("Morning".into()),
                    rows: vec![ListRow {
                        id: "m9".into(),
                        title: "9:00".into(),
                        description: Some("Front desk".into()),
                    }],
                },
                ListSection {
                    title: Some("Evening".into()),
                    rows: vec![ListRow {
                        id: "e6".into(),
                        title: "18:00".into(),
                        description: None,
                    }],
                },
            ],
        },
    }));
    assert_eq!(
        list.to_graph_body()["interactive"],
        json!({
            "type": "list",
            "body": {"text": "Pick a slot"},
            "action": {
                "button": "Slots",
                "sections": [
                    {"title": "Morning", "rows": [{"id": "m9", "title": "9:00", "description": "Front desk"}]},
                    {"title": "Evening", "rows": [{"id": "e6", "title": "18:00"}]},
                ],
            },
        })
    );
}

#[test]
fn templates_render_header_body_and_button_components() {
    let template = message(Content::Template(Template {
        name: "order_update".into(),
        language: "en_US".into(),
        header: Some(param(ParameterValue::Document(MediaRef {
            source: MediaSource::Id("77".into()),
            filename: Some("receipt.pdf".into()),
        }))),
        body: vec![
            param(ParameterValue::Text("Ana".into())),
            param(ParameterValue::Currency {
                fallback_value: "$10.99".into(),
                code: "USD".into(),
                amount_1000: 10990,
            }),
            param(ParameterValue::DateTime("May 1, 2026".into())),
        ],
        buttons: vec![
            ButtonParameter {
                sub_type: ButtonSubType::QuickReply,
                index: 0,
                value: "STOP".into(),
            },
            ButtonParameter {
                sub_type: ButtonSubType::Url,
                index: 1,
                value: "orders/42".into(),
            },
            ButtonParameter {
                sub_type: ButtonSubType::CopyCode,
                index: 2,
                value: "SAVE10".into(),
            },
            ButtonParameter {
                sub_type: ButtonSubType::Flow,
                index: 3,
                value: "flow-token-1".into(),
            },
        ],
    }));
    assert_eq!(template.kind(), "template");
    assert_eq!(
        template.to_graph_body()["template"],
        json!({
            "name": "order_update",
            "language": {"policy": "deterministic", "code": "en_US"},
            "components": [
                {"type": "header", "parameters": [
                    {"type": "document", "document": {"id": "77", "filename": "receipt.pdf"}},
                ]},
                {"type": "body", "parameters": [
                    {"type": "text", "text": "Ana"},
                    {"type": "currency", "currency": {"fallback_value": "$10.99", "code": "USD", "amount_1000": 10990}},
                    {"type": "date_time", "date_time": {"fallback_value": "May 1, 2026"}},
                ]},
                {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [
                    {"type": "payload", "payload": "STOP"},
                ]},
                {"type": "button", "sub_type": "url", "index": "1", "parameters": [
                    {"type": "text", "text": "orders/42"},
                ]},
                {"type": "button", "sub_type": "copy_code", "index": "2", "parameters": [
                    {"type": "coupon_code", "coupon_code": "SAVE10"},
                ]},
                {"type": "button", "sub_type": "flow", "index": "3", "parameters": [
                    {"type": "action", "action": {"flow_token": "flow-token-1"}},
                ]},
            ],
        })
    );
}

#[test]
fn named_parameters_carry_their_parameter_name() {
    let template = message(Content::Template(Template {
        name: "welcome".into(),
        language: "en".into(),
        header: Some(Parameter {
            name: Some("store".into()),
            value: ParameterValue::Text("Main St".into()),
        }),
        body: vec![Parameter {
            name: Some("first_name".into()),
            value: ParameterValue::Text("Ana".into()),
        }],
        buttons: vec![],
    }));
    assert_eq!(
        template.to_graph_body()["template"]["components"],
        json!([
            {"type": "header", "parameters": [{"type": "text", "text": "Main St", "parameter_name": "store"}]},
            {"type": "body", "parameters": [{"type": "text", "text": "Ana", "parameter_name": "first_name"}]},
        ])
    );
}

#[test]
fn media_and_location_headers_render_as_meta_shapes() {
    let with_header = |header: ParameterValue| {
        message(Content::Template(Template {
            name: "t".into(),
            language: "en".into(),
            header: Some(param(header)),
            body: vec![],
            buttons: vec![],
        }))
        .to_graph_body()["template"]["components"][0]["parameters"][0]
            .clone()
    };
    assert_eq!(
        with_header(ParameterValue::Image(MediaRef {
            source: MediaSource::Link("https://example.com/p.jpg".into()),
            filename: None,
        })),
        json!({"type": "image", "image": {"link": "https://example.com/p.jpg"}})
    );
    assert_eq!(
        with_header(ParameterValue::Video(MediaRef {
            source: MediaSource::Id("5".into()),
            filename: None,
        })),
        json!({"type": "video", "video": {"id": "5"}})
    );
    assert_eq!(
        with_header(ParameterValue::Location {
            latitude: 37.48,
            longitude: -122.15,
            name: "HQ".into(),
            address: "1 Hacker Way".into(),
        }),
        json!({"type": "location", "location": {
            "latitude": 37.48, "longitude": -122.15, "name": "HQ", "address": "1 Hacker Way",
        }})
    );
}

#[test]
fn a_template_without_parameters_sends_no_components() {
    let hello = message(Content::Template(Template {
        name: "hello_world".into(),
        language: "en_US".into(),
        header: None,
        body: vec![],
        buttons: vec![],
    }));
    assert_eq!(
        hello.to_graph_body()["template"],
        json!({"name": "hello_world", "language": {"policy": "deterministic", "code": "en_US"}})
    );
}
