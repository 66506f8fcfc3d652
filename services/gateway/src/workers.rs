//! `GET /api/workers/whatsapp`: the outbound queue and every send worker of every messaging
//! replica, as operators read it: per worker and overall, queue depth, due now, in flight,
//! oldest age, sent, failed and retried per minute, and the last error.
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Serialize;
use wamesh_proto::messaging::v1::{GetSendStatusRequest, SendStatus, SendWorker};

use crate::AppState;

const ASK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new().route("/api/workers/whatsapp", get(workers))
}

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct WorkersReport {
    pub overall: Overall,
    pub workers: Vec<Worker>,
}

/// The queue, and the sum of the live workers.
#[derive(Debug, Serialize)]
pub struct Overall {
    /// Waiting to be sent, due or not (rate-limited and retrying ones included).
    pub queue_depth: u64,
    pub due_now: u64,
    /// Claimed by a worker, being sent.
    pub in_flight: u64,
    /// Outcome unknown; waiting for a status webhook before any resend.
    pub in_doubt: u64,
    /// The oldest waiting message's age.
    pub oldest_age_ms: i64,
    /// Given up after the last attempt.
    pub dead: u64,
    pub sent_per_minute: u64,
    pub failed_per_minute: u64,
    pub retried_per_minute: u64,
    /// Rescheduled by a rate limit.
    pub deferred_per_minute: u64,
    pub workers: usize,
    pub live_workers: usize,
    /// The newest error any worker met.
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// Meta's code, or 0 for a network or rate-limit problem.
    pub code: i64,
    pub message: String,
    pub at_unix_ms: i64,
}

#[derive(Debug, Serialize)]
pub struct Worker {
    pub worker_id: String,
    /// Reported within the last 30 s.
    pub live: bool,
    pub started_at_unix_ms: i64,
    pub reported_at_unix_ms: i64,
    pub in_flight: u32,
    pub sent_per_minute: u32,
    pub failed_per_minute: u32,
    pub retried_per_minute: u32,
    pub deferred_per_minute: u32,
    pub sent_total: u64,
    pub failed_total: u64,
    pub retried_total: u64,
    pub last_error: Option<LastError>,
}

async fn workers(
    State(state): State<AppState>,
) -> Result<Json<WorkersReport>, (StatusCode, Json<serde_json::Value>)> {
    let mut messaging = state.messaging.clone();
    let unavailable = |why: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "error": format!("messaging could not be asked: {why}") })),
        )
    };
    let status = tokio::time::timeout(
        ASK_TIMEOUT,
        messaging.get_send_status(GetSendStatusRequest {}),
    )
    .await
    .map_err(|_| unavailable(format!("no answer within {ASK_TIMEOUT:?}")))?
    .map_err(|status| unavailable(format!("{:?}", status.code())))?
    .into_inner();
    Ok(Json(report(status)))
}

/// The answer from messaging's status.
pub fn report(status: SendStatus) -> WorkersReport {
    let workers: Vec<Worker> = status.workers.into_iter().map(worker).collect();
    let live: Vec<&Worker> = workers.iter().filter(|w| w.live).collect();
    let sum = |f: fn(&Worker) -> u32| live.iter().map(|w| u64::from(f(w))).sum();
    let last_error = workers
        .iter()
        .filter_map(|w| w.last_error.clone())
        .max_by_key(|e| e.at_unix_ms);
    WorkersReport {
        overall: Overall {
            queue_depth: status.queue_depth,
            due_now: status.due_now,
            in_flight: status.in_flight,
            in_doubt: status.in_doubt,
            oldest_age_ms: status.oldest_age_ms,
            dead: status.dead,
            sent_per_minute: sum(|w| w.sent_per_minute),
            failed_per_minute: sum(|w| w.failed_per_minute),
            retried_per_minute: sum(|w| w.retried_per_minute),
            deferred_per_minute: sum(|w| w.deferred_per_minute),
            workers: workers.len(),
            live_workers: live.len(),
            last_error,
        },
        workers,
    }
}

fn worker(w: SendWorker) -> Worker {
    Worker {
        last_error: (!w.last_error.is_empty()).then(|| LastError {
            code: w.last_error_code,
            message: w.last_error.clone(),
            at_unix_ms: w.last_error_at_unix_ms,
        }),
        worker_id: w.worker_id,
        live: w.live,
        started_at_unix_ms: w.started_at_unix_ms,
        reported_at_unix_ms: w.reported_at_unix_ms,
        in_flight: w.in_flight,
        sent_per_minute: w.sent_last_minute,
        failed_per_minute: w.failed_last_minute,
        retried_per_minute: w.retried_last_minute,
        deferred_per_minute: w.deferred_last_minute,
        sent_total: w.sent_total,
        failed_total: w.failed_total,
        retried_total: w.retried_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: &str, live: bool, sent: u32, error_at: i64) -> SendWorker {
        SendWorker {
            worker_id: id.into(),
            live,
            sent_last_minute: sent,
            failed_last_minute: 1,
            last_error: if error_at > 0 {
                format!("e{error_at}")
            } else {
                String::new()
            },
            last_error_code: 131000,
            last_error_at_unix_ms: error_at,
            ..Default::default()
        }
    }

    #[test]
    fn overall_sums_the_live_workers_and_shows_the_newest_error() {
        let report = report(SendStatus {
            queue_depth: 7,
            due_now: 3,
            workers: vec![
                w("a/0", true, 10, 5),
                w("a/1", true, 4, 9),
                w("b/0", false, 100, 20),
            ],
            ..Default::default()
        });
        let overall = &report.overall;
        assert_eq!((overall.queue_depth, overall.due_now), (7, 3));
        assert_eq!(overall.sent_per_minute, 14, "the stale worker is left out");
        assert_eq!(overall.failed_per_minute, 2);
        assert_eq!((overall.workers, overall.live_workers), (3, 2));
        assert_eq!(overall.last_error.as_ref().unwrap().message, "e20");
        assert!(report.workers[0].last_error.is_some());
    }
}
