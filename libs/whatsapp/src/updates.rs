//! A webhook flattened into the updates wamesh stores.
//!
//! `field == "messages"` values are split into messages, statuses, contacts and errors; the
//! Business app's echoes (`smb_message_echoes`) become outbound messages; every other field
//! (account, template, call, preference updates and fields not yet invented) is kept whole as
//! an [`OtherUpdate`]. Nothing in a valid envelope is dropped: an item we cannot identify (a
//! message without an id, say) is kept as an `OtherUpdate` of its own.
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::envelope::{Webhook, id_string, int_value};

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A user wrote to the business.
    Inbound,
    /// The business wrote to a user (an echo from the Business app, or our own send).
    Outbound,
}

/// An error object as Meta sends it (`errors[]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiError {
    pub code: i64,
    pub title: String,
    pub message: String,
    pub details: String,
}

/// Media of an image, video, audio, voice, document or sticker message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Media {
    pub id: String,
    pub mime_type: String,
    pub sha256: String,
    pub caption: String,
    pub filename: String,
    pub url: String,
}

/// One message: inbound from a user, or an echo of one the business sent from the app.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageUpdate {
    pub direction: Direction,
    /// `"webhook"` for inbound messages, `"echo"` for `smb_message_echoes`.
    pub origin: &'static str,
    pub business_phone_number_id: String,
    pub wamid: String,
    /// The user: `wa_id`/`from` (or `to` for echoes), else the business-scoped user id.
    pub contact_id: String,
    /// Meta's `type` (`"text"`, `"image"`, ... or a type not yet invented; `""` when absent).
    pub kind: String,
    /// Meta's timestamp, Unix seconds (0 when absent).
    pub timestamp: i64,
    pub text: Option<String>,
    pub media: Option<Media>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub location_name: Option<String>,
    pub location_address: Option<String>,
    /// Interactive reply id (button/list), flow (`nfm_reply`) name, or template button payload.
    pub reply_id: Option<String>,
    /// Interactive reply title, flow body, or template button text.
    pub reply_title: Option<String>,
    /// What a reaction, edit or revoke refers to.
    pub target_message_id: Option<String>,
    pub reaction_emoji: Option<String>,
    pub context_message_id: Option<String>,
    pub forwarded: bool,
    pub errors: Vec<ApiError>,
    /// The message object as Meta sent it (JSON).
    pub raw: String,
}

/// One delivery status of a message the business sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub business_phone_number_id: String,
    pub wamid: String,
    /// Meta's status string, lower case (`sent`, `delivered`, `read`, `failed`, `played`, ...).
    pub status: String,
    pub timestamp: i64,
    /// The recipient (`recipient_id`, else the business-scoped `recipient_user_id`).
    pub recipient_id: String,
    pub errors: Vec<ApiError>,
    pub pricing_category: Option<String>,
    pub conversation_id: Option<String>,
    /// `biz_opaque_callback_data` as we set it on the send: Meta echoes it in every status, so
    /// a status can be tied to our message even when the send's answer (the wamid) was lost.
    pub callback_data: Option<String>,
    pub raw: String,
}

/// A `contacts[]` item: who a user is, as far as Meta tells.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactUpdate {
    pub business_phone_number_id: String,
    pub contact_id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub profile_name: Option<String>,
}

/// A `value.errors[]` item (a problem Meta reports outside any message).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorUpdate {
    pub waba_id: String,
    pub business_phone_number_id: String,
    pub error: ApiError,
    /// Content-derived identity, so the same error delivered twice is stored once.
    pub dedup_key: String,
    pub raw: String,
}

/// A webhook change that is not messages: kept whole.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherUpdate {
    pub waba_id: String,
    /// From `value.metadata.phone_number_id` when the value has one.
    pub business_phone_number_id: String,
    pub field: String,
    /// Content-derived identity, so the same change delivered twice is stored once.
    pub dedup_key: String,
    pub raw: String,
}

/// Everything a webhook holds, flattened.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Updates {
    pub messages: Vec<MessageUpdate>,
    pub statuses: Vec<StatusUpdate>,
    pub contacts: Vec<ContactUpdate>,
    pub errors: Vec<ErrorUpdate>,
    pub other: Vec<OtherUpdate>,
}

impl Updates {
    /// Flattens a parsed webhook.
    pub fn from_webhook(webhook: &Webhook) -> Self {
        let mut updates = Self::default();
        for entry in &webhook.entries {
            for change in &entry.changes {
                let phone =
                    str_at(&change.value, &["metadata", "phone_number_id"]).unwrap_or_default();
                let ctx = Ctx {
                    waba_id: &entry.waba_id,
                    time: entry.time,
                    phone: &phone,
                    field: &change.field,
                };
                match change.field.as_str() {
                    "messages" => updates.add_messages_value(&ctx, &change.value),
                    "smb_message_echoes" => updates.add_echoes_value(&ctx, &change.value),
                    _ => updates.add_other(&ctx, &change.value),
                }
            }
        }
        updates
    }

