//! What a send becomes before it is queued: the 24-hour window and the template registry
//! decide whether it goes as asked, as a fallback, or not at all.
//!
//! - Free-form content (text, interactive, media) goes as asked inside the window. Outside it,
//!   the request's `fallback_template` goes instead, if it can; else FAILED_PRECONDITION.
//! - A template goes as asked when it is registered, approved and given the parameters its
//!   components take (wrong parameters: INVALID_ARGUMENT). When it is not sendable, its chain
//!   is followed: its fallback template (with the same parameters), that one's fallback, and so
//!   on; a template's `fallback_text`, or the request's `fallback_text`, goes instead when the
//!   window is open. Each step's reason is recorded on the message.
use std::collections::HashSet;

use serde::Serialize;
use wamesh_whatsapp::outgoing::{Content, OutgoingMessage, ParameterValue, Template, Text};
use wamesh_whatsapp::template::{TemplateSpec, render};

use crate::error::MessagingError;
use crate::send::request::SendRequest;
use crate::store::StoreError;
use crate::store::outbound::{OutboundStore, TemplateRow};

/// How far a fallback chain is followed before it counts as broken.
const MAX_CHAIN: usize = 5;

/// What is queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub message: OutgoingMessage,
    /// The text users read, for the conversation history.
    pub preview: Option<String>,
    pub fallback: Option<FallbackDecision>,
}

/// How a message that could not go as asked goes instead (stored as JSON on the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FallbackDecision {
    pub requested: String,
    pub sent_as: String,
    pub reason: String,
}

impl Plan {
    /// The template as sent, for template messages.
    pub fn template(&self) -> Option<(String, String)> {
        match &self.message.content {
            Content::Template(t) => Some((t.name.clone(), t.language.clone())),
            _ => None,
        }
    }
}

/// Decides what `request` becomes for a business number of `waba_id`, the window being open
/// or not.
pub async fn plan(
    registry: &dyn OutboundStore,
    waba_id: &str,
    request: &SendRequest,
    window_open: bool,
) -> Result<Plan, MessagingError> {
    let asked = &request.message;
    if let Content::Template(template) = &asked.content {
        return match resolve(registry, waba_id, template, window_open).await? {
            Resolved::Template {
                template: sent,
                preview,
                reasons,
            } => Ok(Plan {
                fallback: (!reasons.is_empty()).then(|| FallbackDecision {
                    requested: label(template),
                    sent_as: label(&sent),
                    reason: reasons.join("; "),
                }),
                message: with_content(asked, Content::Template(sent)),
                preview,
            }),
            Resolved::Text { body, reasons } => Ok(as_text(asked, template, body, reasons)),
            Resolved::NotSendable { mut reasons } => match &request.fallback_text {
                Some(body) if window_open => Ok(as_text(asked, template, body.clone(), reasons)),
                Some(_) => {
                    reasons.push("the request's fallback_text needs an open window".into());
                    Err(not_sendable(&reasons))
                }
                None => Err(not_sendable(&reasons)),
            },
        };
    }
    if window_open {
        return Ok(Plan {
            preview: preview_of(&asked.content),
            message: asked.clone(),
            fallback: None,
        });
    }
    let closed = format!(
        "the 24-hour customer service window with {} is closed",
        asked.to
    );
    let Some(instead) = &request.fallback_template else {
        return Err(MessagingError::FailedPrecondition(format!(
            "{closed}: only templates may be sent; send a template or give fallback_template"
        )));
    };
    match resolve(registry, waba_id, instead, false).await? {
        Resolved::Template {
            template: sent,
            preview,
            mut reasons,
        } => {
            reasons.insert(0, closed);
            Ok(Plan {
                fallback: Some(FallbackDecision {
                    requested: asked.content.kind().to_owned(),
                    sent_as: label(&sent),
                    reason: reasons.join("; "),
                }),
                message: OutgoingMessage {
                    to: asked.to.clone(),
                    reply_to: None,
                    callback_data: None,
                    content: Content::Template(sent),
                },
                preview,
            })
        }
        Resolved::Text { reasons, .. } | Resolved::NotSendable { reasons } => {
            Err(MessagingError::FailedPrecondition(format!(
                "{closed}, and its fallback_template cannot be sent: {}",
                reasons.join("; ")
            )))
        }
    }
}

/// Where a template's fallback chain ends.
enum Resolved {
    /// This template goes (the asked one when `reasons` is empty).
    Template {
        template: Template,
        preview: Option<String>,
        reasons: Vec<String>,
    },
    /// A template's fallback text goes (the window is open).
    Text { body: String, reasons: Vec<String> },
    /// Nothing in the chain can go.
    NotSendable { reasons: Vec<String> },
}

