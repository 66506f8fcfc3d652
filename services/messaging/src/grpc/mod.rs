//! The gRPC adapter for `wamesh.messaging.v1.Messaging`: decode, call the store or the
//! ingestor, encode. Proto types stop here.
use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use wamesh_proto::messaging::v1 as pb;
use wamesh_whatsapp::{Updates, Webhook};

mod convert;
mod events;
mod sending;

pub use events::{EventSignal, EventsService};

use convert::*;

use crate::error::MessagingError;
use crate::ingest::{Ingestor, now_ms};
use crate::send::{Outbox, StatusBoard};
use crate::store::{Direction, IncomingWebhook, MessageKey, Store, StoredMessage, StoredStatus};
use crate::trace::IngestSpans;

/// The `Messaging` service over a store, its group-commit ingestor and sending's outbox.
#[derive(Clone)]
pub struct MessagingService {
    store: Arc<dyn Store>,
    ingestor: Ingestor,
    outbox: Outbox,
    board: StatusBoard,
}

impl MessagingService {
    pub fn new(
        store: Arc<dyn Store>,
        ingestor: Ingestor,
        outbox: Outbox,
        board: StatusBoard,
    ) -> Self {
        Self {
            store,
            ingestor,
            outbox,
            board,
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

impl MessagingService {
    /// Parses one webhook and stores it through group commit.
    async fn ingest(
        &self,
        request: pb::IngestWebhookRequest,
    ) -> Result<pb::IngestWebhookResponse, MessagingError> {
        let webhook = Webhook::parse(&request.raw_body)
            .map_err(|e| MessagingError::InvalidArgument(format!("raw_body: {e}")))?;
        let updates = Updates::from_webhook(&webhook);
        let arrived = crate::metrics::Arrived::of(&updates);
        let received_at_ms = if request.received_at_unix_ms > 0 {
            request.received_at_unix_ms
        } else {
            now_ms()
        };
        let spans = IngestSpans::open(&request.traceparent, &updates, received_at_ms);
        let incoming = IncomingWebhook {
            body_sha256: hex::encode(Sha256::digest(&request.raw_body)),
            raw_body: request.raw_body,
            received_at_ms,
            verified_by: request.verified_by,
            traces: spans.traces(),
            updates,
        };
        let stored = self
            .ingestor
            .ingest(incoming)
            .instrument(spans.webhook.clone())
            .await;
        spans.close(stored.as_ref().ok());
        let outcome = stored?;
        arrived.stored(&outcome);
        let duplicate = if outcome.duplicate { "true" } else { "false" };
        metrics::counter!("wamesh_webhooks_stored_total", "duplicate" => duplicate).increment(1);
        Ok(pb::IngestWebhookResponse {
            delivery_id: outcome.delivery_id,
            duplicate: outcome.duplicate,
            counts: Some(counts(outcome.counts)),
            new_messages: outcome.new_messages,
            new_statuses: outcome.new_statuses,
            new_events: outcome.new_events,
        })
    }

    /// Converts stored messages, attaching each outbound message's timeline (one query for all).
    async fn with_timelines(
        &self,
        rows: Vec<StoredMessage>,
    ) -> Result<Vec<pb::Message>, MessagingError> {
        let outbound: Vec<&str> = rows
            .iter()
            .filter(|m| m.direction == Direction::Outbound.as_str())
            .map(|m| m.wamid.as_str())
            .collect();
        let mut timelines: HashMap<String, Vec<StoredStatus>> = HashMap::new();
        if !outbound.is_empty() {
            for status in self.store.status_timelines(&outbound).await? {
                timelines
                    .entry(status.wamid.clone())
                    .or_default()
                    .push(status);
            }
        }
        Ok(rows
            .into_iter()
            .map(|m| {
                let timeline = if m.direction == Direction::Outbound.as_str() {
                    timelines.remove(&m.wamid).unwrap_or_default()
                } else {
                    Vec::new()
                };
                message_to_pb(m, timeline)
            })
            .collect())
    }
}

#[tonic::async_trait]
impl pb::messaging_server::Messaging for MessagingService {
    #[tracing::instrument(skip_all, fields(size = request.get_ref().raw_body.len()))]
    async fn ingest_webhook(
        &self,
        request: Request<pb::IngestWebhookRequest>,
    ) -> Reply<pb::IngestWebhookResponse> {
        Ok(Response::new(self.ingest(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(webhooks = request.get_ref().webhooks.len()))]
    async fn ingest_webhooks(
        &self,
        request: Request<pb::IngestWebhooksRequest>,
    ) -> Reply<pb::IngestWebhooksResponse> {
        let webhooks = request.into_inner().webhooks;
        let results = futures::future::join_all(webhooks.into_iter().map(|w| self.ingest(w))).await;
        let results = results
            .into_iter()
            .map(|result| pb::IngestWebhookResult {
                result: Some(match result {
                    Ok(stored) => pb::ingest_webhook_result::Result::Stored(stored),
                    Err(e) => {
                        let status = Status::from(e);
                        pb::ingest_webhook_result::Result::Error(pb::IngestError {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                        })
                    }
                }),
            })
            .collect();
        Ok(Response::new(pb::IngestWebhooksResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_message(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Reply<pb::GetMessageResponse> {
        let request = request.into_inner();
        let key = match request.key {
            Some(pb::get_message_request::Key::Id(id)) => MessageKey::Id(id),
            Some(pb::get_message_request::Key::Wamid(wamid)) if !wamid.is_empty() => {
                MessageKey::Wamid(wamid, direction_from_pb(request.direction))
            }
            _ => {
                return Err(
                    MessagingError::InvalidArgument("key: give an id or a wamid".into()).into(),
                );
            }
        };
        let message = self
            .store
            .get_message(&key)
            .await
            .map_err(MessagingError::from)?
            .ok_or_else(|| MessagingError::NotFound("no such message".into()))?;
        let mut messages = self.with_timelines(vec![message]).await?;
        Ok(Response::new(pb::GetMessageResponse {
            message: messages.pop(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Reply<pb::ListMessagesResponse> {
        let request = request.into_inner();
        require_conversation(&request.business_phone_number_id, &request.contact_id)?;
        let limit = page_size(request.page_size);
        let before = parse_message_cursor(&request.page_token)?;
        let rows = self
            .store
            .list_messages(
                &request.business_phone_number_id,
                &request.contact_id,
                before,
                limit,
            )
            .await
            .map_err(MessagingError::from)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => {
                format!("{}.{}", last.timestamp_s, last.id)
            }
            _ => String::new(),
        };
        let messages = self.with_timelines(rows).await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages,
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Reply<pb::ListContactsResponse> {
        let request = request.into_inner();
        let limit = page_size(request.page_size);
        let after = parse_contact_cursor(&request.page_token)?;
        let rows = self
            .store
            .list_contacts(&request.business_phone_number_id, after, limit)
            .await
            .map_err(MessagingError::from)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => hex::encode(format!(
                "{}\n{}\n{}",
                last.last_seen_ms, last.business_phone_number_id, last.contact_id
            )),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListContactsResponse {
            contacts: rows.into_iter().map(contact_to_pb).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_service_window(
        &self,
        request: Request<pb::GetServiceWindowRequest>,
    ) -> Reply<pb::ServiceWindow> {
        let request = request.into_inner();
        require_conversation(&request.business_phone_number_id, &request.contact_id)?;
        let contact = self
            .store
            .get_contact(&request.business_phone_number_id, &request.contact_id)
            .await
            .map_err(MessagingError::from)?;
        let last_inbound = contact.map_or(0, |c| c.last_inbound_s);
        Ok(Response::new(service_window(last_inbound, now_ms() / 1000)))
    }

    #[tracing::instrument(skip_all)]
    async fn get_webhook_delivery(
        &self,
        request: Request<pb::GetWebhookDeliveryRequest>,
    ) -> Reply<pb::WebhookDelivery> {
        let id = request.into_inner().id;
        let d = self
            .store
            .get_delivery(id)
            .await
            .map_err(MessagingError::from)?
            .ok_or_else(|| MessagingError::NotFound(format!("no webhook delivery {id}")))?;
        Ok(Response::new(pb::WebhookDelivery {
            id: d.id,
            received_at_unix_ms: d.received_at_ms,
            stored_at_unix_ms: d.stored_at_ms,
            size_bytes: d.size_bytes as u64,
            body_sha256: d.body_sha256,
            duplicate: d.duplicate,
            counts: Some(pb::UpdateCounts {
                messages: d.messages as u32,
                statuses: d.statuses as u32,
                contacts: d.contacts as u32,
                errors: d.errors as u32,
                other_fields: d.other_fields as u32,
            }),
            raw_body: d.body,
            verified_by: d.verified_by,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_webhook_events(
        &self,
        request: Request<pb::ListWebhookEventsRequest>,
    ) -> Reply<pb::ListWebhookEventsResponse> {
        let request = request.into_inner();
        let limit = page_size(request.page_size);
        let after_id = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().map_err(|_| {
                MessagingError::InvalidArgument("page_token: not a token this service gave".into())
            })?
        };
        let rows = self
            .store
            .list_events(&request.field, after_id, limit)
            .await
            .map_err(MessagingError::from)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListWebhookEventsResponse {
            events: rows
                .into_iter()
                .map(|e| pb::WebhookEvent {
                    id: e.id,
                    delivery_id: e.delivery_id,
                    waba_id: e.waba_id,
                    business_phone_number_id: e.business_phone_number_id,
                    field: e.field,
                    kind: e.kind,
                    error_code: e.error_code,
                    raw_json: e.raw_json,
                    received_at_unix_ms: e.received_at_ms,
                })
                .collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_dependencies(
        &self,
        _request: Request<pb::CheckDependenciesRequest>,
    ) -> Reply<pb::CheckDependenciesResponse> {
        let started = std::time::Instant::now();
        let result = self.store.ping().await;
        let database = pb::DependencyHealth {
            name: "database".into(),
            up: result.is_ok(),
            latency_us: started.elapsed().as_micros() as u64,
            kind: self.store.backend().into(),
            error: result
                .err()
                .map(|e| match e {
                    crate::store::StoreError::Unavailable(_) => "unreachable".to_owned(),
                    _ => "failing queries".to_owned(),
                })
                .unwrap_or_default(),
        };
        Ok(Response::new(pb::CheckDependenciesResponse {
            dependencies: vec![database],
        }))
    }

    #[tracing::instrument(name = "wamesh.enqueue", skip_all, fields(wamesh.message_type))]
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Reply<pb::SendMessageResponse> {
        Ok(Response::new(self.send(request).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_outbound_message(
        &self,
        request: Request<pb::GetOutboundMessageRequest>,
    ) -> Reply<pb::OutboundMessage> {
        Ok(Response::new(self.outbound(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_template(&self, request: Request<pb::Template>) -> Reply<pb::Template> {
        let put = crate::store::outbound::Put::Create;
        Ok(Response::new(
            self.put_template(request.into_inner(), put).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn update_template(&self, request: Request<pb::Template>) -> Reply<pb::Template> {
        let put = crate::store::outbound::Put::Update;
        Ok(Response::new(
            self.put_template(request.into_inner(), put).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Reply<pb::ListTemplatesResponse> {
        Ok(Response::new(self.templates(request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_send_status(
        &self,
        _request: Request<pb::GetSendStatusRequest>,
    ) -> Reply<pb::SendStatus> {
        Ok(Response::new(self.send_status().await?))
    }
}
