//! Alerts kept: fired, their peak raised, resolved once, listed newest first; at most one
//! firing per (kind, subject), enforced by the database itself. The same answers from both
//! backends.
use std::sync::Arc;

use wamesh_analytics::alerts::{Alert, AlertKind, NewAlert};
use wamesh_analytics::store::{Store, StoreError};

conformance!(
    a_fired_alert_is_stored_whole_and_firing,
    a_second_firing_alert_of_a_kind_and_subject_is_refused,
    the_peak_only_rises_and_only_while_firing,
    an_alert_resolves_once,
    alerts_list_newest_first_firing_only_and_limited,
);

const T0: i64 = 1_800_000_000_000;

fn new(kind: AlertKind, subject: &str, value: f64, fired_at_ms: i64) -> NewAlert {
    NewAlert {
        kind,
        subject: subject.into(),
        value,
        threshold: 0.05,
        fired_at_ms,
        summary: format!("{} of {subject} at {value}", kind.as_str()),
    }
}

async fn fire(store: &dyn Store, alert: &NewAlert) -> Alert {
    let id = store.insert_alert(alert).await.expect("fired");
    alert.clone().stored(id)
}

async fn a_fired_alert_is_stored_whole_and_firing(store: Arc<dyn Store>) {
    let fired = fire(&*store, &new(AlertKind::ErrorRate, "all", 0.125, T0)).await;
    let rate = fire(
        &*store,
        &new(AlertKind::RateLimit, "waba/pair:1:2", 0.9, T0 + 1),
    )
    .await;
    assert_ne!(fired.id, rate.id);
    let listed = store.list_alerts(false, 10).await.unwrap();
    assert_eq!(listed, [rate.clone(), fired.clone()]);
    assert_eq!(
        (
            listed[1].peak,
            listed[1].resolved_at_ms,
            listed[1].summary.as_str()
        ),
        (0.125, None, "error_rate of all at 0.125")
    );
    assert_eq!(store.firing_alerts().await.unwrap(), [fired, rate]);
}

async fn a_second_firing_alert_of_a_kind_and_subject_is_refused(store: Arc<dyn Store>) {
    let first = fire(&*store, &new(AlertKind::ErrorRate, "all", 0.1, T0)).await;
    let again = store
        .insert_alert(&new(AlertKind::ErrorRate, "all", 0.2, T0 + 1_000))
        .await;
    assert!(matches!(again, Err(StoreError::AlertFiring)), "{again:?}");
    // Another kind, or another subject, is another alert.
    fire(
        &*store,
        &new(AlertKind::ResponseTime, "all", 4_000.0, T0 + 2_000),
    )
    .await;
    fire(
        &*store,
        &new(AlertKind::RateLimit, "waba/throughput:1", 0.8, T0 + 3_000),
    )
    .await;
    fire(
        &*store,
        &new(AlertKind::RateLimit, "waba/throughput:2", 0.8, T0 + 4_000),
    )
    .await;
    assert_eq!(store.list_alerts(false, 10).await.unwrap().len(), 4);
    // Once resolved, it may fire again: a new alert, the old one kept as history.
    assert!(store.resolve_alert(first.id, T0 + 5_000).await.unwrap());
    let second = fire(&*store, &new(AlertKind::ErrorRate, "all", 0.3, T0 + 6_000)).await;
    assert_ne!(second.id, first.id);
    let errors: Vec<(i64, bool)> = store
        .list_alerts(false, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == AlertKind::ErrorRate)
        .map(|a| (a.id, a.is_firing()))
        .collect();
    assert_eq!(errors, [(second.id, true), (first.id, false)]);
}

async fn the_peak_only_rises_and_only_while_firing(store: Arc<dyn Store>) {
    let alert = fire(&*store, &new(AlertKind::ErrorRate, "all", 0.1, T0)).await;
    store.raise_alert_peak(alert.id, 0.3).await.unwrap();
    store.raise_alert_peak(alert.id, 0.2).await.unwrap();
    let peak = |alerts: Vec<Alert>| alerts[0].peak;
    assert_eq!(peak(store.firing_alerts().await.unwrap()), 0.3);
    assert!(store.resolve_alert(alert.id, T0 + 1_000).await.unwrap());
    store.raise_alert_peak(alert.id, 0.9).await.unwrap();
    let stored = store.list_alerts(false, 1).await.unwrap();
    assert_eq!((stored[0].value, stored[0].peak), (0.1, 0.3));
}

async fn an_alert_resolves_once(store: Arc<dyn Store>) {
    let alert = fire(&*store, &new(AlertKind::ResponseTime, "all", 3_500.0, T0)).await;
    assert!(store.resolve_alert(alert.id, T0 + 10_000).await.unwrap());
    assert!(
        !store.resolve_alert(alert.id, T0 + 20_000).await.unwrap(),
        "resolved already"
    );
    assert!(
        !store.resolve_alert(alert.id + 1_000, T0).await.unwrap(),
        "no such alert"
    );
    let stored = store.list_alerts(false, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].resolved_at_ms,
        Some(T0 + 10_000),
        "the first resolution stays"
    );
    assert!(store.firing_alerts().await.unwrap().is_empty());
}

async fn alerts_list_newest_first_firing_only_and_limited(store: Arc<dyn Store>) {
    let mut fired = Vec::new();
    for i in 0..5 {
        let subject = format!("waba/throughput:{i}");
        // Fired out of order: the list follows the firing time, not the id.
        let at = T0 + [3, 1, 4, 0, 2][i] * 1_000;
        fired.push(fire(&*store, &new(AlertKind::RateLimit, &subject, 0.8, at)).await);
    }
    store.resolve_alert(fired[2].id, T0 + 9_000).await.unwrap();
    store.resolve_alert(fired[3].id, T0 + 9_000).await.unwrap();
    let ids = |alerts: Vec<Alert>| alerts.iter().map(|a| a.id).collect::<Vec<_>>();
    let id = |i: usize| fired[i].id;
    assert_eq!(
        ids(store.list_alerts(false, 100).await.unwrap()),
        [id(2), id(0), id(4), id(1), id(3)]
    );
    assert_eq!(
        ids(store.list_alerts(false, 2).await.unwrap()),
        [id(2), id(0)]
    );
    assert_eq!(
        ids(store.list_alerts(true, 100).await.unwrap()),
        [id(0), id(4), id(1)]
    );
    assert_eq!(ids(store.list_alerts(true, 1).await.unwrap()), [id(0)]);
    assert_eq!(
        ids(store.firing_alerts().await.unwrap()),
        [id(1), id(4), id(0)],
        "oldest first"
    );
}
