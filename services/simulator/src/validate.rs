//! Meta's limits on an outgoing message (`../shared/docs/whatsapp-cloud-api.md`, Sending out).
//! A message that breaks one is refused with the code Meta uses and details naming the field,
//! in Meta's `Param ...` style. Lengths count characters, as Meta does.
use serde_json::Value;

use crate::error::GraphError;

/// The message types Meta sends.
const TYPES: [&str; 11] = [
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "template",
    "interactive",
    "reaction",
    "location",
    "contacts",
];

/// The interactive types accepted; `button` and `list` are checked in full.
const INTERACTIVE_TYPES: [&str; 4] = ["button", "list", "cta_url", "flow"];

/// Checks a `/messages` body; answers the message's type.
pub fn message(body: &Value) -> Result<&str, GraphError> {
    let Value::Object(root) = body else {
        return Err(GraphError::invalid_parameter(
            "the body must be a JSON object",
        ));
    };
    if root.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return Err(GraphError::invalid_parameter(
            "Param messaging_product must be \"whatsapp\"",
        ));
    }
    if let Some(kind) = root.get("recipient_type")
        && kind.as_str() != Some("individual")
    {
        return Err(GraphError::invalid_parameter(
            "Param recipient_type must be \"individual\"",
        ));
    }
    match root.get("to").and_then(Value::as_str) {
        Some(to) if !to.trim().is_empty() => {}
        _ => return Err(GraphError::missing_parameter("Param to is required")),
    }
    if let Some(context) = root.get("context")
        && !context.get("message_id").is_some_and(Value::is_string)
    {
        return Err(GraphError::invalid_parameter(
            "Param context['message_id'] must be a string",
        ));
    }
    let kind = match root.get("type") {
        None => "text",
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(GraphError::invalid_parameter("Param type must be a string")),
    };
    if !TYPES.contains(&kind) {
        return Err(GraphError::unsupported_type(format!(
            "Param type: {kind} is not a message type"
        )));
    }
    let Some(content) = root.get(kind) else {
        return Err(GraphError::missing_parameter(format!(
            "Param {kind} is required"
        )));
    };
    match kind {
        "text" => text(content)?,
        "image" | "video" | "document" => media(kind, content, true)?,
        "audio" | "sticker" => media(kind, content, false)?,
        "template" => template(content)?,
        "interactive" => interactive(content)?,
        "reaction" => {
            required_str(content, "reaction", "message_id", 1024)?;
            if !content.get("emoji").is_some_and(Value::is_string) {
                return Err(GraphError::missing_parameter(
                    "Param reaction['emoji'] is required",
                ));
            }
        }
        "location" => {
            for field in ["latitude", "longitude"] {
                if !content.get(field).is_some_and(Value::is_number) {
                    return Err(GraphError::missing_parameter(format!(
                        "Param location['{field}'] must be a number"
                    )));
                }
            }
        }
        _ => {
            if content.as_array().is_none_or(Vec::is_empty) {
                return Err(GraphError::invalid_parameter(
                    "Param contacts must be a non-empty array",
                ));
            }
        }
    }
    Ok(kind)
}

fn text(content: &Value) -> Result<(), GraphError> {
    required_str(content, "text", "body", 4096).map(drop)
}

fn media(kind: &str, content: &Value, captioned: bool) -> Result<(), GraphError> {
    let id = content.get("id").and_then(Value::as_str);
    let link = content.get("link").and_then(Value::as_str);
    match (id, link) {
        (Some(_), None) | (None, Some(_)) => {}
        (Some(_), Some(_)) => {
            return Err(GraphError::invalid_parameter(format!(
                "Param {kind}: give id or link, not both"
            )));
        }
        (None, None) => {
            return Err(GraphError::missing_parameter(format!(
                "Param {kind}['id'] or {kind}['link'] is required"
            )));
        }
    }
    if captioned {
        optional_str(content, kind, "caption", 1024)?;
    }
    Ok(())
}

fn template(content: &Value) -> Result<(), GraphError> {
    required_str(content, "template", "name", 512)?;
    let language = content.get("language").unwrap_or(&Value::Null);
    required_str(language, "template['language']", "code", 15)?;
    if let Some(components) = content.get("components")
        && !components.is_array()
    {
        return Err(GraphError::invalid_parameter(
            "Param template['components'] must be an array",
        ));
    }
    Ok(())
}

