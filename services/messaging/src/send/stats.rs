//! What each send worker did lately, for `GET /api/workers/whatsapp`: per-second counts over a
//! sliding minute, totals, what it holds now, and the last error it met. Kept in memory by the
//! worker and written to `send_workers` every few seconds, so every replica's workers show.
use std::sync::{Arc, Mutex};

use crate::store::outbound::WorkerReport;

/// Counts over the last 60 seconds, one slot per second.
#[derive(Debug, Clone)]
struct Minute {
    slots: [u32; 60],
    /// The Unix second of the newest slot written.
    newest_s: i64,
    total: u64,
}

impl Default for Minute {
    fn default() -> Self {
        Self {
            slots: [0; 60],
            newest_s: 0,
            total: 0,
        }
    }
}

impl Minute {
    fn add(&mut self, now_s: i64, n: u32) {
        self.advance(now_s);
        self.slots[now_s.rem_euclid(60) as usize] += n;
        self.total += u64::from(n);
    }

    /// Clears the slots of the seconds that passed since the newest one written.
    fn advance(&mut self, now_s: i64) {
        let passed = (now_s - self.newest_s).clamp(0, 60);
        for s in 1..=passed {
            self.slots[(self.newest_s + s).rem_euclid(60) as usize] = 0;
        }
        self.newest_s = self.newest_s.max(now_s);
    }

    fn last_minute(&self, now_s: i64) -> u32 {
        let mut fresh = self.clone();
        fresh.advance(now_s);
        fresh.slots.iter().sum()
    }
}

/// One worker's record.
#[derive(Debug, Default)]
struct Record {
    in_flight: u32,
    sent: Minute,
    failed: Minute,
    retried: Minute,
    deferred: Minute,
    /// Meta's code (0: network or rate-limit), what happened, when (Unix ms).
    last_error: Option<(i64, String, i64)>,
}

/// A worker's stats, shared between the worker and whoever reports them.
#[derive(Debug, Clone)]
pub struct WorkerStats {
    pub worker_id: String,
    pub started_at_ms: i64,
    record: Arc<Mutex<Record>>,
}

/// What happened to one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Sent,
    Failed,
    Retried,
    Deferred,
    /// In doubt: counted nowhere; the error says why.
    InDoubt,
}

impl WorkerStats {
    pub fn new(worker_id: String, started_at_ms: i64) -> Self {
        Self {
            worker_id,
            started_at_ms,
            record: Arc::new(Mutex::new(Record::default())),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_in_flight(&self, n: u32) {
        self.record().in_flight = n;
    }

    pub fn count(&self, event: Event, now_ms: i64) {
        let now_s = now_ms.div_euclid(1000);
        let mut record = self.record();
        match event {
            Event::Sent => record.sent.add(now_s, 1),
            Event::Failed => record.failed.add(now_s, 1),
            Event::Retried => record.retried.add(now_s, 1),
            Event::Deferred => record.deferred.add(now_s, 1),
            Event::InDoubt => {}
        }
    }

    pub fn error(&self, code: i64, what: impl Into<String>, now_ms: i64) {
        self.record().last_error = Some((code, what.into(), now_ms));
    }

    /// The report as of `now_ms`.
    pub fn report(&self, now_ms: i64) -> WorkerReport {
        let now_s = now_ms.div_euclid(1000);
        let record = self.record();
        let (last_error_code, last_error, last_error_at_ms) =
            record.last_error.clone().unwrap_or_default();
        WorkerReport {
            worker_id: self.worker_id.clone(),
            started_at_ms: self.started_at_ms,
            reported_at_ms: now_ms,
            in_flight: record.in_flight as i32,
            sent_last_minute: record.sent.last_minute(now_s) as i32,
            failed_last_minute: record.failed.last_minute(now_s) as i32,
            retried_last_minute: record.retried.last_minute(now_s) as i32,
            deferred_last_minute: record.deferred.last_minute(now_s) as i32,
            sent_total: record.sent.total as i64,
            failed_total: record.failed.total as i64,
            retried_total: record.retried.total as i64,
            last_error_code,
            last_error,
            last_error_at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_slide_out_after_a_minute_and_totals_stay() {
        let stats = WorkerStats::new("w".into(), 0);
        stats.count(Event::Sent, 1_000);
        stats.count(Event::Sent, 30_500);
        stats.count(Event::Failed, 30_900);
        let report = stats.report(31_000);
        assert_eq!((report.sent_last_minute, report.failed_last_minute), (2, 1));
        // 61 s after the first: it slid out, the second did not.
        let report = stats.report(62_000);
        assert_eq!(report.sent_last_minute, 1);
        assert_eq!(report.sent_total, 2);
        // Long after: nothing in the last minute, totals kept.
        let report = stats.report(500_000);
        assert_eq!((report.sent_last_minute, report.failed_last_minute), (0, 0));
        assert_eq!((report.sent_total, report.failed_total), (2, 1));
    }

    #[test]
    fn the_last_error_and_in_flight_are_reported() {
        let stats = WorkerStats::new("w".into(), 5);
        stats.set_in_flight(3);
        stats.error(131000, "Something went wrong", 7);
        let report = stats.report(8);
        assert_eq!(report.in_flight, 3);
        assert_eq!(
            (
                report.last_error_code,
                report.last_error.as_str(),
                report.last_error_at_ms
            ),
            (131000, "Something went wrong", 7)
        );
    }
}
