//! Meta's limits on an outgoing message (`shared/docs/whatsapp-cloud-api.md`, "Sending out"),
//! checked before the message is stored: Meta would refuse it only after it was queued.
//!
//! Lengths count characters, not bytes, as Meta does. "Required" means not blank. The first
//! field at fault is reported, by its proto path; problems never quote the value (it may be a
//! message body or a phone number, and errors end up in logs).
use super::{
    ButtonParameter, ButtonSubType, Content, Interactive, InteractiveAction, InvalidField, Media,
    MediaKind, MediaRef, MediaSource, OutgoingMessage, Parameter, ParameterValue, Template,
    normalize_recipient,
};

/// `biz_opaque_callback_data`.
const CALLBACK_DATA_MAX: usize = 512;
const TEXT_BODY_MAX: usize = 4096;
const CAPTION_MAX: usize = 1024;
const INTERACTIVE_BODY_MAX: usize = 1024;
const INTERACTIVE_HEADER_MAX: usize = 60;
const FOOTER_MAX: usize = 60;
const REPLY_BUTTONS_MAX: usize = 3;
const BUTTON_ID_MAX: usize = 256;
const BUTTON_TITLE_MAX: usize = 20;
const LIST_BUTTON_MAX: usize = 20;
const LIST_SECTIONS_MAX: usize = 10;
const LIST_ROWS_MAX: usize = 10;
const SECTION_TITLE_MAX: usize = 24;
const ROW_ID_MAX: usize = 200;
const ROW_TITLE_MAX: usize = 24;
const ROW_DESCRIPTION_MAX: usize = 72;
const TEMPLATE_NAME_MAX: usize = 512;
const PARAMETER_TEXT_MAX: usize = 32768;
const QUICK_REPLY_PAYLOAD_MAX: usize = 128;
/// A template has at most 10 buttons, indexed from 0.
const BUTTON_INDEX_MAX: u32 = 9;
/// No length limit of Meta's applies (the gRPC message size bounds the value).
const NO_LIMIT: usize = usize::MAX;

impl OutgoingMessage {
    /// Checks the message against every one of Meta's limits; the error names the first field
    /// at fault by its `SendMessageRequest` path (`interactive.list.sections[0].rows[2].title`).
    pub fn validate(&self) -> Result<(), InvalidField> {
        if normalize_recipient(&self.to)? != self.to {
            return Err(InvalidField::new(
                "to",
                "must be digits only (normalise it with normalize_recipient first)",
            ));
        }
        optional(self.reply_to.as_deref(), "reply_to_wamid", NO_LIMIT)?;
        optional(
            self.callback_data.as_deref(),
            "biz_opaque_callback_data",
            CALLBACK_DATA_MAX,
        )?;
        match &self.content {
            Content::Text(text) => required(&text.body, "text.body", TEXT_BODY_MAX),
            Content::Media(media) => check_media(media),
            Content::Interactive(interactive) => check_interactive(interactive),
            Content::Template(template) => check_template(template),
        }
    }
}

fn check_media(media: &Media) -> Result<(), InvalidField> {
    source(&media.source, "media")?;
    if media.caption.is_some() && !media.kind.takes_caption() {
        return Err(InvalidField::new(
            "media.caption",
            "only image, video and document media take a caption",
        ));
    }
    optional(media.caption.as_deref(), "media.caption", CAPTION_MAX)?;
    if media.filename.is_some() && media.kind != MediaKind::Document {
        return Err(InvalidField::new(
            "media.filename",
            "only documents take a file name",
        ));
    }
    optional(media.filename.as_deref(), "media.filename", NO_LIMIT)
}

