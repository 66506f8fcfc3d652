//! Counters of what the simulator did, at `GET /_sim/stats`: sends accepted and refused (by
//! code), answers dropped, statuses by status and by delivery state, webhook attempts, and the
//! simulated users' messages. A load test reads them to see what Meta would have done.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::State;

use crate::SimState;

/// Every counter; all start at 0 and only grow, except `pending_*` (what is queued now).
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    refused: Mutex<BTreeMap<i64, u64>>,
    /// Accepted sends whose answer was lost on purpose (the drop rate).
    pub answers_dropped: AtomicU64,
    /// Statuses scheduled, by status.
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub read: AtomicU64,
    pub failed: AtomicU64,
    /// Statuses in webhooks the receiver answered 200.
    pub statuses_delivered: AtomicU64,
    /// Statuses queued or in flight now (scheduled, batched, awaiting a retry).
    pub statuses_pending: AtomicU64,
    /// Statuses put in a webhook again after a failed attempt (counted per attempt).
    pub statuses_retried: AtomicU64,
    /// Statuses not queued because the queue was full.
    pub statuses_dropped: AtomicU64,
    /// Statuses not sent because no webhook URL was configured.
    pub statuses_skipped: AtomicU64,
    /// Webhook POSTs answered 200.
    pub webhooks_delivered: AtomicU64,
    /// Webhook POSTs answered otherwise, or not answered.
    pub webhooks_failed: AtomicU64,
    /// User messages sent to the business (simulated users and `/_sim/inbound`).
    pub inbound_sent: AtomicU64,
    /// User messages in webhooks the receiver answered 200.
    pub inbound_delivered: AtomicU64,
    pub inbound_pending: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub inbound_skipped: AtomicU64,
}

impl Stats {
    pub fn refused(&self, code: i64) {
        *self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    /// Counts a scheduled status by its `status`.
    pub fn scheduled(&self, status: &str) {
        let counter = match status {
            "sent" => &self.sent,
            "delivered" => &self.delivered,
            "read" => &self.read,
            _ => &self.failed,
        };
        add(counter, 1);
    }

    /// Everything, as `GET /_sim/stats` answers it.
    pub fn snapshot(&self) -> serde_json::Value {
        let refused: BTreeMap<String, u64> = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "accepted": get(&self.accepted),
            "refused": refused,
            "answers_dropped": get(&self.answers_dropped),
            "statuses": {
                "by_status": {
                    "sent": get(&self.sent),
                    "delivered": get(&self.delivered),
                    "read": get(&self.read),
                    "failed": get(&self.failed),
                },
                "delivered": get(&self.statuses_delivered),
                "pending": get(&self.statuses_pending),
                "retried": get(&self.statuses_retried),
                "dropped": get(&self.statuses_dropped),
                "skipped": get(&self.statuses_skipped),
            },
            "webhooks": {
                "delivered": get(&self.webhooks_delivered),
                "failed_attempts": get(&self.webhooks_failed),
            },
            "inbound": {
                "sent": get(&self.inbound_sent),
                "delivered": get(&self.inbound_delivered),
                "pending": get(&self.inbound_pending),
                "dropped": get(&self.inbound_dropped),
                "skipped": get(&self.inbound_skipped),
            },
        })
    }
}

pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub fn sub(counter: &AtomicU64, n: u64) {
    counter.fetch_sub(n, Ordering::Relaxed);
}

/// `GET /_sim/stats`: [`Stats::snapshot`], plus the record's size and drops.
pub async fn show(State(state): State<SimState>) -> Json<serde_json::Value> {
    let mut snapshot = state.stats.snapshot();
    snapshot["record"] = serde_json::json!({
        "kept": state.recorder.len(),
        "dropped": state.recorder.dropped(),
    });
    Json(snapshot)
}
