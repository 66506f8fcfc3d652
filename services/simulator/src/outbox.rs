//! What the simulated Meta has yet to tell the business: statuses and user messages, each due
//! at its time, sent as signed webhooks. Like Meta, updates due together share a webhook (up
//! to `batch_max`, per phone number and kind; the first due one waits `flush_interval` for
//! company), because at 1,000 messages/s three webhooks per message would swamp the receiver.
//! A few POSTs run at once; anything but HTTP 200 is retried with exponential backoff, with the
//! same bytes, until it is answered 200 or the simulator stops. The queue is bounded: updates
//! beyond `queue_limit` are dropped and counted. With no webhook URL, due updates are counted as
//! skipped.
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tracing::Instrument as _;
use wamesh_runtime::Shutdown;
use wamesh_whatsapp::{SIGNATURE_HEADER, sign};

use crate::SimState;
use crate::inbound::UserMessage;
use crate::stats::{Stats, add, sub};
use crate::webhook::{body, unix_now};

/// Updates taken off the queue in one round at most.
const MAX_ROUND: usize = 100_000;

/// How long one webhook POST may take before it counts as failed.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// One thing to tell the business.
#[derive(Debug, Clone)]
pub enum Update {
    /// A `statuses[]` item; its `timestamp` is set when it is sent.
    Status {
        phone_number_id: String,
        status: Value,
    },
    /// A user's message; it opens the user's window when it is sent.
    Message(Box<UserMessage>),
}

/// One webhook: its bytes never change across retries (as Meta's don't).
#[derive(Debug)]
struct Batch {
    body: Bytes,
    statuses: u64,
    messages: u64,
    attempts: u32,
}

#[derive(Debug)]
enum Item {
    Update(Update),
    Retry(Batch),
}

#[derive(Debug)]
struct Due {
    at: Instant,
    seq: u64,
    item: Item,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed, so the max-heap pops the earliest (then the first scheduled).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// The queue of due updates and retries.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Mutex<(BinaryHeap<Due>, u64)>,
    notify: Notify,
}

impl Outbox {
    /// Queues `update` for `at` unless the queue holds `queue_limit` already; answers whether
    /// it was queued (a drop is counted).
    pub fn schedule(&self, stats: &Stats, at: Instant, update: Update, queue_limit: usize) -> bool {
        let (pending, dropped) = match &update {
            Update::Status { .. } => (&stats.statuses_pending, &stats.statuses_dropped),
            Update::Message(_) => (&stats.inbound_pending, &stats.inbound_dropped),
        };
        let queued = stats
            .statuses_pending
            .load(std::sync::atomic::Ordering::Relaxed)
            + stats
                .inbound_pending
                .load(std::sync::atomic::Ordering::Relaxed);
        if queued >= queue_limit as u64 {
            add(dropped, 1);
            return false;
        }
        add(pending, 1);
        self.push(at, Item::Update(update));
        true
    }

    fn push(&self, at: Instant, item: Item) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let earliest = queue.0.peek().is_none_or(|d| at < d.at);
        queue.1 += 1;
        let seq = queue.1;
        queue.0.push(Due { at, seq, item });
        drop(queue);
        if earliest {
            self.notify.notify_one();
        }
    }

    /// Wakes the scheduler (the configuration changed).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    fn next_due(&self) -> Option<Instant> {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.0.peek().map(|d| d.at)
    }

    fn take_due(&self, now: Instant) -> Vec<Item> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let mut items = Vec::new();
        while items.len() < MAX_ROUND && queue.0.peek().is_some_and(|d| d.at <= now) {
            if let Some(due) = queue.0.pop() {
                items.push(due.item);
            }
        }
        items
    }
}

/// Runs the scheduler until `stop`: waits for due updates, batches them, and hands each
/// webhook to a POST task (at most `concurrency` at once).
pub async fn run(state: SimState, client: reqwest::Client, stop: Shutdown) {
    let concurrency = state.knobs().delivery.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        let wait = state.outbox.next_due();
        let now = Instant::now();
        if wait.is_none_or(|at| at > now) {
            let far = now + Duration::from_secs(3600);
            tokio::select! {
                () = stop.cancelled() => return,
                () = state.outbox.notify.notified() => {}
                () = tokio::time::sleep_until(wait.unwrap_or(far).into()) => {}
            }
            continue;
        }
        let flush = state.knobs().delivery.flush_interval;
        if !flush.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(flush) => {}
            }
        }
        for batch in batches(&state, state.outbox.take_due(Instant::now())) {
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { return };
            let (state, client, stop) = (state.clone(), client.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = post(&state, &client, batch) => {}
                }
                drop(permit);
            });
        }
    }
}

