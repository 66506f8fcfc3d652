//! The consumer of messaging's event log: subscribes from the stored cursor, gathers events into
//! batches, counts each batch ([`crate::apply`]) and commits it with the new cursor. Whatever
//! goes wrong (messaging restarts, the stream breaks, the database is down, another replica
//! moved the cursor), it drops the batch it holds and subscribes again from the stored cursor:
//! an event is counted when, and only when, its batch commits.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio_stream::StreamExt as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::events_client::EventsClient;
use wamesh_runtime::Shutdown;
use wamesh_telemetry::GrpcTraceInterceptor;

use crate::apply::{State, apply, needs};
use crate::event::{Event, user_hash};
use crate::live::Live;
use crate::rollup::Buckets;
use crate::store::{Commit, Store, StoreError};

/// The kinds analytics counts (the rest of the log passes as checkpoints).
pub const KINDS: [&str; 7] = [
    "message.received",
    "message.echoed",
    "status.updated",
    "send.accepted",
    "send.retrying",
    "send.failed",
    "send.dead",
];

/// How the consumer batches.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// At most this many events per commit.
    pub max_batch: usize,
    /// A batch is committed once no event came for this long (or when full).
    pub linger: Duration,
    /// Wait before subscribing again after a failure.
    pub retry: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_batch: 20_000,
            linger: Duration::from_millis(20),
            retry: Duration::from_millis(500),
        }
    }
}

/// What the consumer has done, for `GetConsumerStatus` and metrics.
#[derive(Debug, Default)]
pub struct Progress {
    pub cursor: AtomicU64,
    pub events_applied: AtomicU64,
    pub connected: AtomicBool,
}

/// messaging's `Events` client, carrying trace context.
pub type EventLogClient = EventsClient<InterceptedService<Channel, GrpcTraceInterceptor>>;

pub struct Consumer {
    pub store: Arc<dyn Store>,
    pub events: EventLogClient,
    pub buckets: Buckets,
    pub config: ConsumerConfig,
    pub progress: Arc<Progress>,
    pub live: Live,
}

impl Consumer {
    /// Counts events until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let hash_key = loop {
            match self.store.hash_key().await {
                Ok(key) => break key,
                Err(e) => tracing::warn!(error = %e, "cannot read the hash key; retrying"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.retry) => {}
            }
        };
        while !shutdown.is_cancelled() {
            let result = tokio::select! {
                r = self.follow(&hash_key) => r,
                () = shutdown.cancelled() => Ok(()),
            };
            self.progress.connected.store(false, Ordering::Relaxed);
            if let Err(e) = result {
                tracing::warn!(error = %e, "event consumer stopped; subscribing again from the stored cursor");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.retry) => {}
            }
        }
    }

    /// One subscription: from the stored cursor, batch by batch, until it fails.
    async fn follow(&self, hash_key: &[u8]) -> Result<(), ConsumeError> {
        let mut cursor = self.store.cursor().await?;
        self.publish(cursor.seq, cursor.events_applied);
        let request = pb::SubscribeRequest {
            after_seq: cursor.seq as u64,
            kinds: KINDS.iter().map(|k| (*k).to_owned()).collect(),
        };
        let mut stream = self
            .events
            .clone()
            .subscribe(request)
            .await
            .map_err(ConsumeError::Stream)?
            .into_inner();
        self.progress.connected.store(true, Ordering::Relaxed);
        let hash = |user: &str| user_hash(hash_key, user);
        loop {
            // Wait for the first item of a batch as long as it takes, then gather more until
            // the batch is full or the stream pauses.
            let Some(first) = stream.next().await else {
                return Err(ConsumeError::Ended);
            };
            let mut batch = Batch::new(cursor.seq);
            batch.take(first.map_err(ConsumeError::Stream)?, &hash)?;
            while batch.len() < self.config.max_batch {
                match tokio::time::timeout(self.config.linger, stream.next()).await {
                    Ok(Some(item)) => batch.take(item.map_err(ConsumeError::Stream)?, &hash)?,
                    Ok(None) | Err(_) => break,
                }
            }
            if batch.to_seq == cursor.seq {
                continue;
            }
            let needs = needs(&batch.events);
            let (facts, users) = self.store.load(&needs).await?;
            let mut state = State::new(facts, users);
            let mut rollups = apply(self.buckets, &batch.events, &mut state);
            let responses = std::mem::take(&mut rollups.responses);
            let (facts, users) = state.into_changed();
            cursor = self
                .store
                .commit(Commit {
                    from: cursor,
                    to_seq: batch.to_seq,
                    events: batch.seen,
                    facts,
                    users,
                    rollups,
                })
                .await?;
            self.live.record(&batch.events, &responses, crate::now_ms());
            self.publish(cursor.seq, cursor.events_applied);
        }
    }

    fn publish(&self, seq: i64, events_applied: i64) {
        self.progress.cursor.store(seq as u64, Ordering::Relaxed);
        self.progress
            .events_applied
            .store(events_applied as u64, Ordering::Relaxed);
        metrics::gauge!("wamesh_analytics_cursor").set(seq as f64);
    }
}

/// Events gathered for one commit.
struct Batch {
    events: Vec<Event>,
    /// The log position the batch reaches (events and checkpoints).
    to_seq: i64,
    /// Log entries it covers that came as events (counted or not).
    seen: i64,
}

impl Batch {
    fn new(from_seq: i64) -> Self {
        Self {
            events: Vec::new(),
            to_seq: from_seq,
            seen: 0,
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }

    /// Adds one item of the stream; an item out of order is an error (the stream is broken).
    fn take(
        &mut self,
        item: pb::SubscribeResponse,
        hash: &impl Fn(&str) -> u64,
    ) -> Result<(), ConsumeError> {
        let seq = match item.item {
            Some(pb::subscribe_response::Item::Event(e)) => {
                let seq = e.seq as i64;
                if seq > self.to_seq {
                    self.seen += 1;
                    if let Some(event) = Event::from_proto(e, hash) {
                        self.events.push(event);
                    }
                }
                seq
            }
            Some(pb::subscribe_response::Item::Checkpoint(c)) => c.seq as i64,
            None => return Ok(()),
        };
        if seq < self.to_seq {
            return Err(ConsumeError::OutOfOrder {
                seq,
                after: self.to_seq,
            });
        }
        self.to_seq = seq;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("messaging's event stream failed: {0}")]
    Stream(tonic::Status),
    #[error("messaging ended the event stream")]
    Ended,
    #[error("the event stream went backwards: {seq} after {after}")]
    OutOfOrder { seq: i64, after: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}
