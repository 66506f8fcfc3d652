//! The sending RPCs: `SendMessage`, `GetOutboundMessage`, the template registry and
//! `GetSendStatus`, with their conversions. The rules live in [`crate::send`].
use tonic::Request;
use wamesh_proto::messaging::v1 as pb;
use wamesh_whatsapp::template::{HeaderFormat, ParameterFormat, TemplateSpec};

use super::MessagingService;
use super::convert::errors_from_json;
use crate::error::MessagingError;
use crate::ingest::now_ms;
use crate::send::plan::FallbackDecision;
use crate::send::{LIVE_FOR_MS, SendRequest};
use crate::store::outbound::{
    OutboundKey, OutboundRow, Put, QueueCounts, TemplateRow, WorkerReport,
};
use crate::store::{Direction, MessageKey, StoredStatus};

/// The template statuses, as stored.
const STATUSES: [(pb::TemplateStatus, &str); 5] = [
    (pb::TemplateStatus::Approved, "approved"),
    (pb::TemplateStatus::Pending, "pending"),
    (pb::TemplateStatus::Paused, "paused"),
    (pb::TemplateStatus::Rejected, "rejected"),
    (pb::TemplateStatus::Disabled, "disabled"),
];
const CATEGORIES: [&str; 3] = ["marketing", "utility", "authentication"];