    fn add_messages_value(&mut self, ctx: &Ctx, value: &Value) {
        for contact in array(value, "contacts") {
            match parse_contact(ctx.phone, contact) {
                Some(c) => self.contacts.push(c),
                None => self.add_other(ctx, contact),
            }
        }
        for message in array(value, "messages") {
            match parse_message(ctx.phone, message, Direction::Inbound) {
                Some(m) => self.messages.push(m),
                None => self.add_other(ctx, message),
            }
        }
        for status in array(value, "statuses") {
            match parse_status(ctx.phone, status) {
                Some(s) => self.statuses.push(s),
                None => self.add_other(ctx, status),
            }
        }
        let errors = array(value, "errors");
        if !errors.is_empty() {
            // The same error text can recur; what it was about (the sibling ids) tells them apart.
            let siblings: Vec<&str> = ["messages", "statuses"]
                .iter()
                .flat_map(|key| array(value, key))
                .filter_map(|item| item.get("id").and_then(Value::as_str))
                .collect();
            for error in errors {
                self.errors.push(ErrorUpdate {
                    waba_id: ctx.waba_id.to_owned(),
                    business_phone_number_id: ctx.phone.to_owned(),
                    error: parse_error(error),
                    dedup_key: dedup_key(&[
                        ctx.waba_id,
                        ctx.phone,
                        "error",
                        &error.to_string(),
                        &siblings.join(","),
                    ]),
                    raw: error.to_string(),
                });
            }
        }
    }

    fn add_echoes_value(&mut self, ctx: &Ctx, value: &Value) {
        for contact in array(value, "contacts") {
            if let Some(c) = parse_contact(ctx.phone, contact) {
                self.contacts.push(c);
            }
        }
        let echoes = array(value, "message_echoes");
        if echoes.is_empty() {
            return self.add_other(ctx, value);
        }
        for echo in echoes {
            match parse_message(ctx.phone, echo, Direction::Outbound) {
                Some(m) => self.messages.push(m),
                None => self.add_other(ctx, echo),
            }
        }
    }

    fn add_other(&mut self, ctx: &Ctx, value: &Value) {
        let raw = value.to_string();
        let time = ctx.time.map(|t| t.to_string()).unwrap_or_default();
        self.other.push(OtherUpdate {
            waba_id: ctx.waba_id.to_owned(),
            business_phone_number_id: ctx.phone.to_owned(),
            field: ctx.field.to_owned(),
            dedup_key: dedup_key(&[ctx.waba_id, &time, ctx.field, &raw]),
            raw,
        });
    }

    /// How many updates of each kind: (messages, statuses, contacts, errors, other).
    pub fn counts(&self) -> [usize; 5] {
        [
            self.messages.len(),
            self.statuses.len(),
            self.contacts.len(),
            self.errors.len(),
            self.other.len(),
        ]
    }
}

struct Ctx<'a> {
    waba_id: &'a str,
    time: Option<i64>,
    phone: &'a str,
    field: &'a str,
}

