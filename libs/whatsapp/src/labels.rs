//! Meta's vocabularies as bounded metric label values: webhook fields, message types, status
//! names and error codes.
//!
//! Meta sends free text in all of these places (new fields, new types, any code), and a label
//! value per distinct string would let a sender grow the metrics without bound. So each value
//! is looked up in a known list and anything else is `other`. Every function returns a
//! `&'static str`, so recording a label never allocates.
use serde_json::Value;

use crate::envelope::Webhook;

/// The label for anything outside a known list.
pub const OTHER: &str = "other";

/// Webhook fields Meta documents for WhatsApp Business Accounts (`changes[].field`).
pub const WEBHOOK_FIELDS: &[&str] = &[
    "messages",
    "smb_message_echoes",
    "smb_app_state_sync",
    "history",
    "account_update",
    "account_alerts",
    "account_review_update",
    "account_settings_update",
    "business_capability_update",
    "business_status_update",
    "calls",
    "flows",
    "message_template_status_update",
    "message_template_quality_update",
    "message_template_components_update",
    "template_category_update",
    "message_echoes",
    "partner_solutions",
    "payment_configuration_update",
    "phone_number_name_update",
    "phone_number_quality_update",
    "security",
    "automatic_events",
    "tracking_events",
    "user_preferences",
];

/// Message types of `messages[].type` (and of the Business app's echoes).
pub const MESSAGE_TYPES: &[&str] = &[
    "text",
    "image",
    "video",
    "audio",
    "voice",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
    "unknown",
    "revoke",
    "edit",
    "request_welcome",
    "template",
];

/// Status names of `statuses[].status`; Meta's older `deleted` and `warning` are `other`.
pub const STATUSES: &[&str] = &["sent", "delivered", "read", "failed", "played"];

/// The same statuses as update types of the `messages` field (`status:<name>`).
const STATUS_TYPES: &[&str] = &[
    "status:sent",
    "status:delivered",
    "status:read",
    "status:failed",
    "status:played",
];
const STATUS_OTHER: &str = "status:other";

/// Meta's error codes worth telling apart (see Meta's error code reference): the retryable
/// ones, the permanent ones senders handle, template and registration problems.
pub const ERROR_CODES: &[(i64, &str)] = &[
    (0, "0"),
    (1, "1"),
    (2, "2"),
    (3, "3"),
    (4, "4"),
    (10, "10"),
    (100, "100"),
    (190, "190"),
    (200, "200"),
    (368, "368"),
    (80007, "80007"),
    (130403, "130403"),
    (130429, "130429"),
    (130472, "130472"),
    (130497, "130497"),
    (131000, "131000"),
    (131005, "131005"),
    (131008, "131008"),
    (131009, "131009"),
    (131016, "131016"),
    (131021, "131021"),
    (131026, "131026"),
    (131031, "131031"),
    (131037, "131037"),
    (131042, "131042"),
    (131045, "131045"),
    (131047, "131047"),
    (131049, "131049"),
    (131050, "131050"),
    (131051, "131051"),
    (131052, "131052"),
    (131053, "131053"),
    (131056, "131056"),
    (131057, "131057"),
    (132000, "132000"),
    (132001, "132001"),
    (132005, "132005"),
    (132007, "132007"),
    (132012, "132012"),
    (132015, "132015"),
    (132016, "132016"),
    (132068, "132068"),
    (132069, "132069"),
    (133000, "133000"),
    (133004, "133004"),
    (133005, "133005"),
    (133006, "133006"),
    (133008, "133008"),
    (133009, "133009"),
    (133010, "133010"),
    (135000, "135000"),
];

fn known(list: &[&'static str], value: &str) -> &'static str {
    list.iter().find(|v| **v == value).copied().unwrap_or(OTHER)
}

/// A webhook field, or `other`.
pub fn field(name: &str) -> &'static str {
    known(WEBHOOK_FIELDS, name)
}

/// A message type, or `other` (also for a message without a type).
pub fn message_type(kind: &str) -> &'static str {
    known(MESSAGE_TYPES, kind)
}

/// A status name (any case), or `other`.
pub fn status(name: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(OTHER)
}

/// One of Meta's known error codes as text, or `other`.
pub fn error_code(code: i64) -> &'static str {
    ERROR_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(OTHER, |(_, label)| label)
}

