//! messaging's own Prometheus metrics, recorded by small calls from the code that knows:
//!
//! - ingest (`grpc/mod.rs`, `MessagingService::ingest`): [`Arrived::of`] reads a webhook's
//!   updates before they go to group commit, [`Arrived::stored`] counts them once the store
//!   answered: `wamesh_messages_received_total{direction, type, origin}`,
//!   `wamesh_message_statuses_received_total{status, error_code}` and
//!   `wamesh_updates_stored_total{kind}`;
//! - the send workers (`send/worker.rs`, `run`): [`sends`] counts what became of each claimed
//!   message, `wamesh_sends_total{result, error_code}`;
//! - the workers' reporter (`send/mod.rs`, `report`, every report interval): [`sample`] sets the
//!   outbound queue's gauges and the database pool's.
//!
//! The store reports how many updates of a webhook were new, not which ones, so the counts by
//! type are of what *arrived*: every message and status of a stored webhook, except a webhook
//! whose updates were all stored before (Meta's retry). The exact number of new rows is
//! `wamesh_updates_stored_total`. Labels come from bounded lists ([`wamesh_whatsapp::labels`]):
//! never a phone number, a wamid or a body.
use wamesh_whatsapp::{Updates, labels};

use crate::store::outbound::Settle;
use crate::store::{Direction, IngestOutcome, Store};

/// The label of "no error" (a status without errors, an accepted send, an error that is ours
/// rather than Meta's).
const NONE: &str = "none";

/// What a webhook brought, as labels: read before its updates move into group commit.
#[derive(Debug, Default)]
pub struct Arrived {
    /// (direction, type, origin) per message.
    messages: Vec<(&'static str, &'static str, &'static str)>,
    /// (status, error code) per status.
    statuses: Vec<(&'static str, &'static str)>,
}

impl Arrived {
    pub fn of(updates: &Updates) -> Self {
        Self {
            messages: updates
                .messages
                .iter()
                .map(|m| {
                    (
                        Direction::from(m.direction).as_str(),
                        labels::message_type(&m.kind),
                        m.origin,
                    )
                })
                .collect(),
            statuses: updates
                .statuses
                .iter()
                .map(|s| {
                    let code = s
                        .errors
                        .first()
                        .map_or(NONE, |e| labels::error_code(e.code));
                    (labels::status(&s.status), code)
                })
                .collect(),
        }
    }