fn check_interactive(interactive: &Interactive) -> Result<(), InvalidField> {
    optional(
        interactive.header_text.as_deref(),
        "interactive.header_text",
        INTERACTIVE_HEADER_MAX,
    )?;
    required(&interactive.body, "interactive.body", INTERACTIVE_BODY_MAX)?;
    optional(
        interactive.footer.as_deref(),
        "interactive.footer",
        FOOTER_MAX,
    )?;
    match &interactive.action {
        InteractiveAction::Buttons(buttons) => {
            const AT: &str = "interactive.buttons.buttons";
            if buttons.is_empty() || buttons.len() > REPLY_BUTTONS_MAX {
                return Err(InvalidField::new(
                    AT,
                    format!(
                        "must hold 1 to {REPLY_BUTTONS_MAX} buttons, not {}",
                        buttons.len()
                    ),
                ));
            }
            for (i, button) in buttons.iter().enumerate() {
                required(&button.id, &format!("{AT}[{i}].id"), BUTTON_ID_MAX)?;
                let title = format!("{AT}[{i}].title");
                required(&button.title, &title, BUTTON_TITLE_MAX)?;
                if let Some(j) = buttons[..i].iter().position(|b| b.title == button.title) {
                    return Err(InvalidField::new(
                        title,
                        format!("repeats the title of {AT}[{j}]: button titles must be unique"),
                    ));
                }
            }
            Ok(())
        }
        InteractiveAction::List { button, sections } => {
            const AT: &str = "interactive.list.sections";
            required(button, "interactive.list.button", LIST_BUTTON_MAX)?;
            if sections.is_empty() || sections.len() > LIST_SECTIONS_MAX {
                return Err(InvalidField::new(
                    AT,
                    format!(
                        "must hold 1 to {LIST_SECTIONS_MAX} sections, not {}",
                        sections.len()
                    ),
                ));
            }
            let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
            if rows > LIST_ROWS_MAX {
                return Err(InvalidField::new(
                    AT,
                    format!("hold {rows} rows in all: at most {LIST_ROWS_MAX}"),
                ));
            }
            let mut ids: Vec<(&str, String)> = Vec::with_capacity(rows);
            for (i, section) in sections.iter().enumerate() {
                let at = format!("{AT}[{i}]");
                if sections.len() > 1 && section.title.is_none() {
                    return Err(InvalidField::new(
                        format!("{at}.title"),
                        "is required when the list has more than one section",
                    ));
                }
                optional(
                    section.title.as_deref(),
                    &format!("{at}.title"),
                    SECTION_TITLE_MAX,
                )?;
                if section.rows.is_empty() {
                    return Err(InvalidField::new(
                        format!("{at}.rows"),
                        "must hold at least one row",
                    ));
                }
                for (j, row) in section.rows.iter().enumerate() {
                    let at = format!("{at}.rows[{j}]");
                    let id = format!("{at}.id");
                    required(&row.id, &id, ROW_ID_MAX)?;
                    if let Some((_, first)) = ids.iter().find(|(seen, _)| *seen == row.id) {
                        return Err(InvalidField::new(
                            id,
                            format!(
                                "repeats the id of {first}: row ids must be unique in the list"
                            ),
                        ));
                    }
                    ids.push((&row.id, at.clone()));
                    required(&row.title, &format!("{at}.title"), ROW_TITLE_MAX)?;
                    optional(
                        row.description.as_deref(),
                        &format!("{at}.description"),
                        ROW_DESCRIPTION_MAX,
                    )?;
                }
            }
            Ok(())
        }
    }
}

fn check_template(template: &Template) -> Result<(), InvalidField> {
    required(&template.name, "template.name", TEMPLATE_NAME_MAX)?;
    if !template
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(InvalidField::new(
            "template.name",
            "must hold only lowercase letters, digits and underscores",
        ));
    }
    required(&template.language, "template.language", NO_LIMIT)?;
    if !is_language_code(&template.language) {
        return Err(InvalidField::new(
            "template.language",
            "must be a language code like en or en_US",
        ));
    }
    if let Some(header) = &template.header {
        header_parameter(header)?;
    }
    for (i, parameter) in template.body.iter().enumerate() {
        body_parameter(parameter, &format!("template.body[{i}]"))?;
    }
    parameter_names(template)?;
    buttons(&template.buttons)
}