/// Groups due items into webhooks: per phone number and kind, in order, `batch_max` at most.
fn batches(state: &SimState, items: Vec<Item>) -> Vec<Batch> {
    let knobs = state.knobs();
    let stats = &state.stats;
    let batch_max = knobs.delivery.batch_max.max(1);
    let timestamp = unix_now();
    let mut statuses: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut messages: BTreeMap<String, Vec<UserMessage>> = BTreeMap::new();
    let mut ready = Vec::new();
    for item in items {
        match item {
            Item::Retry(batch) => ready.push(batch),
            Item::Update(Update::Status {
                phone_number_id,
                mut status,
            }) => {
                status["timestamp"] = json!(timestamp);
                statuses.entry(phone_number_id).or_default().push(status);
            }
            Item::Update(Update::Message(message)) => {
                state.windows.open(
                    &message.phone_number_id,
                    &message.from,
                    knobs.behaviour.window,
                );
                add(&stats.inbound_sent, 1);
                messages
                    .entry(message.phone_number_id.clone())
                    .or_default()
                    .push(*message);
            }
        }
    }
    if knobs.webhook.is_none() {
        let (s, m) = (
            statuses.values().map(Vec::len).sum::<usize>() as u64,
            messages.values().map(Vec::len).sum::<usize>() as u64,
        );
        sub(&stats.statuses_pending, s);
        add(&stats.statuses_skipped, s);
        sub(&stats.inbound_pending, m);
        add(&stats.inbound_skipped, m);
        for batch in ready {
            skip(stats, &batch);
        }
        return Vec::new();
    }
    for (number, all) in statuses {
        for chunk in all.chunks(batch_max) {
            ready.push(Batch {
                body: body(&state.identity, &number, json!({ "statuses": chunk })),
                statuses: chunk.len() as u64,
                messages: 0,
                attempts: 0,
            });
        }
    }
    for (number, all) in messages {
        for chunk in all.chunks(batch_max) {
            let mut contacts: Vec<Value> = Vec::new();
            for message in chunk {
                let contact = message.contact_json();
                if !contacts.contains(&contact) {
                    contacts.push(contact);
                }
            }
            let list: Vec<Value> = chunk
                .iter()
                .map(|m| m.message_json(&state.identity.display_phone_number, &timestamp))
                .collect();
            ready.push(Batch {
                body: body(
                    &state.identity,
                    &number,
                    json!({"contacts": contacts, "messages": list}),
                ),
                statuses: 0,
                messages: chunk.len() as u64,
                attempts: 0,
            });
        }
    }
    ready
}

fn skip(stats: &Stats, batch: &Batch) {
    sub(&stats.statuses_pending, batch.statuses);
    add(&stats.statuses_skipped, batch.statuses);
    sub(&stats.inbound_pending, batch.messages);
    add(&stats.inbound_skipped, batch.messages);
}

/// POSTs one webhook; anything but 200 puts it back in the queue for its next attempt.
async fn post(state: &SimState, client: &reqwest::Client, mut batch: Batch) {
    let knobs = state.knobs();
    let stats = &state.stats;
    let Some(target) = knobs.webhook else {
        skip(stats, &batch);
        return;
    };
    let signature = sign(target.app_secret.expose().as_bytes(), &batch.body);
    // A span of its own per delivery attempt, whose context goes with the request: the
    // webhook's trace starts here, as it would at a Meta that propagated W3C trace context.
    let span = tracing::info_span!(
        "simulator.webhook",
        otel.name = "POST webhook",
        otel.kind = "client",
        http.request.method = "POST",
        wamesh.statuses = batch.statuses,
        wamesh.messages = batch.messages,
        wamesh.attempt = batch.attempts + 1,
        http.response.status_code = tracing::field::Empty,
    );
    let mut trace = reqwest::header::HeaderMap::new();
    span.in_scope(|| wamesh_telemetry::inject_http(&mut trace));
    let answer = client
        .post(&target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .headers(trace)
        .body(batch.body.clone())
        .timeout(POST_TIMEOUT)
        .send()
        .instrument(span.clone())
        .await;
    if let Ok(answered) = &answer {
        span.record("http.response.status_code", answered.status().as_u16());
    }
    drop(span);
    let status = answer.as_ref().map(reqwest::Response::status);
    if status.as_ref().is_ok_and(|s| s.as_u16() == 200) {
        add(&stats.webhooks_delivered, 1);
        sub(&stats.statuses_pending, batch.statuses);
        add(&stats.statuses_delivered, batch.statuses);
        sub(&stats.inbound_pending, batch.messages);
        add(&stats.inbound_delivered, batch.messages);
        return;
    }
    add(&stats.webhooks_failed, 1);
    add(&stats.statuses_retried, batch.statuses);
    batch.attempts += 1;
    let wait = knobs.delivery.backoff(batch.attempts);
    tracing::info!(
        attempts = batch.attempts,
        http_status = status.as_ref().map_or(0, |s| s.as_u16()),
        retry_in_ms = wait.as_millis() as u64,
        "simulator webhook not accepted; retrying"
    );
    state.outbox.push(Instant::now() + wait, Item::Retry(batch));
}