/// The `(field, type)` of every update a webhook holds, for counting what arrives:
/// - `messages`: each message by its type, each status as `status:<name>`, each `value.errors`
///   item as `error` (contacts are not updates of their own);
/// - `smb_message_echoes`: each echoed message by its type;
/// - any other field: once per change, type `update`.
///
/// A change that holds none of these is counted once with type `other`. Reads the envelope
/// already parsed; nothing is parsed again.
pub fn webhook_updates(webhook: &Webhook) -> Vec<(&'static str, &'static str)> {
    let mut labels = Vec::new();
    for change in webhook.entries.iter().flat_map(|e| &e.changes) {
        let field = field(&change.field);
        let before = labels.len();
        match change.field.as_str() {
            "messages" => {
                for message in items(&change.value, "messages") {
                    labels.push((field, message_type(type_of(message))));
                }
                for status in items(&change.value, "statuses") {
                    let name = status.get("status").and_then(Value::as_str);
                    labels.push((field, status_type(name.unwrap_or_default())));
                }
                for _ in items(&change.value, "errors") {
                    labels.push((field, "error"));
                }
            }
            "smb_message_echoes" => {
                for echo in items(&change.value, "message_echoes") {
                    labels.push((field, message_type(type_of(echo))));
                }
            }
            _ => labels.push((field, "update")),
        }
        if labels.len() == before {
            labels.push((field, OTHER));
        }
    }
    labels
}

/// `status:<name>` for a known status, else `status:other`.
pub fn status_type(name: &str) -> &'static str {
    STATUSES
        .iter()
        .position(|s| s.eq_ignore_ascii_case(name))
        .map_or(STATUS_OTHER, |i| STATUS_TYPES[i])
}

fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn type_of(message: &Value) -> &str {
    message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_are_kept_and_anything_else_is_other() {
        assert_eq!(field("messages"), "messages");
        assert_eq!(field("a_field_invented_tomorrow"), "other");
        assert_eq!(message_type("reaction"), "reaction");
        assert_eq!(message_type(""), "other");
        assert_eq!(message_type("+15551234567"), "other");
        assert_eq!(status("READ"), "read");
        assert_eq!(status("deleted"), "other");
        assert_eq!(status_type("delivered"), "status:delivered");
        assert_eq!(status_type("warning"), "status:other");
        assert_eq!(error_code(131047), "131047");
        assert_eq!(error_code(0), "0");
        assert_eq!(error_code(987_654), "other");
    }

    #[test]
    fn every_error_code_label_is_its_code() {
        for (code, label) in ERROR_CODES {
            assert_eq!(label.parse::<i64>().unwrap(), *code);
        }
        for (i, status) in STATUSES.iter().enumerate() {
            assert_eq!(STATUS_TYPES[i], format!("status:{status}"));
        }
    }

    #[test]
    fn a_webhook_is_counted_by_field_and_type_without_ids_or_numbers() {
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"contacts":[{"wa_id":"15551234567"}],
              "messages":[{"id":"wamid.A","from":"15551234567","type":"text","text":{"body":"hi"}},
                          {"id":"wamid.B","from":"15551234567","type":"never_seen"}],
              "errors":[{"code":131000}]}},
            {"field":"messages","value":{"statuses":[{"id":"wamid.C","status":"read"},
                                                     {"id":"wamid.D","status":"deleted"}]}},
            {"field":"smb_message_echoes","value":{"message_echoes":[{"id":"wamid.E","type":"image"}]}},
            {"field":"account_update","value":{"event":"VERIFIED_ACCOUNT"}},
            {"field":"brand_new_field","value":{}},
            {"field":"messages","value":{"contacts":[]}}]}]}"#;
        let webhook = Webhook::parse(body).unwrap();
        assert_eq!(
            webhook_updates(&webhook),
            vec![
                ("messages", "text"),
                ("messages", "other"),
                ("messages", "error"),
                ("messages", "status:read"),
                ("messages", "status:other"),
                ("smb_message_echoes", "image"),
                ("account_update", "update"),
                ("other", "update"),
                ("messages", "other"),
            ]
        );
    }

    #[test]
    fn every_corpus_webhook_gets_labels_from_the_known_lists() {
        for (name, body) in wamesh_testkit::webhook_corpus() {
            let webhook = Webhook::parse(&body).unwrap();
            let labels = webhook_updates(&webhook);
            assert!(!labels.is_empty(), "{name}");
            for (field, kind) in labels {
                assert_ne!(field, OTHER, "{name}: every corpus field is known");
                assert!(
                    kind == OTHER
                        || kind == "error"
                        || kind == "update"
                        || kind.starts_with("status:")
                        || MESSAGE_TYPES.contains(&kind),
                    "{name}: {kind}"
                );
            }
        }
    }
}
