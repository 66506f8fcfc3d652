//! `SendMessageRequest` into the domain: every field checked and named when it is wrong, the
//! recipient normalised, the content turned into `wamesh_whatsapp::outgoing` types and held to
//! Meta's limits. Nothing past this module sees a proto struct.
use prost::Message as _;
use sha2::{Digest, Sha256};
use wamesh_proto::messaging::v1 as pb;
use wamesh_whatsapp::outgoing::{
    ButtonParameter, ButtonSubType, Content, Interactive, InteractiveAction, ListRow, ListSection,
    Media, MediaKind, MediaRef, MediaSource, OutgoingMessage, Parameter, ParameterValue,
    ReplyButton, Template, Text, normalize_recipient,
};

use crate::error::MessagingError;

/// The longest idempotency key accepted.
const MAX_KEY_CHARS: usize = 256;

/// A send as asked, valid against Meta's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    pub business_phone_number_id: String,
    pub idempotency_key: String,
    /// SHA-256 (hex) of the request's bytes: the same key asking for another message is refused.
    pub digest: String,
    pub message: OutgoingMessage,
    /// Sent instead when a template cannot be sent and the window is open.
    pub fallback_text: Option<String>,
    /// Sent instead when free-form content meets a closed window.
    pub fallback_template: Option<Template>,
}

impl TryFrom<pb::SendMessageRequest> for SendRequest {
    type Error = MessagingError;

    fn try_from(request: pb::SendMessageRequest) -> Result<Self, Self::Error> {
        let digest = hex::encode(Sha256::digest(request.encode_to_vec()));
        required(
            "business_phone_number_id",
            &request.business_phone_number_id,
        )?;
        required("idempotency_key", &request.idempotency_key)?;
        if request.idempotency_key.chars().count() > MAX_KEY_CHARS {
            return Err(invalid(
                "idempotency_key",
                format!("at most {MAX_KEY_CHARS} characters"),
            ));
        }
        let to = normalize_recipient(&request.to).map_err(field_error)?;
        let content = match request.content {
            Some(pb::send_message_request::Content::Text(t)) => Content::Text(Text {
                body: t.body,
                preview_url: t.preview_url,
            }),
            Some(pb::send_message_request::Content::Template(t)) => {
                Content::Template(template("template", t)?)
            }
            Some(pb::send_message_request::Content::Interactive(i)) => {
                Content::Interactive(interactive(i)?)
            }
            Some(pb::send_message_request::Content::Media(m)) => Content::Media(media(m)?),
            None => {
                return Err(invalid(
                    "content",
                    "give one of text, template, interactive or media",
                ));
            }
        };
        let message = OutgoingMessage {
            to,
            reply_to: non_empty(request.reply_to_wamid),
            callback_data: None,
            content,
        };
        message.validate().map_err(field_error)?;
        let fallback_template = request
            .fallback_template
            .map(|t| template("fallback_template", t))
            .transpose()?;
        if let Some(t) = &fallback_template {
            // Checked as the message it would become.
            OutgoingMessage {
                to: message.to.clone(),
                reply_to: None,
                callback_data: None,
                content: Content::Template(t.clone()),
            }
            .validate()
            .map_err(|e| {
                invalid(
                    &e.field.replacen("template", "fallback_template", 1),
                    e.problem,
                )
            })?;
        }
        Ok(Self {
            business_phone_number_id: request.business_phone_number_id,
            idempotency_key: request.idempotency_key,
            digest,
            message,
            fallback_text: non_empty(request.fallback_text),
            fallback_template,
        })
    }
}

