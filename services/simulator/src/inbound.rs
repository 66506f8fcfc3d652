//! Messages users send the business, shaped exactly like Meta's (see the corpus's
//! `message__text.json`, `message__reply.json`, `callback_button__*.json` and
//! `callback_selection__*.json`): a text (a reply when it has a context), a reply-button tap
//! (`interactive.button_reply`), a list choice (`interactive.list_reply`) or a template
//! quick-reply tap (`button{payload, text}`). `POST /_sim/inbound` sends one; the simulated
//! users send them at a rate. Each one opens the user's 24-hour window.
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::SimState;
use crate::error::GraphError;
use crate::knobs::digits;
use crate::outbox::Update;

/// What the user sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    ButtonReply {
        id: String,
        title: String,
    },
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A template's quick-reply button: its payload (the button's text when the send gave
    /// none) and its text.
    Button {
        payload: String,
        text: String,
    },
}

/// One message from a user to a business number.
#[derive(Debug, Clone, PartialEq)]
pub struct UserMessage {
    pub phone_number_id: String,
    /// The user's wa_id.
    pub from: String,
    /// The user's profile name.
    pub name: String,
    pub wamid: String,
    pub content: Content,
    /// The business message this one answers (`context.id`).
    pub context: Option<String>,
}

impl UserMessage {
    /// `messages[]` item; `business_number` is `context.from`, `timestamp` Unix seconds.
    pub fn message_json(&self, business_number: &str, timestamp: &str) -> Value {
        let mut message = json!({
            "from": self.from,
            "id": self.wamid,
            "timestamp": timestamp,
        });
        if let Some(context) = &self.context {
            message["context"] = json!({"from": business_number, "id": context});
        }
        match &self.content {
            Content::Text(body) => {
                message["type"] = json!("text");
                message["text"] = json!({"body": body});
            }
            Content::ButtonReply { id, title } => {
                message["type"] = json!("interactive");
                message["interactive"] =
                    json!({"type": "button_reply", "button_reply": {"id": id, "title": title}});
            }
            Content::ListReply {
                id,
                title,
                description,
            } => {
                let mut reply = json!({"id": id, "title": title});
                if let Some(description) = description {
                    reply["description"] = json!(description);
                }
                message["type"] = json!("interactive");
                message["interactive"] = json!({"type": "list_reply", "list_reply": reply});
            }
            Content::Button { payload, text } => {
                message["type"] = json!("button");
                message["button"] = json!({"payload": payload, "text": text});
            }
        }
        message
    }

    /// `contacts[]` item.
    pub fn contact_json(&self) -> Value {
        json!({"profile": {"name": self.name}, "wa_id": self.from})
    }
}

/// A fresh Meta-like message id.
pub fn new_wamid() -> String {
    format!(
        "wamid.SIM{}",
        hex::encode(rand::random::<[u8; 16]>()).to_uppercase()
    )
}

/// `POST /_sim/inbound` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundRequest {
    phone_number_id: String,
    from: String,
    name: Option<String>,
    text: Option<String>,
    button_reply: Option<Reply>,
    list_reply: Option<Reply>,
    button: Option<TemplateButton>,
    context_wamid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    id: String,
    title: String,
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateButton {
    payload: String,
    text: String,
}

/// `POST /_sim/inbound`: `{phone_number_id, from, name?, text? | button_reply{id,title}? |
/// list_reply{id,title,description?}? | button{payload,text}?, context_wamid?}`, exactly one
/// content. Opens the window at once, queues the signed `messages` webhook, answers
/// `{"wamid": ..}`; 400 naming the problem otherwise.
pub async fn send(State(state): State<SimState>, body: Bytes) -> Result<Json<Value>, GraphError> {
    let request: InboundRequest = serde_json::from_slice(&body).map_err(|e| {
        GraphError::invalid_parameter(format!("the inbound message is not valid: {e}"))
    })?;
    let message = user_message(request).map_err(GraphError::invalid_parameter)?;
    let window = state.knobs().behaviour.window;
    state
        .windows
        .open(&message.phone_number_id, &message.from, window);
    let wamid = message.wamid.clone();
    state.schedule(Instant::now(), Update::Message(Box::new(message)));
    Ok(Json(json!({ "wamid": wamid })))
}

fn user_message(request: InboundRequest) -> Result<UserMessage, String> {
    if request.phone_number_id.trim().is_empty() {
        return Err("phone_number_id is required".to_owned());
    }
    let from = digits(&request.from);
    if from.is_empty() {
        return Err(format!(
            "from must be the user's number (digits), not {:?}",
            request.from
        ));
    }
    let mut contents = Vec::new();
    if let Some(text) = request.text {
        contents.push(Content::Text(text));
    }
    if let Some(r) = request.button_reply {
        contents.push(Content::ButtonReply {
            id: r.id,
            title: r.title,
        });
    }
    if let Some(r) = request.list_reply {
        contents.push(Content::ListReply {
            id: r.id,
            title: r.title,
            description: r.description,
        });
    }
    if let Some(b) = request.button {
        contents.push(Content::Button {
            payload: b.payload,
            text: b.text,
        });
    }
    let content = match contents.len() {
        1 => contents.remove(0),
        0 => return Err("give one of text, button_reply, list_reply or button".to_owned()),
        n => {
            return Err(format!(
                "give one of text, button_reply, list_reply or button, not {n}"
            ));
        }
    };
    let empty = match &content {
        Content::Text(body) => body.is_empty(),
        Content::ButtonReply { id, title } | Content::ListReply { id, title, .. } => {
            id.is_empty() || title.is_empty()
        }
        Content::Button { payload, text } => payload.is_empty() || text.is_empty(),
    };
    if empty {
        return Err("the message's text, id, title or payload is empty".to_owned());
    }
    if let Content::Text(body) = &content
        && body.chars().count() > 4096
    {
        return Err("text must be at most 4096 characters".to_owned());
    }
    Ok(UserMessage {
        phone_number_id: request.phone_number_id,
        name: request.name.unwrap_or_else(|| format!("User {from}")),
        from,
        wamid: new_wamid(),
        content,
        context: request.context_wamid.filter(|c| !c.is_empty()),
    })
}
