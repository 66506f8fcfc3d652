//! Rate-limit usage peaks kept per hour and day bucket: only ever raised (whatever the order
//! of writers), read merged to the highest per bucket across a range's spans, sorted, and
//! purged with the rollups. The same answers from both backends.
use std::sync::Arc;

use wamesh_analytics::query::Range;
use wamesh_analytics::rollup::{Buckets, DAY_MS, Grain};
use wamesh_analytics::store::peaks::UsagePeak;
use wamesh_analytics::store::{Selection, Store};

conformance!(
    a_lower_observation_never_lowers_a_peak,
    concurrent_writers_end_with_the_highest,
    hour_and_day_buckets_keep_their_own_peaks,
    a_range_merges_the_highest_across_its_spans,
    peaks_sort_by_usage_then_scope_and_key_and_are_limited,
    purge_removes_the_peaks_older_than_the_cutoff_and_nothing_else,
);

const HOUR: i64 = 3_600_000;
/// 2025-11-30 00:00 UTC.
const DAY: i64 = 20_422 * DAY_MS;
const BUCKETS: Buckets = Buckets { interval_ms: HOUR };

fn seen(scope: &str, key: &str, usage_ratio: f64, at_ms: i64) -> UsagePeak {
    UsagePeak {
        scope: scope.into(),
        key: key.into(),
        usage_ratio,
        at_ms,
    }
}

/// `seen` of scope `waba`.
fn waba(key: &str, usage_ratio: f64, at_ms: i64) -> UsagePeak {
    seen("waba", key, usage_ratio, at_ms)
}

async fn record(store: &dyn Store, observations: &[UsagePeak]) {
    store
        .record_peaks(BUCKETS, observations)
        .await
        .expect("record peaks");
}

/// The peaks of one span, all of them.
async fn peaks(store: &dyn Store, grain: Grain, from_ms: i64, to_ms: i64) -> Vec<UsagePeak> {
    let selection = Selection {
        spans: vec![(grain, from_ms, to_ms)],
        ..Selection::default()
    };
    store.peaks(&selection, 0).await.expect("peaks")
}

async fn a_lower_observation_never_lowers_a_peak(store: Arc<dyn Store>) {
    let at = DAY + 10 * HOUR;
    record(&*store, &[waba("throughput:1", 0.7, at + 1_000)]).await;
    record(&*store, &[waba("throughput:1", 0.4, at + 2_000)]).await;
    // As high but later: the first time it was reached stays.
    record(&*store, &[waba("throughput:1", 0.7, at + 3_000)]).await;
    // Lower and earlier, in a batch with a lower one: still nothing changes.
    record(
        &*store,
        &[
            waba("throughput:1", 0.1, at),
            waba("throughput:1", 0.69, at + 4_000),
        ],
    )
    .await;
    let expected = [waba("throughput:1", 0.7, at + 1_000)];
    assert_eq!(peaks(&*store, Grain::Hour, at, at + HOUR).await, expected);
    assert_eq!(
        peaks(&*store, Grain::Day, DAY, DAY + DAY_MS).await,
        expected
    );
    // Higher raises it, time and all; as high and earlier moves only the time.
    record(&*store, &[waba("throughput:1", 0.9, at + 5_000)]).await;
    let raised = [waba("throughput:1", 0.9, at + 5_000)];
    assert_eq!(peaks(&*store, Grain::Hour, at, at + HOUR).await, raised);
    record(&*store, &[waba("throughput:1", 0.9, at + 500)]).await;
    let earlier = [waba("throughput:1", 0.9, at + 500)];
    assert_eq!(peaks(&*store, Grain::Hour, at, at + HOUR).await, earlier);
    assert_eq!(peaks(&*store, Grain::Day, DAY, DAY + DAY_MS).await, earlier);
    // An idle bucket, or a ratio that is not a number, is no peak.
    record(
        &*store,
        &[waba("pair:1:2", 0.0, at), waba("pair:1:3", f64::NAN, at)],
    )
    .await;
    assert_eq!(peaks(&*store, Grain::Hour, at, at + HOUR).await, earlier);
}

