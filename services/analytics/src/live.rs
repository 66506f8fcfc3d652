//! The last few minutes, in memory: send attempts and their failures, response times and
//! webhook processing latency, in 5-second slots of a sliding window. Alerts and system health
//! read it; the rollups are the durable record. Filled by the consumer from each committed batch,
//! filed by the events' own times (so replaying old events after a restart does not make a
//! burst "now").
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::event::{Event, EventKind};
use crate::sketch::Quantiles;

/// Width of one slot.
const SLOT_MS: i64 = 5_000;

/// One slot's counts.
#[derive(Debug, Clone, Default)]
struct Slot {
    start_ms: i64,
    attempts: u64,
    failed_attempts: u64,
    deliveries: u64,
    failed_deliveries: u64,
    responses: Quantiles,
    webhook_latency: Quantiles,
}

/// What the window holds right now.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Send attempts (accepted, retried, failed, dead), and those that failed.
    pub attempts: u64,
    pub failed_attempts: u64,
    /// Messages Meta delivered, and those it reported failed.
    pub deliveries: u64,
    pub failed_deliveries: u64,
    pub responses: Quantiles,
    pub webhook_latency: Quantiles,
}

impl Window {
    /// Failed / attempted; `None` with fewer than `min_samples` attempts.
    pub fn error_rate(&self, min_samples: u64) -> Option<f64> {
        (self.attempts >= min_samples.max(1))
            .then(|| self.failed_attempts as f64 / self.attempts as f64)
    }
}

/// The sliding window, shared by the consumer (writing) and readers.
#[derive(Clone)]
pub struct Live {
    width_ms: i64,
    slots: Arc<Mutex<VecDeque<Slot>>>,
}

impl Live {
    /// A window `width_ms` wide.
    pub fn new(width_ms: i64) -> Self {
        Self {
            width_ms: width_ms.max(SLOT_MS),
            slots: Arc::default(),
        }
    }

    /// Records what a committed batch tells of sends and webhooks, and the response times it
    /// produced (each with the time of the answer).
    pub fn record(&self, events: &[Event], responses: &[(i64, i64)], now_ms: i64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            let (attempt, failed, delivered, undelivered) = match e.kind {
                EventKind::SendAccepted => (1, 0, 0, 0),
                EventKind::SendRetrying | EventKind::SendFailed | EventKind::SendDead => {
                    (1, 1, 0, 0)
                }
                EventKind::StatusUpdated if e.status == "delivered" => (0, 0, 1, 0),
                EventKind::StatusUpdated if e.status == "failed" => (0, 0, 0, 1),
                EventKind::MessageReceived if e.timestamp_s > 0 => {
                    let latency = (e.at_ms - e.timestamp_s * 1000).max(0);
                    if let Some(slot) = slot_of(&mut slots, e.at_ms, now_ms, self.width_ms) {
                        slot.webhook_latency.add(latency as f64);
                    }
                    continue;
                }
                _ => continue,
            };
            if let Some(slot) = slot_of(&mut slots, e.at_ms, now_ms, self.width_ms) {
                slot.attempts += attempt;
                slot.failed_attempts += failed;
                slot.deliveries += delivered;
                slot.failed_deliveries += undelivered;
            }
        }
        for (at_ms, ms) in responses {
            if let Some(slot) = slot_of(&mut slots, *at_ms, now_ms, self.width_ms) {
                slot.responses.add(*ms as f64);
            }
        }
        forget_before(&mut slots, now_ms - self.width_ms);
    }

    /// The window ending at `now_ms`.
    pub fn window(&self, now_ms: i64) -> Window {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        forget_before(&mut slots, now_ms - self.width_ms);
        let mut window = Window::default();
        for slot in slots.iter() {
            window.attempts += slot.attempts;
            window.failed_attempts += slot.failed_attempts;
            window.deliveries += slot.deliveries;
            window.failed_deliveries += slot.failed_deliveries;
            window.responses.merge(&slot.responses);
            window.webhook_latency.merge(&slot.webhook_latency);
        }
        window
    }
}

/// The slot of `at_ms`, made if needed; `None` when it is outside the window ending at
/// `now_ms` (too old, or too far in the future to trust).
fn slot_of(
    slots: &mut VecDeque<Slot>,
    at_ms: i64,
    now_ms: i64,
    width_ms: i64,
) -> Option<&mut Slot> {
    if at_ms < now_ms - width_ms || at_ms > now_ms + SLOT_MS {
        return None;
    }
    let start_ms = at_ms.div_euclid(SLOT_MS) * SLOT_MS;
    let i = match slots.binary_search_by_key(&start_ms, |s| s.start_ms) {
        Ok(i) => i,
        Err(i) => {
            slots.insert(
                i,
                Slot {
                    start_ms,
                    ..Slot::default()
                },
            );
            i
        }
    };
    slots.get_mut(i)
}

fn forget_before(slots: &mut VecDeque<Slot>, from_ms: i64) {
    while slots
        .front()
        .is_some_and(|s| s.start_ms + SLOT_MS <= from_ms)
    {
        slots.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, at_ms: i64) -> Event {
        Event {
            seq: 1,
            kind,
            at_ms,
            number: "1".into(),
            user: 1,
            wamid: String::new(),
            outbound_id: 1,
            message_type: String::new(),
            status: String::new(),
            error_code: 0,
            template: String::new(),
            pricing_category: String::new(),
            timestamp_s: 0,
            context_wamid: String::new(),
            reply_id: String::new(),
        }
    }

    #[test]
    fn the_error_rate_covers_the_window_only() {
        let live = Live::new(60_000);
        let now = 1_000_000;
        let mut events = vec![event(EventKind::SendAccepted, now - 1_000); 18];
        events.push(event(EventKind::SendRetrying, now - 2_000));
        events.push(event(EventKind::SendFailed, now - 3_000));
        // Too old to count.
        events.push(event(EventKind::SendDead, now - 120_000));
        live.record(&events, &[(now, 250)], now);
        let window = live.window(now);
        assert_eq!((window.attempts, window.failed_attempts), (20, 2));
        assert_eq!(window.error_rate(20), Some(0.1));
        assert_eq!(window.error_rate(21), None, "too few attempts to judge");
        assert_eq!(window.responses.count(), 1);
        // A minute later everything has left the window.
        let later = live.window(now + 61_000);
        assert_eq!((later.attempts, later.error_rate(1)), (0, None));
    }
}
