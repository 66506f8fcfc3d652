//! The firing alerts and the broadcast of their changes: the evaluator publishes, each
//! `StreamAlerts` call subscribes. Subscribing takes the firing alerts and a receiver under the
//! same lock publishing takes, so a subscriber sees every alert exactly once: in the snapshot
//! or as a change after it, never both, never neither.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::broadcast;

use super::Alert;

/// Changes a subscriber may fall behind by before its stream ends with [`Lagged`].
pub const CHANGES_BUFFER: usize = 256;

/// One item of an alert stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    pub alert: Alert,
    /// Part of the firing alerts sent first, not a change.
    pub initial: bool,
}

/// A subscriber fell this many changes behind; its stream ends rather than skip them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this alert stream fell {0} changes behind and was closed; call StreamAlerts again to get the firing alerts anew"
)]
pub struct Lagged(pub u64);

/// Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    /// By id (ids grow with time): oldest first.
    firing: BTreeMap<i64, Alert>,
    /// `None` once closed (shutdown): streams end.
    changes: Option<broadcast::Sender<Alert>>,
}

impl Hub {
    /// A hub of these firing alerts (those the store holds at start).
    pub fn new(firing: Vec<Alert>) -> Self {
        let (changes, _) = broadcast::channel(CHANGES_BUFFER);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                firing: firing
                    .into_iter()
                    .filter(Alert::is_firing)
                    .map(|a| (a.id, a))
                    .collect(),
                changes: Some(changes),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The firing alerts, oldest first.
    pub fn firing(&self) -> Vec<Alert> {
        self.lock().firing.values().cloned().collect()
    }

    /// An alert fired or resolved: the firing set follows, subscribers are told.
    pub fn publish(&self, alert: Alert) {
        let mut inner = self.lock();
        if alert.is_firing() {
            inner.firing.insert(alert.id, alert.clone());
        } else {
            inner.firing.remove(&alert.id);
        }
        if let Some(changes) = &inner.changes {
            // No subscriber is not an error.
            let _ = changes.send(alert);
        }
    }

    /// A firing alert's peak rose: kept for the next snapshots, not broadcast as a change.
    pub fn raise_peak(&self, id: i64, peak: f64) {
        if let Some(alert) = self.lock().firing.get_mut(&id) {
            alert.peak = alert.peak.max(peak);
        }
    }

    /// Ends every subscriber's stream (after what it was already sent); later subscribers get
    /// the snapshot only.
    pub fn close(&self) {
        self.lock().changes = None;
    }

    /// The firing alerts (`initial`), then each change as it is published, until the hub
    /// closes; a subscriber that falls [`CHANGES_BUFFER`] changes behind gets [`Lagged`] and
    /// nothing more.
    pub fn subscribe(&self) -> impl Stream<Item = Result<AlertChange, Lagged>> + Send + 'static {
        let (snapshot, receiver) = {
            let inner = self.lock();
            let snapshot: Vec<Alert> = inner.firing.values().cloned().collect();
            (snapshot, inner.changes.as_ref().map(|c| c.subscribe()))
        };
        let initial = futures::stream::iter(snapshot.into_iter().map(|alert| {
            Ok(AlertChange {
                alert,
                initial: true,
            })
        }));
        let live = futures::stream::unfold(receiver, |receiver| async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Ok(alert) => Some((
                    Ok(AlertChange {
                        alert,
                        initial: false,
                    }),
                    Some(receiver),
                )),
                Err(broadcast::error::RecvError::Lagged(n)) => Some((Err(Lagged(n)), None)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        futures::StreamExt::chain(initial, live)
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::alerts::AlertKind;

    fn alert(id: i64, resolved_at_ms: Option<i64>) -> Alert {
        Alert {
            id,
            kind: AlertKind::RateLimit,
            subject: format!("scope/key{id}"),
            value: 0.9,
            peak: 0.9,
            threshold: 0.8,
            fired_at_ms: id,
            resolved_at_ms,
            summary: String::new(),
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_firing_alerts_then_each_change_then_the_end() {
        let hub = Hub::new(vec![alert(1, None), alert(2, None)]);
        hub.raise_peak(2, 0.95);
        let mut stream = Box::pin(hub.subscribe());
        hub.publish(alert(3, None));
        hub.publish(alert(1, Some(10)));
        hub.close();
        let got: Vec<(i64, bool, bool)> = (&mut stream)
            .map(|c| {
                let c = c.expect("no lag");
                (c.alert.id, c.alert.is_firing(), c.initial)
            })
            .collect()
            .await;
        assert_eq!(
            got,
            [
                (1, true, true),
                (2, true, true),
                (3, true, false),
                (1, false, false)
            ]
        );
        let firing: Vec<(i64, f64)> = hub.firing().iter().map(|a| (a.id, a.peak)).collect();
        assert_eq!(firing, [(2, 0.95), (3, 0.9)]);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_an_error_and_nothing_more() {
        let hub = Hub::new(Vec::new());
        let mut stream = Box::pin(hub.subscribe());
        for id in 0..(CHANGES_BUFFER as i64 + 10) {
            hub.publish(alert(id, None));
        }
        let first = stream.next().await.expect("an item");
        assert_eq!(first, Err(Lagged(10)));
        assert!(stream.next().await.is_none(), "the stream ends");
    }
}
