//! The evaluator task: every `eval_interval` it reads the live window and rate-limit's usage,
//! judges each (kind, subject) ([`super::rule`]), and for each change writes the store first,
//! then publishes to the [`Hub`]. A change the store refused is not published, and the next
//! evaluation asks for it again. It starts from the alerts the store holds as firing, so a
//! restart neither fires them again nor forgets to resolve them; and for the first window
//! after start, an empty window (the consumer may still be catching up) resolves nothing.
//! Each usage rate-limit answers also goes to the [`PeakRecorder`], which keeps the peaks.
//!
//! Metrics: `wamesh_analytics_alerts_firing{kind}` (gauge, set at every evaluation) and
//! `wamesh_analytics_alerts_total{kind,state}` (counter; state `firing` or `resolved`).
use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use wamesh_runtime::Shutdown;

use super::peaks::PeakRecorder;
use super::rule::{Observation, Reading, Step, Track, observe_usage, observe_window};
use super::usage::UsageError;
use super::{Alert, AlertConfig, AlertKind, BucketUsage, Hub, NewAlert, RateLimitProbe};
use crate::live::Live;
use crate::rollup::Buckets;
use crate::store::{Store, StoreError};

/// One (kind, subject): its track, and its alert while it fires.
#[derive(Default)]
struct Watched {
    track: Track,
    alert: Option<Alert>,
}

pub struct Evaluator {
    store: Arc<dyn Store>,
    hub: Hub,
    live: Live,
    config: AlertConfig,
    /// Where rate-limit is; `None`: no RATE_LIMIT alerts (a firing one left from a run that
    /// had it resolves, as a bucket no longer listed does).
    probe: Option<RateLimitProbe>,
    watched: HashMap<(AlertKind, String), Watched>,
    /// Whether the last `GetUsage` failed, so a rate-limit outage is logged once.
    usage_failing: bool,
    /// When the first evaluation ran: until a whole window has passed since, the live window
    /// may be empty only because the consumer has not caught up.
    started_ms: Option<i64>,
    /// Keeps the highest usage of each rate-limit bucket per hour and day bucket.
    peaks: PeakRecorder,
}

impl Evaluator {
    /// An evaluator starting from the hub's firing alerts (those the store held at start);
    /// `buckets` (the aggregation interval) files the usage peaks it records.
    pub fn new(
        store: Arc<dyn Store>,
        hub: Hub,
        live: Live,
        config: AlertConfig,
        probe: Option<RateLimitProbe>,
        buckets: Buckets,
    ) -> Self {
        let watched = hub
            .firing()
            .into_iter()
            .map(|alert| {
                let key = (alert.kind, alert.subject.clone());
                let watched = Watched {
                    track: Track::firing(),
                    alert: Some(alert),
                };
                (key, watched)
            })
            .collect();
        Self {
            peaks: PeakRecorder::new(store.clone(), buckets),
            store,
            hub,
            live,
            config,
            probe,
            watched,
            usage_failing: false,
            started_ms: None,
        }
    }

