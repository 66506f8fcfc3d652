//! Everything the simulator received, in arrival order, accepted or refused: what Meta would
//! have seen, duplicates included. Kept in memory for the simulator's lifetime.
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use crate::SimState;

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
}

/// The shared record.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    /// Appends one request; `seq` and `received_at_ms` are filled in here.
    pub fn push(&self, mut received: Received) {
        let mut all = self.received.lock().unwrap_or_else(|p| p.into_inner());
        received.seq = all.len() as u64 + 1;
        received.received_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        all.push(received);
    }

    /// Everything so far, oldest first.
    pub fn all(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// `GET /_sim/messages`: `{"messages": [...]}`, oldest first.
pub async fn list(State(state): State<SimState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "messages": state.recorder.all() }))
}