fn parse_message(phone: &str, m: &Value, direction: Direction) -> Option<MessageUpdate> {
    let wamid = id_string(m.get("id")).filter(|id| !id.is_empty())?;
    let contact_id = match direction {
        Direction::Inbound => first_non_empty(m, &["from", "from_user_id"]),
        Direction::Outbound => first_non_empty(m, &["to", "to_user_id"]),
    };
    let kind = str_at(m, &["type"]).unwrap_or_default();
    // An edit carries the new content in `edit.message`; read the content from there.
    let body = if kind == "edit" {
        m.pointer("/edit/message").unwrap_or(m)
    } else {
        m
    };
    let body_kind = str_at(body, &["type"]).unwrap_or_else(|| kind.clone());
    let typed = body.get(&body_kind).unwrap_or(&Value::Null);

    let mut update = MessageUpdate {
        direction,
        origin: if direction == Direction::Inbound {
            "webhook"
        } else {
            "echo"
        },
        business_phone_number_id: phone.to_owned(),
        wamid,
        contact_id: contact_id.unwrap_or_default(),
        timestamp: m.get("timestamp").and_then(int_value).unwrap_or(0),
        text: None,
        media: None,
        latitude: None,
        longitude: None,
        location_name: None,
        location_address: None,
        reply_id: None,
        reply_title: None,
        target_message_id: None,
        reaction_emoji: None,
        context_message_id: str_at(m, &["context", "id"]),
        forwarded: bool_at(m, &["context", "forwarded"])
            || bool_at(m, &["context", "frequently_forwarded"]),
        errors: array(m, "errors").into_iter().map(parse_error).collect(),
        raw: m.to_string(),
        kind,
    };
    match body_kind.as_str() {
        "text" => update.text = str_at(typed, &["body"]),
        "image" | "video" | "audio" | "voice" | "document" | "sticker" => {
            update.media = Some(Media {
                id: str_at(typed, &["id"]).unwrap_or_default(),
                mime_type: str_at(typed, &["mime_type"]).unwrap_or_default(),
                sha256: str_at(typed, &["sha256"]).unwrap_or_default(),
                caption: str_at(typed, &["caption"]).unwrap_or_default(),
                filename: str_at(typed, &["filename"]).unwrap_or_default(),
                url: str_at(typed, &["url"]).unwrap_or_default(),
            })
        }
        "location" => {
            update.latitude = typed.get("latitude").and_then(Value::as_f64);
            update.longitude = typed.get("longitude").and_then(Value::as_f64);
            update.location_name = str_at(typed, &["name"]);
            update.location_address = str_at(typed, &["address"]);
        }
        "interactive" => {
            let reply_kind = str_at(typed, &["type"]).unwrap_or_default();
            let reply = typed.get(&reply_kind).unwrap_or(&Value::Null);
            update.reply_id = str_at(reply, &["id"]).or_else(|| str_at(reply, &["name"]));
            update.reply_title = str_at(reply, &["title"]).or_else(|| str_at(reply, &["body"]));
        }
        "button" => {
            update.reply_id = str_at(typed, &["payload"]);
            update.reply_title = str_at(typed, &["text"]);
        }
        "reaction" => {
            update.target_message_id = str_at(typed, &["message_id"]);
            // An absent or empty emoji means the reaction was removed.
            update.reaction_emoji = Some(str_at(typed, &["emoji"]).unwrap_or_default());
        }
        "system" => update.text = str_at(typed, &["body"]),
        _ => {}
    }
    if matches!(update.kind.as_str(), "edit" | "revoke") {
        let key = update.kind.clone();
        update.target_message_id = str_at(m, &[key.as_str(), "original_message_id"]);
    }
    Some(update)
}

fn parse_status(phone: &str, s: &Value) -> Option<StatusUpdate> {
    let wamid = id_string(s.get("id")).filter(|id| !id.is_empty())?;
    let status = str_at(s, &["status"])
        .filter(|st| !st.is_empty())?
        .to_ascii_lowercase();
    Some(StatusUpdate {
        business_phone_number_id: phone.to_owned(),
        wamid,
        status,
        timestamp: s.get("timestamp").and_then(int_value).unwrap_or(0),
        recipient_id: first_non_empty(s, &["recipient_id", "recipient_user_id"])
            .unwrap_or_default(),
        errors: array(s, "errors").into_iter().map(parse_error).collect(),
        pricing_category: str_at(s, &["pricing", "category"]),
        conversation_id: str_at(s, &["conversation", "id"]),
        callback_data: str_at(s, &["biz_opaque_callback_data"]),
        raw: s.to_string(),
    })
}

fn parse_contact(phone: &str, c: &Value) -> Option<ContactUpdate> {
    let wa_id = str_at(c, &["wa_id"]).filter(|s| !s.is_empty());
    let user_id = str_at(c, &["user_id"]).filter(|s| !s.is_empty());
    Some(ContactUpdate {
        business_phone_number_id: phone.to_owned(),
        contact_id: wa_id.clone().or_else(|| user_id.clone())?,
        wa_id,
        user_id,
        profile_name: str_at(c, &["profile", "name"]),
    })
}

fn parse_error(e: &Value) -> ApiError {
    ApiError {
        code: e.get("code").and_then(int_value).unwrap_or(0),
        title: str_at(e, &["title"]).unwrap_or_default(),
        message: str_at(e, &["message"]).unwrap_or_default(),
        details: str_at(e, &["error_data", "details"]).unwrap_or_default(),
    }
}

fn array<'a>(value: &'a Value, key: &str) -> Vec<&'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn str_at(value: &Value, path: &[&str]) -> Option<String> {
    let mut at = value;
    for key in path {
        at = at.get(key)?;
    }
    id_string(Some(at))
}

fn bool_at(value: &Value, path: &[&str]) -> bool {
    let mut at = value;
    for key in path {
        match at.get(key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_bool().unwrap_or(false)
}

fn first_non_empty(value: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| str_at(value, &[key]).filter(|s| !s.is_empty()))
}

fn dedup_key(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests;