    /// Evaluates every `eval_interval` until `shutdown`, then closes the hub (ending the alert
    /// streams) and writes the usage peaks not written yet.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut ticks = tokio::time::interval(self.config.eval_interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let usage = tokio::select! {
                () = shutdown.cancelled() => break,
                usage = self.usage() => usage,
            };
            self.evaluate(crate::now_ms(), usage.as_deref()).await;
        }
        self.hub.close();
        self.peaks.finish().await;
    }

    /// rate-limit's buckets; `None` when it could not be asked (logged when that begins and
    /// ends). Without a rate-limit URL, no buckets.
    async fn usage(&mut self) -> Option<Vec<BucketUsage>> {
        let Some(probe) = &self.probe else {
            return Some(Vec::new());
        };
        let answer = probe.usage().await;
        match (&answer, self.usage_failing) {
            (Err(e), false) => {
                let reason = match e {
                    UsageError::Call(status) => status.message().to_owned(),
                    UsageError::Degraded => e.to_string(),
                };
                tracing::warn!(error = %reason, "cannot read rate-limit's usage; RATE_LIMIT alerts keep their state until it answers");
            }
            (Ok(_), true) => tracing::info!("rate-limit's usage readable again"),
            _ => {}
        }
        self.usage_failing = answer.is_err();
        answer.ok()
    }

    /// One evaluation at `now_ms` (the run loop's step; tests call it with their own clock),
    /// with rate-limit's buckets (`None`: rate-limit could not be asked).
    pub async fn evaluate(&mut self, now_ms: i64, usage: Option<&[BucketUsage]>) {
        if let Some(usage) = usage {
            self.peaks.observe(now_ms, usage);
        }
        self.peaks.poll(now_ms).await;
        let window = self.live.window(now_ms);
        let mut observations = Vec::from(observe_window(&self.config, &window));
        let started_ms = *self.started_ms.get_or_insert(now_ms);
        if now_ms - started_ms < self.config.window_ms() {
            // Nothing seen yet is not evidence that nothing is failing.
            for o in &mut observations {
                if o.reading == Reading::Clear {
                    o.reading = Reading::Unknown;
                }
            }
        }
        let rate_limit_subjects: Vec<String> = self
            .watched
            .keys()
            .filter(|(kind, _)| *kind == AlertKind::RateLimit)
            .map(|(_, subject)| subject.clone())
            .collect();
        observations.extend(observe_usage(
            &self.config,
            usage,
            rate_limit_subjects.iter().map(String::as_str),
        ));
        for observation in observations {
            self.judge(observation, now_ms).await;
        }
        self.watched.retain(|_, w| !w.track.is_idle());
        for kind in AlertKind::ALL {
            let firing = self
                .watched
                .iter()
                .filter(|((k, _), w)| *k == kind && w.alert.is_some())
                .count();
            metrics::gauge!("wamesh_analytics_alerts_firing", "kind" => kind.as_str())
                .set(firing as f64);
        }
    }

    async fn judge(&mut self, o: Observation, now_ms: i64) {
        let key = (o.kind, o.subject.clone());
        let watched = self.watched.entry(key).or_default();
        match watched.track.observe(o.rule, o.reading) {
            Step::Hold => {
                if let (Some(alert), Some(value)) = (&mut watched.alert, o.reading.value())
                    && value > alert.peak
                {
                    match self.store.raise_alert_peak(alert.id, value).await {
                        Ok(()) => {
                            alert.peak = value;
                            self.hub.raise_peak(alert.id, value);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, id = alert.id, "cannot store an alert's peak; trying again at the next evaluation")
                        }
                    }
                }
            }
            Step::Fire => {
                let new = NewAlert {
                    kind: o.kind,
                    subject: o.subject,
                    value: o.reading.value().unwrap_or(o.rule.threshold),
                    threshold: o.rule.threshold,
                    fired_at_ms: now_ms,
                    summary: o.summary,
                };
                let fired = match self.store.insert_alert(&new).await {
                    Ok(id) => {
                        let alert = new.stored(id);
                        tracing::warn!(kind = alert.kind.as_str(), subject = %alert.subject, value = alert.value, summary = %alert.summary, "alert firing");
                        count(alert.kind, "firing");
                        alert
                    }
                    // Another replica fired it first: take that one as ours.
                    Err(StoreError::AlertFiring) => match adopt(&*self.store, &new).await {
                        Some(alert) => alert,
                        None => return,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, kind = new.kind.as_str(), subject = %new.subject, "cannot store a firing alert; trying again at the next evaluation");
                        return;
                    }
                };
                watched.track.confirm(Step::Fire);
                watched.alert = Some(fired.clone());
                self.hub.publish(fired);
            }
            Step::Resolve => {
                let Some(alert) = watched.alert.clone() else {
                    watched.track.confirm(Step::Resolve);
                    return;
                };
                // `false`: someone else resolved it already; resolved all the same.
                if let Err(e) = self.store.resolve_alert(alert.id, now_ms).await {
                    tracing::warn!(error = %e, id = alert.id, "cannot store an alert's resolution; trying again at the next evaluation");
                    return;
                }
                tracing::info!(kind = alert.kind.as_str(), subject = %alert.subject, peak = alert.peak, "alert resolved");
                count(alert.kind, "resolved");
                watched.track.confirm(Step::Resolve);
                watched.alert = None;
                self.hub.publish(Alert {
                    resolved_at_ms: Some(now_ms),
                    ..alert
                });
            }
        }
    }
}