fn template(at: &str, t: pb::TemplateContent) -> Result<Template, MessagingError> {
    let header = t
        .header
        .map(|p| parameter(&format!("{at}.header"), p))
        .transpose()?;
    let body = t
        .body
        .into_iter()
        .enumerate()
        .map(|(i, p)| parameter(&format!("{at}.body[{i}]"), p))
        .collect::<Result<_, _>>()?;
    let buttons = t
        .buttons
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let sub_type = match pb::ButtonSubType::try_from(b.sub_type) {
                Ok(pb::ButtonSubType::QuickReply) => ButtonSubType::QuickReply,
                Ok(pb::ButtonSubType::Url) => ButtonSubType::Url,
                Ok(pb::ButtonSubType::CopyCode) => ButtonSubType::CopyCode,
                Ok(pb::ButtonSubType::Flow) => ButtonSubType::Flow,
                _ => {
                    return Err(invalid(
                        &format!("{at}.buttons[{i}].sub_type"),
                        "give quick_reply, url, copy_code or flow",
                    ));
                }
            };
            Ok(ButtonParameter {
                sub_type,
                index: b.index,
                value: b.value,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Template {
        name: t.name,
        language: t.language,
        header,
        body,
        buttons,
    })
}

fn parameter(at: &str, p: pb::TemplateParameter) -> Result<Parameter, MessagingError> {
    use pb::template_parameter::Value;
    let value = match p.value {
        Some(Value::Text(text)) => ParameterValue::Text(text),
        Some(Value::Currency(c)) => ParameterValue::Currency {
            fallback_value: c.fallback_value,
            code: c.code,
            amount_1000: c.amount_1000,
        },
        Some(Value::DateTime(text)) => ParameterValue::DateTime(text),
        Some(Value::Image(m)) => ParameterValue::Image(media_ref(&format!("{at}.image"), m)?),
        Some(Value::Video(m)) => ParameterValue::Video(media_ref(&format!("{at}.video"), m)?),
        Some(Value::Document(m)) => {
            ParameterValue::Document(media_ref(&format!("{at}.document"), m)?)
        }
        Some(Value::Location(l)) => ParameterValue::Location {
            latitude: l.latitude,
            longitude: l.longitude,
            name: l.name,
            address: l.address,
        },
        None => {
            return Err(invalid(
                at,
                "give a value: text, currency, date_time, image, video, document or location",
            ));
        }
    };
    Ok(Parameter {
        name: non_empty(p.name),
        value,
    })
}

fn media_ref(at: &str, m: pb::MediaRef) -> Result<MediaRef, MessagingError> {
    Ok(MediaRef {
        source: media_source(at, m.id, m.link)?,
        filename: non_empty(m.filename),
    })
}

fn media_source(at: &str, id: String, link: String) -> Result<MediaSource, MessagingError> {
    match (id.is_empty(), link.is_empty()) {
        (false, true) => Ok(MediaSource::Id(id)),
        (true, false) => Ok(MediaSource::Link(link)),
        (false, false) => Err(invalid(at, "give id or link, not both")),
        (true, true) => Err(invalid(at, "give an id or a link")),
    }
}

fn interactive(i: pb::InteractiveContent) -> Result<Interactive, MessagingError> {
    use pb::interactive_content::Action;
    let action = match i.action {
        Some(Action::Buttons(b)) => InteractiveAction::Buttons(
            b.buttons
                .into_iter()
                .map(|b| ReplyButton {
                    id: b.id,
                    title: b.title,
                })
                .collect(),
        ),
        Some(Action::List(l)) => InteractiveAction::List {
            button: l.button,
            sections: l
                .sections
                .into_iter()
                .map(|s| ListSection {
                    title: non_empty(s.title),
                    rows: s
                        .rows
                        .into_iter()
                        .map(|r| ListRow {
                            id: r.id,
                            title: r.title,
                            description: non_empty(r.description),
                        })
                        .collect(),
                })
                .collect(),
        },
        None => return Err(invalid("interactive", "give buttons or a list")),
    };
    Ok(Interactive {
        header_text: non_empty(i.header_text),
        body: i.body,
        footer: non_empty(i.footer),
        action,
    })
}

fn media(m: pb::MediaContent) -> Result<Media, MessagingError> {
    let kind = match pb::MediaKind::try_from(m.kind) {
        Ok(pb::MediaKind::Image) => MediaKind::Image,
        Ok(pb::MediaKind::Video) => MediaKind::Video,
        Ok(pb::MediaKind::Audio) => MediaKind::Audio,
        Ok(pb::MediaKind::Document) => MediaKind::Document,
        Ok(pb::MediaKind::Sticker) => MediaKind::Sticker,
        _ => {
            return Err(invalid(
                "media.kind",
                "give image, video, audio, document or sticker",
            ));
        }
    };
    Ok(Media {
        kind,
        source: media_source("media", m.id, m.link)?,
        caption: non_empty(m.caption),
        filename: non_empty(m.filename),
    })
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn required(field: &str, value: &str) -> Result<(), MessagingError> {
    if value.trim().is_empty() {
        return Err(invalid(field, "required"));
    }
    Ok(())
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> MessagingError {
    MessagingError::InvalidArgument(format!("{field}: {problem}"))
}

fn field_error(e: wamesh_whatsapp::outgoing::InvalidField) -> MessagingError {
    invalid(&e.field, e.problem)
}