    /// Counts the webhook once the store stored it (`outcome`).
    pub fn stored(self, outcome: &IngestOutcome) {
        for (kind, new) in [
            ("message", outcome.new_messages),
            ("status", outcome.new_statuses),
            ("event", outcome.new_events),
        ] {
            if new > 0 {
                metrics::counter!("wamesh_updates_stored_total", "kind" => kind)
                    .increment(u64::from(new));
            }
        }
        if outcome.duplicate {
            return;
        }
        for (direction, kind, origin) in self.messages {
            metrics::counter!(
                "wamesh_messages_received_total",
                "direction" => direction,
                "type" => kind,
                "origin" => origin,
            )
            .increment(1);
        }
        for (status, error_code) in self.statuses {
            metrics::counter!(
                "wamesh_message_statuses_received_total",
                "status" => status,
                "error_code" => error_code,
            )
            .increment(1);
        }
    }
}

/// `wamesh_sends_total{result, error_code}`: what became of each message of a claim
/// (`accepted`, `deferred` by a rate limit, `retry`, `failed`, `dead`, `in_doubt`), with Meta's
/// error code when Meta gave one.
pub fn sends(settles: &[Settle]) {
    for settle in settles {
        let (result, _, _, error) = settle.result.columns();
        let code = match error {
            Some(failure) if failure.code != 0 => labels::error_code(failure.code),
            _ => NONE,
        };
        metrics::counter!("wamesh_sends_total", "result" => result, "error_code" => code)
            .increment(1);
    }
}

/// Sets the outbound queue's gauges (the whole queue, every replica's messages: each replica
/// reports the same numbers) and this replica's database pool gauges. A queue that cannot be
/// read leaves its gauges as they were.
pub async fn sample(store: &dyn Store, now_ms: i64) {
    match store.queue_counts(now_ms).await {
        Ok(counts) => {
            let age_ms = counts
                .oldest_queued_at_ms
                .map_or(0, |oldest| (now_ms - oldest).max(0));
            metrics::gauge!("wamesh_outbound_queue_depth").set(counts.queued as f64);
            metrics::gauge!("wamesh_outbound_queue_due").set(counts.due as f64);
            metrics::gauge!("wamesh_outbound_in_flight").set(counts.sending as f64);
            metrics::gauge!("wamesh_outbound_in_doubt").set(counts.in_doubt as f64);
            metrics::gauge!("wamesh_outbound_dead").set(counts.dead as f64);
            metrics::gauge!("wamesh_outbound_oldest_age_seconds").set(age_ms as f64 / 1000.0);
        }
        Err(e) => tracing::debug!(error = %e, "could not read the outbound queue for metrics"),
    }
    let pool = store.pool_stats();
    metrics::gauge!("wamesh_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
    metrics::gauge!("wamesh_db_pool_connections", "state" => "in_use").set(f64::from(pool.in_use));
    metrics::gauge!("wamesh_db_pool_max_connections").set(f64::from(pool.max));
}

#[cfg(test)]
mod tests {
    use wamesh_whatsapp::Webhook;

    use super::*;
    use crate::store::UpdateCounts;
    use crate::store::outbound::{SendFailure, Settlement};

    /// The value of one series in the process recorder's text (0 when absent).
    fn value(series: &str) -> f64 {
        let text = wamesh_runtime::metrics::install().render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn outcome(duplicate: bool, new_messages: u32, new_statuses: u32) -> IngestOutcome {
        IngestOutcome {
            delivery_id: 1,
            duplicate,
            counts: UpdateCounts::default(),
            new_messages,
            new_statuses,
            new_events: 0,
        }
    }

    #[test]
    fn a_stored_webhook_counts_its_messages_and_statuses_by_label_and_a_retry_does_not() {
        wamesh_runtime::metrics::install();
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"metadata":{"phone_number_id":"1065"},
              "messages":[{"id":"wamid.M1","from":"15559990001","type":"reaction","reaction":{"message_id":"wamid.X","emoji":"x"}}],
              "statuses":[{"id":"wamid.S1","status":"played","recipient_id":"15559990001"},
                          {"id":"wamid.S2","status":"failed","recipient_id":"15559990001","errors":[{"code":131049}]},
                          {"id":"wamid.S3","status":"failed","recipient_id":"15559990001","errors":[{"code":4242}]}]}}]}]}"#;
        let updates = Updates::from_webhook(&Webhook::parse(body).unwrap());
        let reaction = "wamesh_messages_received_total{direction=\"inbound\",type=\"reaction\",origin=\"webhook\"}";
        let played =
            "wamesh_message_statuses_received_total{status=\"played\",error_code=\"none\"}";
        let limited =
            "wamesh_message_statuses_received_total{status=\"failed\",error_code=\"131049\"}";
        let unknown =
            "wamesh_message_statuses_received_total{status=\"failed\",error_code=\"other\"}";
        let stored = "wamesh_updates_stored_total{kind=\"status\"}";
        let before = [reaction, played, limited, unknown, stored].map(value);

        Arrived::of(&updates).stored(&outcome(false, 1, 3));
        Arrived::of(&updates).stored(&outcome(true, 0, 0));

        let after = [reaction, played, limited, unknown, stored].map(value);
        let moved: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        assert_eq!(moved, vec![1.0, 1.0, 1.0, 1.0, 3.0]);
        let text = wamesh_runtime::metrics::install().render();
        assert!(
            !text.contains("15559990001") && !text.contains("wamid."),
            "{text}"
        );
    }

    #[test]
    fn sends_count_by_result_and_metas_code() {
        wamesh_runtime::metrics::install();
        let settle = |result| Settle {
            traceparent: None,
            id: 1,
            claim_token: 1,
            result,
        };
        let failure = |code| SendFailure {
            code,
            json: String::new(),
        };
        let dead = "wamesh_sends_total{result=\"dead\",error_code=\"131057\"}";
        let in_doubt = "wamesh_sends_total{result=\"in_doubt\",error_code=\"none\"}";
        let before = [dead, in_doubt].map(value);
        sends(&[
            settle(Settlement::Dead {
                error: failure(131057),
            }),
            settle(Settlement::InDoubt { error: failure(0) }),
            settle(Settlement::Dead {
                error: failure(131057),
            }),
        ]);
        let after = [dead, in_doubt].map(value);
        assert_eq!([after[0] - before[0], after[1] - before[1]], [2.0, 1.0]);
    }
}