fn header_parameter(parameter: &Parameter) -> Result<(), InvalidField> {
    const AT: &str = "template.header";
    match &parameter.value {
        ParameterValue::Currency { .. } | ParameterValue::DateTime(_) => Err(InvalidField::new(
            format!("{AT}.{}", value_field(&parameter.value)),
            "a header parameter is text, image, video, document or location",
        )),
        _ => parameter_value(&parameter.value, AT),
    }
}

fn body_parameter(parameter: &Parameter, at: &str) -> Result<(), InvalidField> {
    match &parameter.value {
        ParameterValue::Text(_) | ParameterValue::Currency { .. } | ParameterValue::DateTime(_) => {
            parameter_value(&parameter.value, at)
        }
        other => Err(InvalidField::new(
            format!("{at}.{}", value_field(other)),
            "a body parameter is text, currency or date_time",
        )),
    }
}

/// The proto field of a parameter's value (the `oneof value` member).
fn value_field(value: &ParameterValue) -> &'static str {
    match value {
        ParameterValue::Text(_) => "text",
        ParameterValue::Currency { .. } => "currency",
        ParameterValue::DateTime(_) => "date_time",
        ParameterValue::Image(_) => "image",
        ParameterValue::Video(_) => "video",
        ParameterValue::Document(_) => "document",
        ParameterValue::Location { .. } => "location",
    }
}

fn parameter_value(value: &ParameterValue, at: &str) -> Result<(), InvalidField> {
    let field = format!("{at}.{}", value_field(value));
    match value {
        ParameterValue::Text(text) | ParameterValue::DateTime(text) => {
            required(text, &field, PARAMETER_TEXT_MAX)
        }
        ParameterValue::Currency {
            fallback_value,
            code,
            amount_1000: _,
        } => {
            required(
                fallback_value,
                &format!("{field}.fallback_value"),
                PARAMETER_TEXT_MAX,
            )?;
            if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(InvalidField::new(
                    format!("{field}.code"),
                    "must be an ISO 4217 currency code of 3 letters, like USD",
                ));
            }
            Ok(())
        }
        ParameterValue::Image(media) | ParameterValue::Video(media) => {
            media_ref(media, &field, false)
        }
        ParameterValue::Document(media) => media_ref(media, &field, true),
        ParameterValue::Location {
            latitude,
            longitude,
            name: _,
            address: _,
        } => {
            if !(-90.0..=90.0).contains(latitude) {
                return Err(InvalidField::new(
                    format!("{field}.latitude"),
                    "must be between -90 and 90 degrees",
                ));
            }
            if !(-180.0..=180.0).contains(longitude) {
                return Err(InvalidField::new(
                    format!("{field}.longitude"),
                    "must be between -180 and 180 degrees",
                ));
            }
            Ok(())
        }
    }
}

fn media_ref(media: &MediaRef, at: &str, document: bool) -> Result<(), InvalidField> {
    source(&media.source, at)?;
    if media.filename.is_some() && !document {
        return Err(InvalidField::new(
            format!("{at}.filename"),
            "only documents take a file name",
        ));
    }
    optional(
        media.filename.as_deref(),
        &format!("{at}.filename"),
        NO_LIMIT,
    )
}

/// A template's parameters are all named (named templates) or none is (positional ones); only
/// text, currency and date_time parameters can be named; body names are unique.
fn parameter_names(template: &Template) -> Result<(), InvalidField> {
    let mut first: Option<(String, bool)> = None;
    let mut body_names: Vec<(&str, usize)> = Vec::new();
    let header = template
        .header
        .iter()
        .map(|p| ("template.header".to_owned(), p, None));
    let body = template
        .body
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("template.body[{i}]"), p, Some(i)));
    for (at, parameter, body_index) in header.chain(body) {
        let field = format!("{at}.name");
        let nameable = matches!(
            parameter.value,
            ParameterValue::Text(_) | ParameterValue::Currency { .. } | ParameterValue::DateTime(_)
        );
        if !nameable {
            if parameter.name.is_some() {
                return Err(InvalidField::new(
                    field,
                    "only text, currency and date_time parameters are named",
                ));
            }
            continue;
        }
        let named = parameter.name.is_some();
        match &first {
            None => first = Some((at.clone(), named)),
            Some((first_at, first_named)) if *first_named != named => {
                let problem = if named {
                    format!(
                        "must be unset: {first_at} is positional, and a template's parameters \
                         are all named or all positional"
                    )
                } else {
                    format!(
                        "is required: {first_at} is named, and a template's parameters are all \
                         named or all positional"
                    )
                };
                return Err(InvalidField::new(field, problem));
            }
            Some(_) => {}
        }
        let Some(name) = &parameter.name else {
            continue;
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(InvalidField::new(
                field,
                "must hold only lowercase letters, digits and underscores",
            ));
        }
        if let Some(i) = body_index {
            if let Some((_, j)) = body_names.iter().find(|(seen, _)| seen == name) {
                return Err(InvalidField::new(
                    field,
                    format!("repeats the name of template.body[{j}]: names must be unique"),
                ));
            }
            body_names.push((name, i));
        }
    }
    Ok(())
}