impl MessagingService {
    pub(super) async fn send(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<pb::SendMessageResponse, MessagingError> {
        let request = SendRequest::try_from(request.into_inner())?;
        tracing::Span::current().record("wamesh.message_type", request.message.content.kind());
        // This span (wamesh.enqueue): the worker's send continues the trace under it.
        let mut trace = http::HeaderMap::new();
        wamesh_telemetry::inject_http(&mut trace);
        let header = |name: &str| {
            trace
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let enqueued = self
            .outbox
            .send(request, header("traceparent"), header("tracestate"))
            .await?;
        Ok(pb::SendMessageResponse {
            message: Some(self.outbound_view(enqueued.row).await?),
            duplicate: enqueued.duplicate,
        })
    }

    pub(super) async fn outbound(
        &self,
        request: pb::GetOutboundMessageRequest,
    ) -> Result<pb::OutboundMessage, MessagingError> {
        let key = match request.key {
            Some(pb::get_outbound_message_request::Key::Id(id)) => OutboundKey::Id(id),
            Some(pb::get_outbound_message_request::Key::IdempotencyKey(k))
                if !k.business_phone_number_id.is_empty() && !k.key.is_empty() =>
            {
                OutboundKey::Idempotency {
                    business_phone_number_id: k.business_phone_number_id,
                    key: k.key,
                }
            }
            _ => {
                return Err(MessagingError::InvalidArgument(
                    "key: give an id, or an idempotency_key with its business_phone_number_id"
                        .into(),
                ));
            }
        };
        let row = self
            .store
            .get_outbound(&key)
            .await?
            .ok_or_else(|| MessagingError::NotFound("no such outbound message".into()))?;
        self.outbound_view(row).await
    }

    /// A queued message with what Meta's status webhooks said of it.
    async fn outbound_view(&self, row: OutboundRow) -> Result<pb::OutboundMessage, MessagingError> {
        let Some(wamid) = row.wamid.clone() else {
            return Ok(outbound_to_pb(row, None, Vec::new()));
        };
        let message = self
            .store
            .get_message(&MessageKey::Wamid(wamid.clone(), Some(Direction::Outbound)))
            .await?;
        let timeline = self.store.status_timelines(&[wamid.as_str()]).await?;
        Ok(outbound_to_pb(
            row,
            message.and_then(|m| m.status),
            timeline,
        ))
    }

    pub(super) async fn put_template(
        &self,
        template: pb::Template,
        put: Put,
    ) -> Result<pb::Template, MessagingError> {
        let now = now_ms();
        let row = template_from_pb(template, now)?;
        if !self.store.put_template(&row, put).await? {
            let label = format!("template {} ({})", row.name, row.language);
            return Err(match put {
                Put::Create => MessagingError::AlreadyExists(format!(
                    "{label} is registered already: use UpdateTemplate"
                )),
                Put::Update => MessagingError::NotFound(format!(
                    "{label} is not registered: use CreateTemplate"
                )),
            });
        }
        let stored = self
            .store
            .get_template(&row.waba_id, &row.name, &row.language)
            .await?
            .ok_or_else(|| MessagingError::Internal("a template vanished as it was put".into()))?;
        template_to_pb(stored)
    }

    pub(super) async fn templates(
        &self,
        request: pb::ListTemplatesRequest,
    ) -> Result<pb::ListTemplatesResponse, MessagingError> {
        let rows = self
            .store
            .list_templates(&request.waba_id, &request.name)
            .await?;
        Ok(pb::ListTemplatesResponse {
            templates: rows
                .into_iter()
                .map(template_to_pb)
                .collect::<Result<_, _>>()?,
        })
    }

    pub(super) async fn send_status(&self) -> Result<pb::SendStatus, MessagingError> {
        let now = now_ms();
        let (counts, workers) = self.board.status(now).await?;
        Ok(send_status_to_pb(counts, workers, now))
    }
}

fn outbound_to_pb(
    row: OutboundRow,
    delivery_status: Option<String>,
    timeline: Vec<StoredStatus>,
) -> pb::OutboundMessage {
    // A read arriving without its delivered still means delivered.
    let first = |statuses: &[&str]| {
        timeline
            .iter()
            .filter(|s| statuses.contains(&s.status.as_str()))
            .map(|s| s.received_at_ms)
            .min()
            .unwrap_or(0)
    };
    let delivered_at = first(&["delivered", "read", "played"]);
    let read_at = first(&["read", "played"]);
    let since_queued = |at: i64| if at > 0 { at - row.queued_at_ms } else { 0 };
    let failed_status = timeline
        .iter()
        .filter(|s| s.status == "failed")
        .find_map(|s| errors_from_json(&s.errors_json).into_iter().next());
    let send_error = row
        .error_json
        .as_deref()
        .and_then(|json| errors_from_json(&format!("[{json}]")).into_iter().next());
    let fallback = row
        .fallback_json
        .as_deref()
        .and_then(|json| serde_json::from_str::<FallbackDecision>(json).ok())
        .map(|f| pb::FallbackDecision {
            requested: f.requested,
            sent_as: f.sent_as,
            reason: f.reason,
        });
    pb::OutboundMessage {
        id: row.id,
        idempotency_key: row.idempotency_key,
        business_phone_number_id: row.business_phone_number_id,
        to: row.recipient,
        r#type: row.kind,
        next_attempt_at_unix_ms: if row.state == "queued" {
            row.next_attempt_at_ms
        } else {
            0
        },
        queue_state: row.state,
        delivery_status: delivery_status.unwrap_or_default(),
        attempts: row.attempts as u32,
        wamid: row.wamid.unwrap_or_default(),
        queued_at_unix_ms: row.queued_at_ms,
        accepted_at_unix_ms: row.accepted_at_ms.unwrap_or(0),
        delivered_at_unix_ms: delivered_at,
        read_at_unix_ms: read_at,
        time_to_delivered_ms: since_queued(delivered_at),
        time_to_read_ms: since_queued(read_at),
        error: failed_status.or(send_error),
        timeline: timeline
            .into_iter()
            .map(super::convert::status_to_pb)
            .collect(),
        fallback,
        template_name: row.template_name.unwrap_or_default(),
        template_language: row.template_language.unwrap_or_default(),
        payload_json: row.payload,
    }
}

/// A template as given, checked: its name and language, category and status, components that
/// parse as Meta's, and a fallback that is not itself.
fn template_from_pb(t: pb::Template, now: i64) -> Result<TemplateRow, MessagingError> {
    let invalid =
        |field: &str, problem: &str| MessagingError::InvalidArgument(format!("{field}: {problem}"));
    let name_ok = |name: &str| {
        !name.is_empty()
            && name.len() <= 512
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !name_ok(&t.name) {
        return Err(invalid(
            "name",
            "required: lowercase letters, digits and _, at most 512",
        ));
    }
    if !language_ok(&t.language) {
        return Err(invalid("language", "required, like en or en_US"));
    }
    let category = t.category.to_ascii_lowercase();
    if !CATEGORIES.contains(&category.as_str()) {
        return Err(invalid("category", "marketing, utility or authentication"));
    }
    let status = STATUSES
        .iter()
        .find(|(s, _)| *s as i32 == t.status)
        .map(|(_, name)| *name)
        .ok_or_else(|| invalid("status", "approved, pending, paused, rejected or disabled"))?;
    let components: serde_json::Value = serde_json::from_str(&t.components_json)
        .map_err(|e| invalid("components_json", &format!("not JSON: {e}")))?;
    TemplateSpec::parse(&components).map_err(|e| invalid("components_json", e.as_str()))?;
    let fallback_name = (!t.fallback_template_name.is_empty()).then_some(t.fallback_template_name);
    let fallback_language = match (&fallback_name, t.fallback_template_language.is_empty()) {
        (None, false) => {
            return Err(invalid(
                "fallback_template_language",
                "give fallback_template_name too",
            ));
        }
        (None, true) => None,
        (Some(_), true) => Some(t.language.clone()),
        (Some(_), false) if !language_ok(&t.fallback_template_language) => {
            return Err(invalid("fallback_template_language", "like en or en_US"));
        }
        (Some(_), false) => Some(t.fallback_template_language),
    };
    if fallback_name.as_deref() == Some(t.name.as_str())
        && fallback_language.as_deref() == Some(t.language.as_str())
    {
        return Err(invalid(
            "fallback_template_name",
            "a template cannot fall back to itself",
        ));
    }
    if t.fallback_text.chars().count() > 4096 {
        return Err(invalid("fallback_text", "at most 4096 characters"));
    }
    Ok(TemplateRow {
        waba_id: t.waba_id,
        name: t.name,
        language: t.language,
        category,
        status: status.to_owned(),
        components_json: components.to_string(),
        fallback_template_name: fallback_name,
        fallback_template_language: fallback_language,
        fallback_text: (!t.fallback_text.is_empty()).then_some(t.fallback_text),
        created_at_ms: now,
        updated_at_ms: now,
    })
}

/// `en`, `en_US`, `zh_CN`, `es_419`...
fn language_ok(language: &str) -> bool {
    let mut parts = language.split('_');
    let base = parts.next().unwrap_or_default();
    let region = parts.next();
    (2..=3).contains(&base.len())
        && base.chars().all(|c| c.is_ascii_lowercase())
        && region.is_none_or(|r| {
            (2..=3).contains(&r.len()) && r.chars().all(|c| c.is_ascii_alphanumeric())
        })
        && parts.next().is_none()
}

fn template_to_pb(row: TemplateRow) -> Result<pb::Template, MessagingError> {
    let spec = serde_json::from_str(&row.components_json)
        .map_err(|e| e.to_string())
        .and_then(|c| TemplateSpec::parse(&c))
        .map_err(|e| MessagingError::Internal(format!("stored components of {}: {e}", row.name)))?;
    let status = STATUSES
        .iter()
        .find(|(_, name)| *name == row.status)
        .map_or(pb::TemplateStatus::Unspecified, |(s, _)| *s);
    Ok(pb::Template {
        waba_id: row.waba_id,
        name: row.name,
        language: row.language,
        category: row.category,
        status: status as i32,
        components_json: row.components_json,
        parameter_format: match spec.parameter_format {
            ParameterFormat::Positional => pb::ParameterFormat::Positional,
            ParameterFormat::Named => pb::ParameterFormat::Named,
        } as i32,
        body_parameters: spec.body_parameters,
        header_format: spec
            .header
            .map(|h| match h {
                HeaderFormat::Text => "TEXT",
                HeaderFormat::Image => "IMAGE",
                HeaderFormat::Video => "VIDEO",
                HeaderFormat::Document => "DOCUMENT",
                HeaderFormat::Location => "LOCATION",
            })
            .unwrap_or_default()
            .to_owned(),
        header_parameter_count: spec.header_parameters.len() as u32,
        fallback_template_name: row.fallback_template_name.unwrap_or_default(),
        fallback_template_language: row.fallback_template_language.unwrap_or_default(),
        fallback_text: row.fallback_text.unwrap_or_default(),
        created_at_unix_ms: row.created_at_ms,
        updated_at_unix_ms: row.updated_at_ms,
    })
}

fn send_status_to_pb(counts: QueueCounts, workers: Vec<WorkerReport>, now: i64) -> pb::SendStatus {
    pb::SendStatus {
        queue_depth: counts.queued,
        due_now: counts.due,
        in_flight: counts.sending,
        in_doubt: counts.in_doubt,
        oldest_age_ms: counts.oldest_queued_at_ms.map_or(0, |at| (now - at).max(0)),
        dead: counts.dead,
        workers: workers
            .into_iter()
            .map(|w| pb::SendWorker {
                live: now - w.reported_at_ms <= LIVE_FOR_MS,
                worker_id: w.worker_id,
                started_at_unix_ms: w.started_at_ms,
                reported_at_unix_ms: w.reported_at_ms,
                in_flight: w.in_flight as u32,
                sent_last_minute: w.sent_last_minute as u32,
                failed_last_minute: w.failed_last_minute as u32,
                retried_last_minute: w.retried_last_minute as u32,
                deferred_last_minute: w.deferred_last_minute as u32,
                sent_total: w.sent_total as u64,
                failed_total: w.failed_total as u64,
                retried_total: w.retried_total as u64,
                last_error_code: w.last_error_code,
                last_error: w.last_error,
                last_error_at_unix_ms: w.last_error_at_ms,
            })
            .collect(),
    }
}
