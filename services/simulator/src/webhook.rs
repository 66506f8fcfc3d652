//! The webhooks the simulated Meta sends, byte for byte as Meta writes them:
//! `{"object":"whatsapp_business_account","entry":[{"id":<WABA id>,"changes":[{"field":
//! "messages","value":{"messaging_product":"whatsapp","metadata":{..},"statuses"|"contacts"+
//! "messages":[..]}}]}]}`, non-ASCII escaped as `\uXXXX` (as Meta does: a receiver that
//! re-serialises before checking the signature fails here as it would with Meta), signed with
//! the app secret in `X-Hub-Signature-256`.
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{Value, json};

/// Who the webhooks say they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `entry[].id`.
    pub waba_id: String,
    /// `metadata.display_phone_number` (and `context.from` of replies).
    pub display_phone_number: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            waba_id: "100000000000001".to_owned(),
            display_phone_number: "15550001234".to_owned(),
        }
    }
}

/// Unix seconds as Meta writes timestamps: a string.
pub fn unix_now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string()
}

/// The body of one webhook: `value` (without its `messaging_product` and `metadata`, added
/// here) for `phone_number_id`.
pub fn body(identity: &Identity, phone_number_id: &str, mut value: Value) -> Bytes {
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] = json!({
        "display_phone_number": identity.display_phone_number,
        "phone_number_id": phone_number_id,
    });
    let envelope = json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": identity.waba_id,
            "changes": [{"value": value, "field": "messages"}],
        }],
    });
    Bytes::from(escape_non_ascii(&envelope.to_string()))
}

/// JSON text with every non-ASCII character written `\uXXXX` (UTF-16, surrogate pairs beyond
/// the BMP). Valid because JSON's structure is ASCII: non-ASCII only occurs inside strings.
fn escape_non_ascii(json: &str) -> String {
    if json.is_ascii() {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped_and_parses_back_to_the_same_text() {
        let identity = Identity::default();
        let bytes = body(
            &identity,
            "1065",
            json!({"messages": [{"text": {"body": "café 😀"}}]}),
        );
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains(r"caf\u00e9 \ud83d\ude00"), "{text}");
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        let value = &parsed["entry"][0]["changes"][0]["value"];
        assert_eq!(value["messages"][0]["text"]["body"], "café 😀");
        assert_eq!(value["metadata"]["phone_number_id"], "1065");
        assert_eq!(parsed["entry"][0]["id"], identity.waba_id);
    }
}
