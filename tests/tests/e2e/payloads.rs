//! Webhook bodies as Meta sends them, built for the tests: inbound text messages and delivery
//! statuses of one business number, in the `whatsapp_business_account` envelope.
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The business number the built webhooks are for.
pub const PHONE: &str = "1122334455667";
pub const WABA: &str = "102290129340398";

/// Now, Unix seconds.
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// `{"object":"whatsapp_business_account","entry":[{"id":WABA,"changes":[{field, value}]}]}`.
pub fn envelope(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA, "changes": [{"field": field, "value": value}]}]
    })
}

/// A `messages` value: metadata plus the given contacts, messages and statuses.
pub fn messages_value(contacts: Vec<Value>, messages: Vec<Value>, statuses: Vec<Value>) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE},
    });
    for (key, items) in [
        ("contacts", contacts),
        ("messages", messages),
        ("statuses", statuses),
    ] {
        if !items.is_empty() {
            value[key] = Value::Array(items);
        }
    }
    value
}

/// A `contacts[]` item.
pub fn contact(wa_id: &str) -> Value {
    json!({"profile": {"name": format!("User {wa_id}")}, "wa_id": wa_id})
}

/// A text message from `from`.
pub fn text(from: &str, wamid: &str, timestamp_s: i64, body: &str) -> Value {
    json!({
        "from": from,
        "id": wamid,
        "timestamp": timestamp_s.to_string(),
        "type": "text",
        "text": {"body": body}
    })
}

/// A delivery status of an outbound message to `recipient`.
pub fn status(wamid: &str, status: &str, timestamp_s: i64, recipient: &str) -> Value {
    json!({"id": wamid, "status": status, "timestamp": timestamp_s.to_string(), "recipient_id": recipient})
}

/// A whole webhook: one text message from `from` (with its contact).
pub fn inbound_text(from: &str, wamid: &str, timestamp_s: i64, body: &str) -> Vec<u8> {
    to_bytes(&envelope(
        "messages",
        messages_value(
            vec![contact(from)],
            vec![text(from, wamid, timestamp_s, body)],
            vec![],
        ),
    ))
}

/// A whole webhook carrying these statuses.
pub fn statuses(items: Vec<Value>) -> Vec<u8> {
    to_bytes(&envelope("messages", messages_value(vec![], vec![], items)))
}

pub fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON serialises")
}

/// A valid, one-message webhook of exactly `len` bytes (the text body is padded to fit).
pub fn inbound_text_of_len(from: &str, wamid: &str, len: usize) -> Vec<u8> {
    let timestamp_s = now_s();
    let empty = inbound_text(from, wamid, timestamp_s, "");
    assert!(len >= empty.len(), "{len} bytes cannot hold a webhook");
    let body = inbound_text(from, wamid, timestamp_s, &"a".repeat(len - empty.len()));
    assert_eq!(body.len(), len);
    body
}
