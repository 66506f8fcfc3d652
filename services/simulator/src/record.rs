//! Everything the simulator received, in arrival order, accepted or refused: what Meta would
//! have seen, duplicates included. Kept in memory, bounded: past the bound the oldest entries
//! go, and are counted. Sequence numbers never restart (not even after a reset), so a reader's
//! `after` cursor stays valid.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use crate::SimState;
use crate::error::GraphError;

/// Entries kept by default before the oldest are dropped.
pub const DEFAULT_RECORD_LIMIT: usize = 200_000;

/// Entries one `GET /_sim/messages` answers at most (and by default).
pub const MAX_PAGE: usize = 100_000;

/// One `/messages` request. The bearer token is never kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Received {
    /// 1, 2, 3... in arrival order.
    pub seq: u64,
    pub received_at_ms: i64,
    pub version: String,
    pub phone_number_id: String,
    /// The body as parsed; a body that was not JSON is kept as a string.
    pub body: serde_json::Value,
    /// Meta's id for an accepted message.
    pub wamid: Option<String>,
    /// The error code of a refused one.
    pub error_code: Option<i64>,
    /// Accepted, but the client got no answer (the drop rate): it must treat the send as in
    /// doubt.
    pub answer_dropped: bool,
    /// Accepted, but its `failed` status will carry this code (131047 outside the window,
    /// 131026 undeliverable).
    pub fails_with: Option<i64>,
}

#[derive(Debug)]
struct Entries {
    entries: VecDeque<Received>,
    next_seq: u64,
    dropped: u64,
    limit: usize,
}

/// The shared record.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Entries>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new(DEFAULT_RECORD_LIMIT)
    }
}

/// One page of the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub messages: Vec<Received>,
    /// The cursor for the next page: the last `seq` answered (or the one asked for).
    pub next_after: u64,
    /// More entries follow this page.
    pub more: bool,
    /// Entries dropped so far because the record was full.
    pub dropped: u64,
}

impl Recorder {
    /// A record keeping at most `limit` entries (at least 1).
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Entries {
                entries: VecDeque::new(),
                next_seq: 1,
                dropped: 0,
                limit: limit.max(1),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one request; `seq` and `received_at_ms` are filled in here. Answers the seq.
    pub fn push(&self, mut received: Received) -> u64 {
        let mut record = self.lock();
        received.seq = record.next_seq;
        record.next_seq += 1;
        received.received_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let seq = received.seq;
        record.entries.push_back(received);
        record.trim();
        seq
    }

    /// Everything kept, oldest first.
    pub fn all(&self) -> Vec<Received> {
        self.lock().entries.iter().cloned().collect()
    }

    /// At most `limit` entries with a seq above `after`, oldest first.
    pub fn page(&self, after: u64, limit: usize) -> Page {
        let record = self.lock();
        let start = record.entries.partition_point(|r| r.seq <= after);
        let messages: Vec<Received> = record.entries.range(start..).take(limit).cloned().collect();
        Page {
            next_after: messages.last().map_or(after, |r| r.seq),
            more: record.entries.len() - start > messages.len(),
            messages,
            dropped: record.dropped,
        }
    }

    /// Forgets every entry (sequence numbers go on).
    pub fn clear(&self) {
        let mut record = self.lock();
        record.entries.clear();
        record.dropped = 0;
    }

    /// Entries dropped because the record was full.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Changes the bound; entries beyond a smaller one are dropped (and counted) at once.
    pub fn set_limit(&self, limit: usize) {
        let mut record = self.lock();
        record.limit = limit.max(1);
        record.trim();
    }
}

impl Entries {
    fn trim(&mut self) {
        while self.entries.len() > self.limit {
            self.entries.pop_front();
            self.dropped += 1;
        }
    }
}

/// `GET /_sim/messages` query: both optional, as text so a bad value gets our own error.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /_sim/messages?after=<seq>&limit=<n>`: [`Page`] as JSON, oldest first; by default
/// everything after 0, up to [`MAX_PAGE`] entries.
pub async fn list(
    State(state): State<SimState>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Page>, GraphError> {
    let after = match query.after.as_deref() {
        None => 0,
        Some(text) => text.parse().map_err(|_| {
            GraphError::invalid_parameter(format!(
                "after must be a sequence number (0 or more), not {text:?}"
            ))
        })?,
    };
    let limit = match query.limit.as_deref() {
        None => MAX_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(GraphError::invalid_parameter(format!(
                    "limit must be 1 to {MAX_PAGE}, not {text:?}"
                )));
            }
        },
    };
    Ok(Json(state.recorder.page(after, limit)))
}

/// `DELETE /_sim/messages`: forgets the record (sequence numbers go on); 204.
pub async fn reset(State(state): State<SimState>) -> axum::http::StatusCode {
    state.recorder.clear();
    axum::http::StatusCode::NO_CONTENT
}