fn interactive(content: &Value) -> Result<(), GraphError> {
    let kind = content.get("type").and_then(Value::as_str).unwrap_or("");
    if !INTERACTIVE_TYPES.contains(&kind) {
        return Err(GraphError::invalid_parameter(format!(
            "Param interactive['type'] must be one of {INTERACTIVE_TYPES:?}"
        )));
    }
    let body = content.get("body").unwrap_or(&Value::Null);
    required_str(body, "interactive['body']", "text", 1024)?;
    if let Some(footer) = content.get("footer") {
        optional_str(footer, "interactive['footer']", "text", 60)?;
    }
    let action = content.get("action").unwrap_or(&Value::Null);
    match kind {
        "button" => reply_buttons(action),
        "list" => list(action),
        _ => Ok(()),
    }
}

fn reply_buttons(action: &Value) -> Result<(), GraphError> {
    let buttons = action
        .get("buttons")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if buttons.is_empty() || buttons.len() > 3 {
        return Err(GraphError::invalid_parameter(format!(
            "Param interactive['action']['buttons'] must hold 1 to 3 buttons, not {}",
            buttons.len()
        )));
    }
    let mut titles = Vec::new();
    for (i, button) in buttons.iter().enumerate() {
        let reply = button.get("reply").unwrap_or(&Value::Null);
        let at = format!("interactive['action']['buttons'][{i}]['reply']");
        required_str(reply, &at, "id", 256)?;
        let title = required_str(reply, &at, "title", 20)?;
        if titles.contains(&title) {
            return Err(GraphError::invalid_parameter(format!(
                "Param {at}['title'] repeats the title {title:?}: button titles must be unique"
            )));
        }
        titles.push(title);
    }
    Ok(())
}

fn list(action: &Value) -> Result<(), GraphError> {
    required_str(action, "interactive['action']", "button", 20)?;
    let sections = action
        .get("sections")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if sections.is_empty() || sections.len() > 10 {
        return Err(GraphError::invalid_parameter(format!(
            "Param interactive['action']['sections'] must hold 1 to 10 sections, not {}",
            sections.len()
        )));
    }
    let mut rows_total = 0;
    for (i, section) in sections.iter().enumerate() {
        let at = format!("interactive['action']['sections'][{i}]");
        if sections.len() > 1 {
            required_str(section, &at, "title", 24)?;
        } else {
            optional_str(section, &at, "title", 24)?;
        }
        let rows = section
            .get("rows")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if rows.is_empty() {
            return Err(GraphError::missing_parameter(format!(
                "Param {at}['rows'] is required"
            )));
        }
        for (j, row) in rows.iter().enumerate() {
            let at = format!("{at}['rows'][{j}]");
            required_str(row, &at, "id", 200)?;
            required_str(row, &at, "title", 24)?;
            optional_str(row, &at, "description", 72)?;
        }
        rows_total += rows.len();
    }
    if rows_total > 10 {
        return Err(GraphError::invalid_parameter(format!(
            "Param interactive['action']['sections'] holds {rows_total} rows: at most 10 in all"
        )));
    }
    Ok(())
}

/// `parent[field]`: a non-empty string of at most `max` characters.
fn required_str<'a>(
    parent: &'a Value,
    at: &str,
    field: &str,
    max: usize,
) -> Result<&'a str, GraphError> {
    match parent.get(field).and_then(Value::as_str) {
        Some(value) if !value.is_empty() => at_most(value, at, field, max),
        _ => Err(GraphError::missing_parameter(format!(
            "Param {at}['{field}'] is required"
        ))),
    }
}

/// `parent[field]`, when present: a string of at most `max` characters.
fn optional_str(parent: &Value, at: &str, field: &str, max: usize) -> Result<(), GraphError> {
    match parent.get(field) {
        None => Ok(()),
        Some(Value::String(value)) => at_most(value, at, field, max).map(drop),
        Some(_) => Err(GraphError::invalid_parameter(format!(
            "Param {at}['{field}'] must be a string"
        ))),
    }
}

fn at_most<'a>(value: &'a str, at: &str, field: &str, max: usize) -> Result<&'a str, GraphError> {
    let length = value.chars().count();
    if length > max {
        return Err(GraphError::invalid_parameter(format!(
            "Param {at}['{field}'] must be at most {max} characters long, not {length}"
        )));
    }
    Ok(value)
}
