//! What became of the messages `bench send` measured: when each was delivered (read from the
//! database), how the rest ended, and the end-to-end figures made of them.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;

use super::{Bench, Sent};
use crate::bench::Measured;

impl Bench {
    /// Waits (up to `drain`) until every measured message has its delivered status stored;
    /// answers the stages of those that have.
    pub(super) async fn delivered(
        &self,
        sent: &Sent,
        drain: Duration,
    ) -> anyhow::Result<HashMap<i64, Delivered>> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.database_url)
            .await?;
        let ids: Vec<i64> = sent.started_ms.keys().copied().collect();
        let deadline = Instant::now() + drain;
        loop {
            let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT o.id, o.queued_at_ms, o.accepted_at_ms, d.stored_at_ms
                 FROM outbound_messages o
                 JOIN message_statuses s ON s.wamid = o.wamid AND s.status = 'delivered'
                 JOIN webhook_deliveries d ON d.id = s.delivery_id
                 WHERE o.id = ANY($1) AND o.accepted_at_ms IS NOT NULL",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await?;
            if rows.len() >= ids.len() || Instant::now() >= deadline {
                return Ok(rows
                    .into_iter()
                    .map(|(id, queued_ms, accepted_ms, delivered_ms)| {
                        let delivered = Delivered {
                            queued_ms,
                            accepted_ms,
                            delivered_ms,
                        };
                        (id, delivered)
                    })
                    .collect());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// How the measured messages ended, and how often Meta refused a send.
    pub(super) async fn outcome(&self, sent: &Sent) -> anyhow::Result<Outcome> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.database_url)
            .await?;
        let ids: Vec<i64> = sent.started_ms.keys().copied().collect();
        let states: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, count(*) FROM outbound_messages WHERE id = ANY($1) GROUP BY state",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await?;
        let count = |state: &str| {
            states
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n as u64)
        };
        let undelivered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbound_messages o WHERE o.id = ANY($1) AND NOT EXISTS
                 (SELECT 1 FROM message_statuses s WHERE s.wamid = o.wamid AND s.status = 'delivered')",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        let stats: serde_json::Value = self
            .http
            .get(format!("{}/_sim/stats", self.simulator))
            .send()
            .await?
            .json()
            .await?;
        let meta_refused = stats["refused"]
            .as_object()
            .map_or(0, |codes| codes.values().filter_map(|n| n.as_u64()).sum());
        Ok(Outcome {
            failed: count("failed"),
            dead: count("dead"),
            in_doubt: count("in_doubt"),
            undelivered: undelivered as u64,
            meta_refused,
        })
    }
}

/// One delivered message's times (Unix ms): queued by SendMessage, accepted by Meta, its
/// delivered status stored.
pub(super) struct Delivered {
    pub queued_ms: i64,
    pub accepted_ms: i64,
    pub delivered_ms: i64,
}

pub(super) struct Outcome {
    pub failed: u64,
    pub dead: u64,
    pub in_doubt: u64,
    pub undelivered: u64,
    pub meta_refused: u64,
}

/// The measured messages end to end: latency from the `SendMessage` call to the stored
/// delivered status; the rate over the time from the first call to the last delivery.
pub(super) fn end_to_end(sent: &Sent, delivered: &HashMap<i64, Delivered>) -> Measured {
    let mut measured = Measured::default();
    let first = sent.started_ms.values().min().copied().unwrap_or(0);
    let mut last = first;
    for (id, d) in delivered {
        if let Some(started) = sent.started_ms.get(id) {
            measured.ok += 1;
            measured.latencies.push(Duration::from_millis(
                (d.delivered_ms - started).max(0) as u64
            ));
            last = last.max(d.delivered_ms);
        }
    }
    measured.latencies.sort_unstable();
    measured.errors = sent.rpc.errors + (sent.started_ms.len() as u64 - measured.ok);
    measured.elapsed = Duration::from_millis((last - first).max(1) as u64);
    measured
}

/// p50 and p99 of some millisecond values.
pub(super) fn quantiles(values: impl Iterator<Item = i64>) -> (i64, i64) {
    let mut values: Vec<i64> = values.collect();
    if values.is_empty() {
        return (0, 0);
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_to_end_latency_runs_from_the_call_to_the_stored_delivery() {
        let sent = Sent {
            started_ms: HashMap::from([(1, 1_000), (2, 1_010), (3, 1_020)]),
            rpc: Measured::default(),
            queued: 3,
        };
        let delivered = HashMap::from([
            (
                1,
                Delivered {
                    queued_ms: 1_002,
                    accepted_ms: 1_005,
                    delivered_ms: 1_040,
                },
            ),
            (
                2,
                Delivered {
                    queued_ms: 1_012,
                    accepted_ms: 1_020,
                    delivered_ms: 1_110,
                },
            ),
        ]);
        let measured = end_to_end(&sent, &delivered);
        assert_eq!((measured.ok, measured.errors), (2, 1), "3 never delivered");
        assert_eq!(
            measured.latencies,
            [Duration::from_millis(40), Duration::from_millis(100)]
        );
        assert_eq!(measured.elapsed, Duration::from_millis(110));
        assert_eq!(quantiles([5, 1, 9].into_iter()), (5, 9));
    }
}