fn buttons(buttons: &[ButtonParameter]) -> Result<(), InvalidField> {
    for (i, button) in buttons.iter().enumerate() {
        let at = format!("template.buttons[{i}]");
        if button.index > BUTTON_INDEX_MAX {
            return Err(InvalidField::new(
                format!("{at}.index"),
                format!(
                    "must be at most {BUTTON_INDEX_MAX} (a template has at most 10 buttons), \
                     not {}",
                    button.index
                ),
            ));
        }
        if let Some(j) = buttons[..i].iter().position(|b| b.index == button.index) {
            return Err(InvalidField::new(
                format!("{at}.index"),
                format!(
                    "repeats the index of template.buttons[{j}]: one parameter per button ({})",
                    button.index
                ),
            ));
        }
        let max = match button.sub_type {
            ButtonSubType::QuickReply => QUICK_REPLY_PAYLOAD_MAX,
            ButtonSubType::Url | ButtonSubType::CopyCode | ButtonSubType::Flow => {
                PARAMETER_TEXT_MAX
            }
        };
        required(&button.value, &format!("{at}.value"), max)?;
    }
    Ok(())
}

/// Media by id (not blank) or by an http(s) link with a host.
fn source(source: &MediaSource, at: &str) -> Result<(), InvalidField> {
    match source {
        MediaSource::Id(id) => required(id, &format!("{at}.id"), NO_LIMIT),
        MediaSource::Link(link) => {
            let field = format!("{at}.link");
            required(link, &field, NO_LIMIT)?;
            if !is_http_url(link) {
                return Err(InvalidField::new(
                    field,
                    "must be an http or https URL, like https://example.com/photo.jpg",
                ));
            }
            Ok(())
        }
    }
}

fn is_http_url(link: &str) -> bool {
    let Some((scheme, rest)) = link.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
        && !host.is_empty()
        && !link.chars().any(char::is_whitespace)
}

/// `en`, `pt_BR`, `fil`: two or three lowercase letters, then optionally `_` and two
/// uppercase letters.
fn is_language_code(code: &str) -> bool {
    let (language, region) = match code.split_once('_') {
        Some((language, region)) => (language, Some(region)),
        None => (code, None),
    };
    (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.chars().all(|c| c.is_ascii_uppercase()))
}

/// A value that must be there: not blank, at most `max` characters.
fn required(value: &str, field: &str, max: usize) -> Result<(), InvalidField> {
    if value.trim().is_empty() {
        return Err(InvalidField::new(field, "is required"));
    }
    at_most(value, field, max)
}

/// A value that may be absent; when set, it is not blank and at most `max` characters.
fn optional(value: Option<&str>, field: &str, max: usize) -> Result<(), InvalidField> {
    match value {
        None => Ok(()),
        Some(value) if value.trim().is_empty() => Err(InvalidField::new(
            field,
            "is blank: leave it unset or give a value",
        )),
        Some(value) => at_most(value, field, max),
    }
}

fn at_most(value: &str, field: &str, max: usize) -> Result<(), InvalidField> {
    if max == NO_LIMIT {
        return Ok(());
    }
    let length = value.chars().count();
    if length > max {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max} characters long, not {length}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