/// The alert of `new`'s kind and subject that the store already holds as firing.
async fn adopt(store: &dyn Store, new: &NewAlert) -> Option<Alert> {
    match store.firing_alerts().await {
        Ok(firing) => {
            let found = firing
                .into_iter()
                .find(|a| a.kind == new.kind && a.subject == new.subject);
            if found.is_none() {
                tracing::warn!(kind = new.kind.as_str(), subject = %new.subject, "a firing alert was refused as a duplicate but none is firing now; trying again at the next evaluation");
            }
            found
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the firing alerts; trying again at the next evaluation");
            None
        }
    }
}

fn count(kind: AlertKind, state: &'static str) {
    metrics::counter!("wamesh_analytics_alerts_total", "kind" => kind.as_str(), "state" => state)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::event::{Event, EventKind};
    use crate::rollup::Grain;
    use crate::store::Selection;

    const T0: i64 = 1_800_000_000_000;
    const SECOND: i64 = 1_000;
    const HOUR: i64 = 3_600_000;

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

    fn sends(live: &Live, ok: usize, failed: usize, at_ms: i64) {
        let mut events = vec![event(EventKind::SendAccepted, at_ms); ok];
        events.extend(vec![event(EventKind::SendRetrying, at_ms); failed]);
        live.record(&events, &[], at_ms);
    }

    async fn store() -> Arc<dyn Store> {
        crate::store::open(&wamesh_testkit::fresh_sqlite_url(), 1)
            .await
            .expect("a SQLite store")
    }

    /// A 10-second window, as short as a test wants it.
    fn evaluator(store: &Arc<dyn Store>, live: &Live, hub: &Hub) -> Evaluator {
        let config = AlertConfig {
            window: Duration::from_secs(10),
            ..AlertConfig::default()
        };
        Evaluator::new(
            store.clone(),
            hub.clone(),
            live.clone(),
            config,
            None,
            Buckets { interval_ms: HOUR },
        )
    }

    async fn all_alerts(store: &Arc<dyn Store>) -> Vec<Alert> {
        store.list_alerts(false, 100).await.expect("list")
    }

    #[tokio::test]
    async fn an_alert_fires_once_is_stored_and_broadcast_keeps_its_peak_and_resolves_once() {
        let (store, live) = (store().await, Live::new(10_000));
        let hub = Hub::new(Vec::new());
        let mut changes = Box::pin(hub.subscribe());
        let mut evaluator = evaluator(&store, &live, &hub);
        // 10% of 30 attempts fail: fires at the second evaluation, once.
        sends(&live, 27, 3, T0);
        for t in 0..4 {
            evaluator.evaluate(T0 + t * SECOND, Some(&[])).await;
        }
        let stored = all_alerts(&store).await;
        assert_eq!(stored.len(), 1, "{stored:#?}");
        let fired = stored[0].clone();
        assert_eq!(
            (
                fired.kind,
                fired.subject.as_str(),
                fired.value,
                fired.threshold
            ),
            (AlertKind::ErrorRate, "all", 0.1, 0.05)
        );
        assert_eq!(
            (fired.fired_at_ms, fired.resolved_at_ms),
            (T0 + SECOND, None)
        );
        assert!(fired.summary.contains("3 of 30"), "{}", fired.summary);
        let change = changes.next().await.expect("a change").expect("no lag");
        assert_eq!(
            (change.alert.clone(), change.initial),
            (fired.clone(), false)
        );
        // Worse: the peak follows, in the store and the hub, without a new alert.
        sends(&live, 0, 10, T0 + 4 * SECOND);
        evaluator.evaluate(T0 + 4 * SECOND, Some(&[])).await;
        let stored = all_alerts(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].peak, 13.0 / 40.0);
        assert_eq!(hub.firing()[0].peak, 13.0 / 40.0);
        // The failures leave the window; clean sends come: resolved at the second evaluation.
        sends(&live, 40, 0, T0 + 16 * SECOND);
        for t in [16, 17, 18, 19] {
            evaluator.evaluate(T0 + t * SECOND, Some(&[])).await;
        }
        let stored = all_alerts(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].resolved_at_ms, Some(T0 + 17 * SECOND));
        let change = changes.next().await.expect("a change").expect("no lag");
        assert_eq!(change.alert.resolved_at_ms, Some(T0 + 17 * SECOND));
        assert!(hub.firing().is_empty());
        hub.close();
        assert!(changes.next().await.is_none(), "nothing more changed");
    }

    #[tokio::test]
    async fn a_restart_neither_fires_a_firing_alert_again_nor_forgets_it() {
        let (store, live) = (store().await, Live::new(10_000));
        sends(&live, 20, 10, T0);
        let hub = Hub::new(Vec::new());
        let mut first = evaluator(&store, &live, &hub);
        first.evaluate(T0, Some(&[])).await;
        first.evaluate(T0 + SECOND, Some(&[])).await;
        drop(first);
        // A new process: the hub and the evaluator start from the store.
        let hub = Hub::new(store.firing_alerts().await.expect("firing"));
        assert_eq!(hub.firing().len(), 1);
        let mut second = evaluator(&store, &live, &hub);
        for t in 2..5 {
            second.evaluate(T0 + t * SECOND, Some(&[])).await;
        }
        assert_eq!(all_alerts(&store).await.len(), 1, "not fired again");
        // Nothing in the window any more: resolved, the same alert.
        second.evaluate(T0 + 30 * SECOND, Some(&[])).await;
        second.evaluate(T0 + 31 * SECOND, Some(&[])).await;
        let stored = all_alerts(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].resolved_at_ms, Some(T0 + 31 * SECOND));
        assert!(hub.firing().is_empty());
    }

    #[tokio::test]
    async fn an_empty_window_right_after_start_resolves_nothing() {
        let store = store().await;
        let id = store
            .insert_alert(&NewAlert {
                kind: AlertKind::ErrorRate,
                subject: "all".into(),
                value: 0.5,
                threshold: 0.05,
                fired_at_ms: T0 - 60 * SECOND,
                summary: String::new(),
            })
            .await
            .expect("fired before the restart");
        let hub = Hub::new(store.firing_alerts().await.expect("firing"));
        let live = Live::new(10_000);
        let mut evaluator = evaluator(&store, &live, &hub);
        // Started at T0 with a 10 s window: nothing in it resolves nothing until T0 + 10 s.
        for t in 0..10 {
            evaluator.evaluate(T0 + t * SECOND, Some(&[])).await;
        }
        assert_eq!(hub.firing().len(), 1);
        evaluator.evaluate(T0 + 10 * SECOND, Some(&[])).await;
        evaluator.evaluate(T0 + 11 * SECOND, Some(&[])).await;
        let stored = all_alerts(&store).await;
        assert_eq!(
            (stored.len(), stored[0].id, stored[0].resolved_at_ms),
            (1, id, Some(T0 + 11 * SECOND))
        );
    }

    #[tokio::test]
    async fn rate_limit_alerts_follow_the_buckets_and_hold_while_rate_limit_is_unreachable() {
        let (store, live) = (store().await, Live::new(10_000));
        let hub = Hub::new(Vec::new());
        let mut evaluator = evaluator(&store, &live, &hub);
        let bucket = |ratio: f64| BucketUsage {
            scope: "waba".into(),
            key: "throughput:123".into(),
            usage_ratio: ratio,
        };
        evaluator.evaluate(T0, Some(&[bucket(0.8)])).await;
        evaluator.evaluate(T0 + SECOND, Some(&[bucket(0.85)])).await;
        let firing = hub.firing();
        assert_eq!(firing.len(), 1);
        assert_eq!(
            (firing[0].kind, firing[0].subject.as_str(), firing[0].value),
            (AlertKind::RateLimit, "waba/throughput:123", 0.85)
        );
        // rate-limit does not answer: nothing changes, however long.
        for t in 2..10 {
            evaluator.evaluate(T0 + t * SECOND, None).await;
        }
        assert_eq!(hub.firing().len(), 1);
        assert_eq!(all_alerts(&store).await.len(), 1);
        // The bucket is no longer listed: resolved.
        evaluator.evaluate(T0 + 10 * SECOND, Some(&[])).await;
        evaluator.evaluate(T0 + 11 * SECOND, Some(&[])).await;
        assert!(hub.firing().is_empty());
        let stored = all_alerts(&store).await;
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].resolved_at_ms, Some(T0 + 11 * SECOND));
    }

    /// The stored peaks of `grain`'s bucket holding `at_ms`, as (key, usage, at).
    async fn peaks_of(store: &Arc<dyn Store>, grain: Grain, at_ms: i64) -> Vec<(String, f64, i64)> {
        let start = Buckets { interval_ms: HOUR }.start(grain, at_ms);
        let selection = Selection {
            spans: vec![(grain, start, start + 1)],
            ..Selection::default()
        };
        let peaks = store.peaks(&selection, 0).await.expect("peaks");
        peaks
            .into_iter()
            .map(|p| (p.key, p.usage_ratio, p.at_ms))
            .collect()
    }

    #[tokio::test]
    async fn the_usage_rate_limit_answers_is_recorded_as_peaks_every_ten_seconds() {
        let (store, live) = (store().await, Live::new(10_000));
        let hub = Hub::new(Vec::new());
        let mut evaluator = evaluator(&store, &live, &hub);
        let bucket = |key: &str, ratio: f64| BucketUsage {
            scope: "waba".into(),
            key: key.into(),
            usage_ratio: ratio,
        };
        evaluator
            .evaluate(T0, Some(&[bucket("throughput:1", 0.5)]))
            .await;
        evaluator.peaks.settle().await;
        let first = vec![("throughput:1".to_owned(), 0.5, T0)];
        assert_eq!(peaks_of(&store, Grain::Hour, T0).await, first);
        assert_eq!(peaks_of(&store, Grain::Day, T0).await, first);
        // Higher within 10 s (and rate-limit once unreachable): kept in memory, written after.
        evaluator
            .evaluate(T0 + 3 * SECOND, Some(&[bucket("throughput:1", 0.95)]))
            .await;
        evaluator.evaluate(T0 + 4 * SECOND, None).await;
        evaluator
            .evaluate(T0 + 5 * SECOND, Some(&[bucket("pair:1:2", 0.25)]))
            .await;
        evaluator.peaks.settle().await;
        assert_eq!(peaks_of(&store, Grain::Hour, T0).await, first);
        evaluator.evaluate(T0 + 10 * SECOND, Some(&[])).await;
        evaluator.peaks.settle().await;
        let both = vec![
            ("throughput:1".to_owned(), 0.95, T0 + 3 * SECOND),
            ("pair:1:2".to_owned(), 0.25, T0 + 5 * SECOND),
        ];
        assert_eq!(peaks_of(&store, Grain::Hour, T0).await, both);
        assert_eq!(peaks_of(&store, Grain::Day, T0).await, both);
    }

    #[tokio::test]
    async fn the_task_evaluates_on_its_interval_and_ends_the_streams_at_shutdown() {
        let (store, live) = (store().await, Live::new(10_000));
        let hub = Hub::new(Vec::new());
        let mut changes = Box::pin(hub.subscribe());
        let shutdown = Shutdown::new();
        let mut evaluator = evaluator(&store, &live, &hub);
        evaluator.config.eval_interval = Duration::from_millis(50);
        let task = tokio::spawn(evaluator.run(shutdown.clone()));
        // Failures now, by the wall clock the task reads.
        sends(&live, 20, 20, crate::now_ms());
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("fired within 10 s")
            .expect("a change")
            .expect("no lag");
        assert_eq!(change.alert.kind, AlertKind::ErrorRate);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the evaluator stops at shutdown")
            .expect("without panicking");
        assert!(changes.next().await.is_none(), "the stream ended");
    }
}
