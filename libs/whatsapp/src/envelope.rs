//! The webhook envelope: `{"object":"whatsapp_business_account","entry":[{"id","changes":[{"field","value"}]}]}`.
//!
//! Only the envelope is strict (anything else is not a webhook of ours: 400). Inside it,
//! every `value` stays raw JSON so that fields and types Meta adds later are kept, not lost.
use serde_json::Value;

/// Why a body is not a webhook we accept. Each message names the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("not a WhatsApp Business Account webhook: {0}")]
    NotEnvelope(&'static str),
}

/// A parsed webhook envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub entries: Vec<Entry>,
}

/// One `entry[]`: a WhatsApp Business Account and its changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// `entry[].id`: the WABA id (route by `metadata.phone_number_id`, not by this).
    pub waba_id: String,
    /// `entry[].time`, when Meta sends it (Unix seconds).
    pub time: Option<i64>,
    pub changes: Vec<Change>,
}

/// One `changes[]`: a webhook field and its value, kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: String,
    pub value: Value,
}

impl Webhook {
    /// Parses a raw body. serde_json's recursion limit rejects absurdly nested bodies.
    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        if let Err(e) = std::str::from_utf8(body) {
            return Err(PayloadError::NotUtf8(e.valid_up_to()));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PayloadError::NotJson(e.to_string()))?;
        Self::from_value(value)
    }

    fn from_value(value: Value) -> Result<Self, PayloadError> {
        let Value::Object(mut root) = value else {
            return Err(PayloadError::NotEnvelope("the body is not a JSON object"));
        };
        if root.get("object").and_then(Value::as_str) != Some("whatsapp_business_account") {
            return Err(PayloadError::NotEnvelope(
                "`object` is not \"whatsapp_business_account\"",
            ));
        }
        let Some(Value::Array(raw_entries)) = root.remove("entry") else {
            return Err(PayloadError::NotEnvelope(
                "`entry` is missing or not an array",
            ));
        };
        let mut entries = Vec::with_capacity(raw_entries.len());
        for raw_entry in raw_entries {
            entries.push(parse_entry(raw_entry)?);
        }
        Ok(Self { entries })
    }
}

fn parse_entry(raw: Value) -> Result<Entry, PayloadError> {
    let Value::Object(mut entry) = raw else {
        return Err(PayloadError::NotEnvelope(
            "an `entry[]` item is not an object",
        ));
    };
    let waba_id = id_string(entry.get("id"))
        .ok_or(PayloadError::NotEnvelope("an `entry[]` item has no `id`"))?;
    let time = entry.get("time").and_then(int_value);
    let Some(Value::Array(raw_changes)) = entry.remove("changes") else {
        return Err(PayloadError::NotEnvelope(
            "`entry[].changes` is missing or not an array",
        ));
    };
    let mut changes = Vec::with_capacity(raw_changes.len());
    for raw_change in raw_changes {
        let Value::Object(mut change) = raw_change else {
            return Err(PayloadError::NotEnvelope(
                "a `changes[]` item is not an object",
            ));
        };
        let field = change
            .get("field")
            .and_then(Value::as_str)
            .ok_or(PayloadError::NotEnvelope(
                "a `changes[]` item has no string `field`",
            ))?
            .to_owned();
        let value = change.remove("value").unwrap_or(Value::Null);
        changes.push(Change { field, value });
    }
    Ok(Entry {
        waba_id,
        time,
        changes,
    })
}

/// Meta sends ids as strings; accept numbers too.
pub(crate) fn id_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Meta sends timestamps as strings of Unix seconds; accept numbers too.
pub(crate) fn int_value(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_envelope_and_keeps_values_raw() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"123","time":1700000000,"changes":[{"field":"future_field","value":{"anything":[1,2]}}]}]}"#;
        let webhook = Webhook::parse(body).unwrap();
        assert_eq!(webhook.entries[0].waba_id, "123");
        assert_eq!(webhook.entries[0].time, Some(1_700_000_000));
        assert_eq!(webhook.entries[0].changes[0].field, "future_field");
        assert_eq!(webhook.entries[0].changes[0].value["anything"][1], 2);
    }

    #[test]
    fn rejects_what_is_not_a_waba_envelope_and_says_why() {
        let cases: [(&[u8], &str); 7] = [
            (b"\xff\xfe", "UTF-8"),
            (b"not json", "not JSON"),
            (b"[1,2]", "not a JSON object"),
            (br#"{"object":"page","entry":[]}"#, "object"),
            (br#"{"object":"whatsapp_business_account"}"#, "`entry`"),
            (br#"{"object":"whatsapp_business_account","entry":[{"changes":[]}]}"#, "`id`"),
            (br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{}}]}]}"#, "`field`"),
        ];
        for (body, needle) in cases {
            let err = Webhook::parse(body).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn rejects_absurd_nesting() {
        let body = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            Webhook::parse(body.as_bytes()),
            Err(PayloadError::NotJson(_))
        ));
    }
}