async fn concurrent_writers_end_with_the_highest(store: Arc<dyn Store>) {
    let at = DAY + HOUR;
    // 20 writers at once, the highest neither first nor last.
    let writers = (0..20_i64).map(|i| {
        let store = store.clone();
        let ratio = ((i * 7) % 20 + 1) as f64 / 20.0;
        async move {
            record(&*store, &[waba("throughput:1", ratio, at + i)]).await;
        }
    });
    futures::future::join_all(writers).await;
    let highest = (0..20_i64).find(|i| (i * 7) % 20 == 19).unwrap();
    let expected = [waba("throughput:1", 1.0, at + highest)];
    assert_eq!(peaks(&*store, Grain::Hour, at, at + HOUR).await, expected);
    assert_eq!(
        peaks(&*store, Grain::Day, DAY, DAY + DAY_MS).await,
        expected
    );
}

async fn hour_and_day_buckets_keep_their_own_peaks(store: Arc<dyn Store>) {
    record(
        &*store,
        &[
            waba("throughput:1", 0.3, DAY + HOUR + 5),
            waba("throughput:1", 0.8, DAY + 2 * HOUR + 5),
            waba("throughput:1", 0.5, DAY + 3 * HOUR + 5),
            waba("throughput:1", 0.6, DAY + DAY_MS + 5),
        ],
    )
    .await;
    let hour = |h: i64, ratio: f64| vec![waba("throughput:1", ratio, DAY + h * HOUR + 5)];
    assert_eq!(
        peaks(&*store, Grain::Hour, DAY + HOUR, DAY + 2 * HOUR).await,
        hour(1, 0.3)
    );
    assert_eq!(
        peaks(&*store, Grain::Hour, DAY + 3 * HOUR, DAY + 4 * HOUR).await,
        hour(3, 0.5)
    );
    assert!(
        peaks(&*store, Grain::Hour, DAY, DAY + HOUR)
            .await
            .is_empty()
    );
    assert_eq!(
        peaks(&*store, Grain::Day, DAY, DAY + 1).await,
        hour(2, 0.8),
        "the day holds the highest of its hours"
    );
    assert_eq!(
        peaks(&*store, Grain::Day, DAY + DAY_MS, DAY + 2 * DAY_MS).await,
        [waba("throughput:1", 0.6, DAY + DAY_MS + 5)]
    );
    // Another aggregation interval files the same moment under its own hour bucket.
    let quarters = Buckets {
        interval_ms: 15 * 60_000,
    };
    store
        .record_peaks(
            quarters,
            &[waba("pair:1:2", 0.4, DAY + 5 * HOUR + 20 * 60_000)],
        )
        .await
        .unwrap();
    let quarter = DAY + 5 * HOUR + 15 * 60_000;
    assert_eq!(
        peaks(&*store, Grain::Hour, quarter, quarter + 1).await,
        [waba("pair:1:2", 0.4, DAY + 5 * HOUR + 20 * 60_000)]
    );
}

