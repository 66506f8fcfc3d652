//! The spans of a conversation turn, as messaging records them (one trace from a user's
//! message to the read receipt of the reply):
//!
//! ```text
//! gateway: HTTP POST /api/webhooks/whatsapp            (the webhook's own request)
//! └─ wamesh.ingest                                     one per webhook (IngestWebhooks)
//!    └─ wamesh.process                                 one per message it holds; its context
//!       │                                              goes with the message.received event
//!       └─ (a client's SendMessage under that context)
//!          └─ wamesh.enqueue                           SendMessage's handler: its context is
//!             │                                        stored with the queued message
//!             └─ wamesh.send                           one per attempt, in a send worker
//!                ├─ ratelimit.acquire                  (rate-limit's span)
//!                ├─ wamesh.graph                       the Graph API call (HTTP POST)
//!                └─ wamesh.status sent|delivered|read  each status webhook of the message,
//!                                                      linked to that webhook's wamesh.ingest
//! ```
//!
//! A status finds its send span through the callback data the send gave Meta
//! (`wamesh:<id>:<sent_at_ms>:<traceparent>`), so no lookup is needed and a status that
//! outruns the send's own record still lands in the right trace. Attributes never hold phone
//! numbers nor message bodies.
use tracing::Span;
use tracing::field::Empty;
use wamesh_telemetry::{link_to_traceparent, set_parent_from_traceparent, traceparent};
use wamesh_whatsapp::{Direction, StatusUpdate, Updates};

use crate::store::outbound::Callback;
use crate::store::{IngestOutcome, Traces};

/// The spans of one webhook being stored, open until its transaction commits.
pub struct IngestSpans {
    pub webhook: Span,
    messages: Vec<Span>,
    statuses: Vec<Span>,
    /// Each `delivered` and `read` status of our sends with its latency from the send (ms).
    latencies: Vec<(&'static str, i64)>,
}

impl IngestSpans {
    /// Opens the webhook's span under `parent` (the gateway's request, when it sent one), a
    /// processing span per message and a confirmation span per status (see `confirmation`).
    pub fn open(parent: &str, updates: &Updates, received_at_ms: i64) -> Self {
        let webhook = tracing::info_span!(
            "wamesh.ingest",
            otel.kind = "consumer",
            messaging.system = "whatsapp",
            messaging.operation.type = "receive",
            wamesh.messages = updates.messages.len(),
            wamesh.statuses = updates.statuses.len(),
            wamesh.delivery_id = Empty,
            wamesh.duplicate = Empty,
        );
        if !parent.is_empty() {
            set_parent_from_traceparent(&webhook, parent);
        }
        let webhook_trace = traceparent(&webhook);
        let messages = updates
            .messages
            .iter()
            .map(|m| {
                tracing::info_span!(
                    parent: &webhook,
                    "wamesh.process",
                    wamesh.wamid = m.wamid.as_str(),
                    wamesh.direction = direction(m.direction),
                    wamesh.message_type = m.kind.as_str(),
                    wamesh.window_expires_at_s = window_expiry(m.direction, m.timestamp),
                    wamesh.duplicate = Empty,
                )
            })
            .collect();
        let statuses = updates
            .statuses
            .iter()
            .map(|s| confirmation(s, webhook_trace.as_deref(), received_at_ms))
            .collect();
        let latencies = updates
            .statuses
            .iter()
            .filter_map(|s| {
                let metric = match s.status.as_str() {
                    "delivered" => "wamesh_delivery_latency_seconds",
                    "read" => "wamesh_read_latency_seconds",
                    _ => return None,
                };
                let sent_at = Callback::parse(s.callback_data.as_deref()?)?.sent_at_ms?;
                Some((metric, received_at_ms - sent_at))
            })
            .collect();
        Self {
            webhook,
            messages,
            statuses,
            latencies,
        }
    }

    /// The trace contexts the webhook's rows and events are stored under.
    pub fn traces(&self) -> Traces {
        Traces {
            webhook: traceparent(&self.webhook),
            messages: self.messages.iter().map(traceparent).collect(),
            statuses: self.statuses.iter().map(traceparent).collect(),
        }
    }

