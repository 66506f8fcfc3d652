//! `wamesh.messaging.v1.Events/Subscribe`: the event log as a server stream. A subscriber reads
//! from its cursor in pages, then waits for this replica's next commit (or polls, for other
//! replicas' commits) and reads on; a filtering subscriber gets checkpoints so its cursor
//! moves past what it filtered out. The stream ends when the client goes or messaging stops.
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wamesh_proto::messaging::v1 as pb;
use wamesh_runtime::Shutdown;

use crate::error::MessagingError;
use crate::store::Store;
use crate::store::events::{LoggedEvent, kind};

/// Events read at once.
const PAGE: u32 = 2_000;
/// Answers buffered per subscriber before reading waits for it.
const BUFFER: usize = 1024;

/// Rung after every commit of this replica that may have appended events.
#[derive(Clone, Default)]
pub struct EventSignal(Arc<Notify>);

impl EventSignal {
    pub fn committed(&self) {
        self.0.notify_waiters();
    }
}

/// The `Events` service.
pub struct EventsService {
    store: Arc<dyn Store>,
    signal: EventSignal,
    /// How often a caught-up subscriber looks again without a local commit (other replicas).
    poll: Duration,
    shutdown: Shutdown,
}

impl EventsService {
    pub fn new(
        store: Arc<dyn Store>,
        signal: EventSignal,
        poll: Duration,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            store,
            signal,
            poll,
            shutdown,
        }
    }
}

type Answer = Result<pb::SubscribeResponse, Status>;

#[tonic::async_trait]
impl pb::events_server::Events for EventsService {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Answer> + Send>>;

    #[tracing::instrument(skip_all, fields(after_seq = request.get_ref().after_seq))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        if let Some(unknown) = request
            .kinds
            .iter()
            .find(|k| !kind::ALL.contains(&k.as_str()))
        {
            return Err(MessagingError::InvalidArgument(format!(
                "kinds: {unknown:?} is not an event kind (one of {:?})",
                kind::ALL
            ))
            .into());
        }
        let cursor = i64::try_from(request.after_seq)
            .map_err(|_| Status::invalid_argument("after_seq: larger than any sequence number"))?;
        let (answers, stream) = mpsc::channel(BUFFER);
        let reader = Reader {
            store: self.store.clone(),
            signal: self.signal.clone(),
            poll: self.poll,
            kinds: request.kinds,
            answers,
        };
        tokio::spawn(reader.run(cursor, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }
}

/// One subscriber's reading loop.
struct Reader {
    store: Arc<dyn Store>,
    signal: EventSignal,
    poll: Duration,
    kinds: Vec<String>,
    answers: mpsc::Sender<Answer>,
}

impl Reader {
    async fn run(self, mut cursor: i64, shutdown: Shutdown) {
        loop {
            // Registered before reading, so a commit during the read still wakes us.
            let committed = self.signal.0.notified();
            tokio::pin!(committed);
            committed.as_mut().enable();
            match self.read_from(cursor).await {
                Ok((next, more)) => {
                    cursor = next;
                    if more {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the event log failed");
                    let status = Status::from(MessagingError::from(e));
                    let _ = self.answers.send(Err(status)).await;
                    return;
                }
            }
            tokio::select! {
                () = committed => {}
                () = tokio::time::sleep(self.poll) => {}
                () = self.answers.closed() => return,
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Sends what follows `cursor`: answers the new cursor and whether a full page came.
    async fn read_from(&self, cursor: i64) -> Result<(i64, bool), crate::store::StoreError> {
        // Every event up to `head` is visible to the read below (commits are in order).
        let head = self.store.last_event_seq().await?;
        let events = self.store.read_events(cursor, &self.kinds, PAGE).await?;
        let full = events.len() == PAGE as usize;
        let mut next = cursor;
        for event in events {
            next = event.seq;
            let item = pb::subscribe_response::Item::Event(event_to_pb(event));
            if self.send(item).await.is_err() {
                return Ok((next, false));
            }
        }
        if !full && head > next {
            // The rest up to the head was filtered out: say so, so the cursor moves.
            next = head;
            let item =
                pb::subscribe_response::Item::Checkpoint(pb::Checkpoint { seq: head as u64 });
            let _ = self.send(item).await;
        }
        Ok((next, full))
    }

    async fn send(&self, item: pb::subscribe_response::Item) -> Result<(), ()> {
        self.answers
            .send(Ok(pb::SubscribeResponse { item: Some(item) }))
            .await
            .map_err(drop)
    }
}

fn event_to_pb(e: LoggedEvent) -> pb::Event {
    pb::Event {
        seq: e.seq as u64,
        kind: e.kind,
        committed_at_unix_ms: e.committed_at_ms,
        business_phone_number_id: e.business_phone_number_id,
        contact_id: e.contact_id,
        wamid: e.wamid.unwrap_or_default(),
        message_id: e.message_id.unwrap_or(0),
        outbound_id: e.outbound_id.unwrap_or(0),
        r#type: e.message_type.unwrap_or_default(),
        status: e.status.unwrap_or_default(),
        error_code: e.error_code,
        template_name: e.template_name.unwrap_or_default(),
        pricing_category: e.pricing_category.unwrap_or_default(),
        timestamp_unix_s: e.timestamp_s.unwrap_or(0),
        context_wamid: e.context_wamid.unwrap_or_default(),
        reply_id: e.reply_id.unwrap_or_default(),
        traceparent: e.traceparent.unwrap_or_default(),
        tracestate: e.tracestate.unwrap_or_default(),
    }
}
