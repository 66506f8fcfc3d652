//! The Graph API body of a message: `{"messaging_product":"whatsapp","recipient_type":
//! "individual","to","type",<type>:{..}}`, with `context.message_id` for a reply and
//! `biz_opaque_callback_data` when set. Absent options are left out, never sent empty.
use serde_json::{Map, Value, json};

use super::{
    ButtonParameter, ButtonSubType, Content, Interactive, InteractiveAction, Media, MediaRef,
    MediaSource, OutgoingMessage, Parameter, ParameterValue, Template,
};

impl OutgoingMessage {
    /// The exact body of `POST /{phone_number_id}/messages` for this message. Render only a
    /// message that passed [`OutgoingMessage::validate`]: rendering does not check limits.
    pub fn to_graph_body(&self) -> Value {
        let kind = self.kind();
        let mut body = Map::new();
        body.insert("messaging_product".into(), "whatsapp".into());
        body.insert("recipient_type".into(), "individual".into());
        body.insert("to".into(), self.to.clone().into());
        body.insert("type".into(), kind.into());
        if let Some(reply_to) = &self.reply_to {
            body.insert("context".into(), json!({ "message_id": reply_to }));
        }
        if let Some(data) = &self.callback_data {
            body.insert("biz_opaque_callback_data".into(), data.clone().into());
        }
        let content = match &self.content {
            Content::Text(text) => json!({"body": text.body, "preview_url": text.preview_url}),
            Content::Media(media) => media_object(media),
            Content::Interactive(interactive) => interactive_object(interactive),
            Content::Template(template) => template_object(template),
        };
        body.insert(kind.into(), content);
        Value::Object(body)
    }
}

fn media_object(media: &Media) -> Value {
    let mut object = source_object(&media.source);
    insert_some(&mut object, "caption", &media.caption);
    insert_some(&mut object, "filename", &media.filename);
    Value::Object(object)
}

/// `{"id": ..}` or `{"link": ..}`.
fn source_object(source: &MediaSource) -> Map<String, Value> {
    let mut object = Map::new();
    match source {
        MediaSource::Id(id) => object.insert("id".into(), id.clone().into()),
        MediaSource::Link(link) => object.insert("link".into(), link.clone().into()),
    };
    object
}

fn insert_some(object: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(value) = value {
        object.insert(key.into(), value.clone().into());
    }
}

fn interactive_object(interactive: &Interactive) -> Value {
    let mut object = Map::new();
    let (kind, action) = match &interactive.action {
        InteractiveAction::Buttons(buttons) => (
            "button",
            json!({"buttons": buttons
                .iter()
                .map(|b| json!({"type": "reply", "reply": {"id": b.id, "title": b.title}}))
                .collect::<Vec<_>>()}),
        ),
        InteractiveAction::List { button, sections } => (
            "list",
            json!({"button": button, "sections": sections
                .iter()
                .map(|section| {
                    let mut object = Map::new();
                    insert_some(&mut object, "title", &section.title);
                    let rows = section.rows.iter().map(|row| {
                        let mut object = Map::new();
                        object.insert("id".into(), row.id.clone().into());
                        object.insert("title".into(), row.title.clone().into());
                        insert_some(&mut object, "description", &row.description);
                        Value::Object(object)
                    });
                    object.insert("rows".into(), rows.collect());
                    Value::Object(object)
                })
                .collect::<Vec<_>>()}),
        ),
    };
    object.insert("type".into(), kind.into());
    if let Some(header) = &interactive.header_text {
        object.insert("header".into(), json!({"type": "text", "text": header}));
    }
    object.insert("body".into(), json!({ "text": interactive.body }));
    if let Some(footer) = &interactive.footer {
        object.insert("footer".into(), json!({ "text": footer }));
    }
    object.insert("action".into(), action);
    Value::Object(object)
}

fn template_object(template: &Template) -> Value {
    let mut components = Vec::new();
    if let Some(header) = &template.header {
        components.push(json!({"type": "header", "parameters": [parameter(header)]}));
    }
    if !template.body.is_empty() {
        let parameters: Vec<Value> = template.body.iter().map(parameter).collect();
        components.push(json!({"type": "body", "parameters": parameters}));
    }
    components.extend(template.buttons.iter().map(button));
    let mut object = Map::new();
    object.insert("name".into(), template.name.clone().into());
    object.insert(
        "language".into(),
        json!({"policy": "deterministic", "code": template.language}),
    );
    if !components.is_empty() {
        object.insert("components".into(), components.into());
    }
    Value::Object(object)
}

fn parameter(parameter: &Parameter) -> Value {
    let mut object = match &parameter.value {
        ParameterValue::Text(text) => json!({"type": "text", "text": text}),
        ParameterValue::Currency {
            fallback_value,
            code,
            amount_1000,
        } => json!({"type": "currency", "currency": {
            "fallback_value": fallback_value, "code": code, "amount_1000": amount_1000,
        }}),
        ParameterValue::DateTime(fallback_value) => {
            json!({"type": "date_time", "date_time": {"fallback_value": fallback_value}})
        }
        ParameterValue::Image(media) => media_parameter("image", media),
        ParameterValue::Video(media) => media_parameter("video", media),
        ParameterValue::Document(media) => media_parameter("document", media),
        ParameterValue::Location {
            latitude,
            longitude,
            name,
            address,
        } => json!({"type": "location", "location": {
            "latitude": latitude, "longitude": longitude, "name": name, "address": address,
        }}),
    };
    if let (Some(name), Value::Object(object)) = (&parameter.name, &mut object) {
        object.insert("parameter_name".into(), name.clone().into());
    }
    object
}

fn media_parameter(kind: &str, media: &MediaRef) -> Value {
    let mut object = source_object(&media.source);
    insert_some(&mut object, "filename", &media.filename);
    json!({"type": kind, kind: object})
}

/// One `button` component per button parameter; Meta wants the index as a string.
fn button(button: &ButtonParameter) -> Value {
    let parameter = match button.sub_type {
        ButtonSubType::QuickReply => json!({"type": "payload", "payload": button.value}),
        ButtonSubType::Url => json!({"type": "text", "text": button.value}),
        ButtonSubType::CopyCode => json!({"type": "coupon_code", "coupon_code": button.value}),
        ButtonSubType::Flow => json!({"type": "action", "action": {"flow_token": button.value}}),
    };
    json!({
        "type": "button",
        "sub_type": button.sub_type.as_str(),
        "index": button.index.to_string(),
        "parameters": [parameter],
    })
}

#[cfg(test)]
mod tests;