async fn resolve(
    registry: &dyn OutboundStore,
    waba_id: &str,
    asked: &Template,
    window_open: bool,
) -> Result<Resolved, MessagingError> {
    let mut current = asked.clone();
    let mut reasons = Vec::new();
    let mut seen = HashSet::new();
    for depth in 0..MAX_CHAIN {
        seen.insert((current.name.clone(), current.language.clone()));
        let Some(row) = lookup(registry, waba_id, &current).await? else {
            reasons.push(format!("{} is not registered", label(&current)));
            return Ok(Resolved::NotSendable { reasons });
        };
        let spec = spec_of(&row)?;
        if row.status == "approved" {
            match check(&spec, &current) {
                Ok(()) => {
                    return Ok(Resolved::Template {
                        preview: Some(fill(&spec.body_text, &current)),
                        template: current,
                        reasons,
                    });
                }
                // The caller's own template with the wrong parameters is the caller's mistake.
                Err(details) if depth == 0 => {
                    return Err(MessagingError::InvalidArgument(format!(
                        "template: {details}"
                    )));
                }
                Err(details) => reasons.push(format!(
                    "{} does not take these parameters ({details})",
                    label(&current)
                )),
            }
        } else {
            reasons.push(format!("{} is {}", label(&current), row.status));
        }
        if let Some(name) = row.fallback_template_name.clone() {
            let language = row
                .fallback_template_language
                .clone()
                .unwrap_or_else(|| current.language.clone());
            if seen.contains(&(name.clone(), language.clone())) {
                reasons.push("its fallback chain loops".into());
                return Ok(Resolved::NotSendable { reasons });
            }
            current = Template {
                name,
                language,
                ..current
            };
            continue;
        }
        return Ok(match row.fallback_text {
            Some(text) if window_open => Resolved::Text {
                body: fill(&text, &current),
                reasons,
            },
            Some(_) => {
                reasons.push(format!(
                    "the fallback text of {} needs an open window",
                    label(&current)
                ));
                Resolved::NotSendable { reasons }
            }
            None => Resolved::NotSendable { reasons },
        });
    }
    reasons.push(format!("its fallback chain is longer than {MAX_CHAIN}"));
    Ok(Resolved::NotSendable { reasons })
}

/// The template of this WABA, else the one registered for every number.
async fn lookup(
    registry: &dyn OutboundStore,
    waba_id: &str,
    t: &Template,
) -> Result<Option<TemplateRow>, StoreError> {
    if !waba_id.is_empty()
        && let Some(row) = registry.get_template(waba_id, &t.name, &t.language).await?
    {
        return Ok(Some(row));
    }
    registry.get_template("", &t.name, &t.language).await
}

/// A stored template's spec; its components were checked when it was registered.
fn spec_of(row: &TemplateRow) -> Result<TemplateSpec, MessagingError> {
    serde_json::from_str(&row.components_json)
        .map_err(|e| e.to_string())
        .and_then(|components| TemplateSpec::parse(&components))
        .map_err(|e| {
            MessagingError::Internal(format!(
                "the stored components of template {} do not parse: {e}",
                row.name
            ))
        })
}

/// Checks the parameters as Meta would (132000), on the `template` object Meta would get.
fn check(spec: &TemplateSpec, template: &Template) -> Result<(), String> {
    let body = OutgoingMessage {
        to: String::new(),
        reply_to: None,
        callback_data: None,
        content: Content::Template(template.clone()),
    }
    .to_graph_body();
    spec.check_send(&body["template"])
}

/// `text` with its placeholders filled from the template's body parameters.
fn fill(text: &str, template: &Template) -> String {
    let values = values(template);
    let values: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    render(text, &values)
}

/// The body parameters by placeholder: `{{1}}`, `{{2}}`... or `{{name}}`.
fn values(template: &Template) -> Vec<(String, String)> {
    template
        .body
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let key = p.name.clone().unwrap_or_else(|| (i + 1).to_string());
            let value = match &p.value {
                ParameterValue::Text(text) | ParameterValue::DateTime(text) => text.clone(),
                ParameterValue::Currency { fallback_value, .. } => fallback_value.clone(),
                _ => String::new(),
            };
            (key, value)
        })
        .collect()
}

fn as_text(
    asked: &OutgoingMessage,
    template: &Template,
    body: String,
    reasons: Vec<String>,
) -> Plan {
    Plan {
        fallback: Some(FallbackDecision {
            requested: label(template),
            sent_as: "text".into(),
            reason: reasons.join("; "),
        }),
        preview: Some(body.clone()),
        message: with_content(
            asked,
            Content::Text(Text {
                body,
                preview_url: false,
            }),
        ),
    }
}

fn with_content(asked: &OutgoingMessage, content: Content) -> OutgoingMessage {
    OutgoingMessage {
        to: asked.to.clone(),
        reply_to: asked.reply_to.clone(),
        callback_data: None,
        content,
    }
}

fn preview_of(content: &Content) -> Option<String> {
    match content {
        Content::Text(t) => Some(t.body.clone()),
        Content::Interactive(i) => Some(i.body.clone()),
        Content::Media(m) => m.caption.clone(),
        Content::Template(_) => None,
    }
}

fn not_sendable(reasons: &[String]) -> MessagingError {
    MessagingError::FailedPrecondition(format!(
        "the template cannot be sent and no fallback applies: {}",
        reasons.join("; ")
    ))
}

/// `template <name> (<language>)`.
pub fn label(t: &Template) -> String {
    format!("template {} ({})", t.name, t.language)
}