    /// Records what storing did (and the delivery and read latencies of a webhook that was not
    /// a retry) and closes every span.
    pub fn close(self, outcome: Option<&IngestOutcome>) {
        if let Some(outcome) = outcome {
            if !outcome.duplicate {
                for (metric, latency_ms) in &self.latencies {
                    metrics::histogram!(*metric).record(*latency_ms.max(&0) as f64 / 1000.0);
                }
            }
            self.webhook
                .record("wamesh.delivery_id", outcome.delivery_id);
            self.webhook.record("wamesh.duplicate", outcome.duplicate);
            for span in self.messages.iter().chain(&self.statuses) {
                span.record("wamesh.duplicate", outcome.duplicate);
            }
        } else {
            self.webhook.record("otel.status_code", "ERROR");
        }
    }
}

/// A status of one of our sends: a span in the send's trace (its parent the send span named
/// by the callback data), linked to the webhook that brought it, with the delivery latency;
/// an error when the message failed. A status of anyone else's message gets a span under the
/// webhook's.
fn confirmation(status: &StatusUpdate, webhook: Option<&str>, received_at_ms: i64) -> Span {
    let ours = status.callback_data.as_deref().and_then(Callback::parse);
    let span = tracing::info_span!(
        "wamesh.status",
        otel.name = format!("wamesh.status {}", status.status).as_str(),
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.system = "whatsapp",
        wamesh.status = status.status.as_str(),
        wamesh.wamid = status.wamid.as_str(),
        wamesh.message_id = Empty,
        wamesh.delivery_latency_ms = Empty,
        wamesh.error_code = Empty,
        wamesh.duplicate = Empty,
    );
    match ours.as_ref().and_then(|c| c.traceparent.as_deref()) {
        Some(send) => {
            set_parent_from_traceparent(&span, send);
            if let Some(webhook) = webhook {
                link_to_traceparent(&span, webhook);
            }
        }
        None => {
            if let Some(webhook) = webhook {
                set_parent_from_traceparent(&span, webhook);
            }
        }
    }
    if let Some(callback) = &ours {
        span.record("wamesh.message_id", callback.outbound_id);
        if let Some(sent_at) = callback.sent_at_ms {
            span.record("wamesh.delivery_latency_ms", received_at_ms - sent_at);
        }
    }
    if let Some(error) = status.errors.first() {
        span.record("wamesh.error_code", error.code);
    }
    if status.status.eq_ignore_ascii_case("failed") {
        span.record("otel.status_code", "ERROR");
        let code = status.errors.first().map_or(0, |e| e.code);
        span.record("otel.status_message", format!("Meta error {code}").as_str());
    }
    span
}

/// One send attempt, in the trace of the `SendMessage` that queued it.
pub fn send_span(queued_under: Option<&str>, message_id: i64, attempt: u32, kind: &str) -> Span {
    let span = tracing::info_span!(
        "wamesh.send",
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_message = Empty,
        messaging.system = "whatsapp",
        messaging.operation.type = "send",
        wamesh.message_id = message_id,
        wamesh.attempt = attempt,
        wamesh.message_type = kind,
        wamesh.result = Empty,
        wamesh.wamid = Empty,
        wamesh.error_code = Empty,
        wamesh.retry_after_ms = Empty,
    );
    if let Some(parent) = queued_under {
        set_parent_from_traceparent(&span, parent);
    }
    span
}

/// The Graph API call of a send (its traceparent goes in the request's headers).
pub fn graph_span(base_url: &str) -> Span {
    tracing::info_span!(
        "wamesh.graph",
        otel.name = "POST /{version}/{phone_number_id}/messages",
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = "POST",
        url.template = "/{version}/{phone_number_id}/messages",
        server.address = base_url,
        http.response.status_code = Empty,
    )
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// When a user's message keeps the window open until (Unix s); 0 for the business's own.
fn window_expiry(d: Direction, timestamp_s: i64) -> i64 {
    match d {
        Direction::Inbound => crate::window::ServiceWindow {
            last_inbound_s: timestamp_s,
        }
        .expires_at_s(),
        Direction::Outbound => 0,
    }
}