async fn a_range_merges_the_highest_across_its_spans(store: Arc<dyn Store>) {
    // From 21:00 the day before DAY to 05:00 two days after it: DAY and DAY + 1 read from
    // the daily peaks, the edges from the hourly ones.
    let range = Range::custom(DAY - 3 * HOUR, DAY + 2 * DAY_MS + 5 * HOUR, HOUR).unwrap();
    assert_eq!(range.spans().len(), 3);
    record(
        &*store,
        &[
            // a: highest in the first edge hour.
            waba("a", 0.9, DAY - 2 * HOUR),
            waba("a", 0.5, DAY + 3 * HOUR),
            waba("a", 0.6, DAY + DAY_MS + 3 * HOUR),
            // b: highest in a whole day.
            waba("b", 0.3, DAY - HOUR),
            waba("b", 0.7, DAY + DAY_MS + 8 * HOUR),
            waba("b", 0.2, DAY + 2 * DAY_MS + HOUR),
            // c: highest in the last edge hour.
            waba("c", 0.1, DAY + 10 * HOUR),
            waba("c", 0.8, DAY + 2 * DAY_MS + 4 * HOUR),
            // Outside the range (its hour and its day bucket both): never read.
            waba("a", 1.0, DAY - 4 * HOUR),
            waba("b", 1.0, DAY + 2 * DAY_MS + 6 * HOUR),
            waba("d", 1.0, DAY + 2 * DAY_MS + 5 * HOUR),
        ],
    )
    .await;
    let selection = Selection {
        spans: range.spans(),
        // Filters of message rollups do not apply to rate-limit buckets.
        number: Some("106540352242922".into()),
        ..Selection::default()
    };
    assert_eq!(
        store.peaks(&selection, 0).await.unwrap(),
        [
            waba("a", 0.9, DAY - 2 * HOUR),
            waba("c", 0.8, DAY + 2 * DAY_MS + 4 * HOUR),
            waba("b", 0.7, DAY + DAY_MS + 8 * HOUR),
        ]
    );
    // The overview reads the same.
    let overview = wamesh_analytics::query::overview(&*store, range, None)
        .await
        .unwrap();
    assert_eq!(
        overview.rate_limit_peaks,
        store.peaks(&selection, 0).await.unwrap()
    );
}

async fn peaks_sort_by_usage_then_scope_and_key_and_are_limited(store: Arc<dyn Store>) {
    let at = DAY + HOUR;
    record(
        &*store,
        &[
            seen("waba", "tier:1", 0.5, at),
            seen("app", "graph:9", 0.5, at),
            seen("waba", "pair:1:2", 0.5, at),
            seen("waba", "throughput:1", 0.95, at),
            seen("app", "graph:1", 0.2, at),
        ],
    )
    .await;
    let order = |list: Vec<UsagePeak>| -> Vec<String> {
        list.into_iter()
            .map(|p| format!("{}/{}", p.scope, p.key))
            .collect()
    };
    let selection = Selection {
        spans: vec![(Grain::Hour, at, at + HOUR)],
        ..Selection::default()
    };
    assert_eq!(
        order(store.peaks(&selection, 0).await.unwrap()),
        [
            "waba/throughput:1",
            "app/graph:9",
            "waba/pair:1:2",
            "waba/tier:1",
            "app/graph:1"
        ]
    );
    assert_eq!(
        order(store.peaks(&selection, 2).await.unwrap()),
        ["waba/throughput:1", "app/graph:9"]
    );
    // The same key in two scopes is two buckets.
    record(&*store, &[seen("other", "throughput:1", 0.95, at)]).await;
    assert_eq!(
        order(store.peaks(&selection, 2).await.unwrap()),
        ["other/throughput:1", "waba/throughput:1"]
    );
}

async fn purge_removes_the_peaks_older_than_the_cutoff_and_nothing_else(store: Arc<dyn Store>) {
    record(
        &*store,
        &[
            waba("throughput:1", 0.9, DAY - DAY_MS + HOUR),
            waba("throughput:1", 0.4, DAY - HOUR),
            waba("throughput:1", 0.6, DAY + HOUR),
        ],
    )
    .await;
    // Before DAY: two hour rows and one day row.
    let purged = store.purge(DAY).await.unwrap();
    assert_eq!(purged.rollups, 3, "{purged:?}");
    let all = Selection {
        spans: vec![
            (Grain::Hour, DAY - 10 * DAY_MS, DAY + 10 * DAY_MS),
            (Grain::Day, DAY - 10 * DAY_MS, DAY + 10 * DAY_MS),
        ],
        ..Selection::default()
    };
    assert_eq!(
        store.peaks(&all, 0).await.unwrap(),
        [waba("throughput:1", 0.6, DAY + HOUR)]
    );
    assert_eq!(
        peaks(&*store, Grain::Day, DAY, DAY + 1).await,
        [waba("throughput:1", 0.6, DAY + HOUR)],
        "the day from the cutoff on is kept"
    );
    assert_eq!(store.purge(DAY).await.unwrap().rollups, 0);
}
