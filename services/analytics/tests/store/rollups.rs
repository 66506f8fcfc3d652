//! Counting batches into rollups, reading them back, and purging them: the same answers from
//! both backends.
use std::sync::Arc;

use wamesh_analytics::apply::{State, apply, needs};
use wamesh_analytics::event::{Event, EventKind};
use wamesh_analytics::query::{self, Range};
use wamesh_analytics::rollup::{ALL_TEMPLATES, Buckets, DAY_MS, Grain};
use wamesh_analytics::store::{Commit, Cursor, GroupBy, Selection, Store, StoreError};

conformance!(
    a_batch_commits_with_its_cursor_and_is_remembered,
    a_batch_from_a_moved_cursor_changes_nothing,
    sums_group_and_filter_the_same_from_days_or_hours,
    sketches_merge_across_batches,
    purge_removes_what_is_older_and_nothing_else,
);

const HOUR: i64 = 3_600_000;
/// 2025-11-30 00:00 UTC.
const DAY: i64 = 20_422 * DAY_MS;
const NUMBER: &str = "106540352242922";
const BUCKETS: Buckets = Buckets { interval_ms: HOUR };

fn event(seq: i64, kind: EventKind, at_ms: i64) -> Event {
    Event {
        seq,
        kind,
        at_ms,
        number: NUMBER.into(),
        user: 42,
        wamid: String::new(),
        outbound_id: 0,
        message_type: "text".into(),
        status: String::new(),
        error_code: 0,
        template: String::new(),
        pricing_category: String::new(),
        timestamp_s: 0,
        context_wamid: String::new(),
        reply_id: String::new(),
    }
}

/// A user writes at `at`; we answer 2 s later with template `order_update` (outbound `id`),
/// delivered 1.5 s after; the user replies to it with a button.
fn turn(seq: i64, id: i64, at: i64, user: u64) -> Vec<Event> {
    let wamid_in = format!("wamid.IN{id}");
    let wamid_out = format!("wamid.OUT{id}");
    let mut received = event(seq, EventKind::MessageReceived, at);
    received.wamid = wamid_in;
    let mut accepted = event(seq + 1, EventKind::SendAccepted, at + 2_000);
    accepted.outbound_id = id;
    accepted.wamid = wamid_out.clone();
    accepted.message_type = "template".into();
    accepted.template = "order_update".into();
    let mut delivered = event(seq + 2, EventKind::StatusUpdated, at + 3_500);
    delivered.outbound_id = id;
    delivered.wamid = wamid_out.clone();
    delivered.status = "delivered".into();
    delivered.pricing_category = "utility".into();
    let mut reply = event(seq + 3, EventKind::MessageReceived, at + 60_000);
    reply.wamid = format!("wamid.RE{id}");
    reply.message_type = "button".into();
    reply.context_wamid = wamid_out;
    reply.reply_id = "track".into();
    let mut all = vec![received, accepted, delivered, reply];
    for e in &mut all {
        e.user = user;
    }
    all
}

/// Counts `events` as the consumer does and commits them from `from`.
async fn count(store: &dyn Store, from: Cursor, events: &[Event]) -> Result<Cursor, StoreError> {
    let (facts, users) = store.load(&needs(events)).await?;
    let mut state = State::new(facts, users);
    let mut rollups = apply(BUCKETS, events, &mut state);
    rollups.responses.clear();
    let (facts, users) = state.into_changed();
    store
        .commit(Commit {
            from,
            to_seq: events.last().map_or(from.seq, |e| e.seq),
            events: events.len() as i64,
            facts,
            users,
            rollups,
        })
        .await
}

fn day_selection() -> Selection {
    Selection {
        spans: vec![(Grain::Day, DAY, DAY + DAY_MS)],
        ..Selection::default()
    }
}

async fn totals(store: &dyn Store, selection: &Selection) -> Vec<i64> {
    let sums = store
        .message_sums(selection, GroupBy::default())
        .await
        .unwrap();
    let c = sums.first().map(|s| s.counts).unwrap_or_default();
    vec![
        c.messages_in,
        c.messages_out,
        c.delivered,
        c.read,
        c.failed,
        c.rejected,
        c.replied,
        c.clicked,
    ]
}

async fn a_batch_commits_with_its_cursor_and_is_remembered(store: Arc<dyn Store>) {
    assert_eq!(store.cursor().await.unwrap(), Cursor::default());
    let key = store.hash_key().await.unwrap();
    assert_eq!(key.len(), 32, "a random key made with the store");
    assert_eq!(store.hash_key().await.unwrap(), key, "and kept");

    let events = turn(1, 7, DAY + 10 * HOUR, 42);
    // In two batches, the second needing what the first remembered (the fact of the reply's
    // context, the user's turn).
    let cursor = count(&*store, Cursor::default(), &events[..2])
        .await
        .unwrap();
    assert_eq!(
        cursor,
        Cursor {
            seq: 2,
            events_applied: 2
        }
    );
    let cursor = count(&*store, cursor, &events[2..]).await.unwrap();
    assert_eq!(cursor.seq, 4);
    assert_eq!(store.cursor().await.unwrap(), cursor);

    let (facts, users) = store.load(&needs(&events)).await.unwrap();
    let ours = facts
        .iter()
        .find(|f| f.key == "o:7")
        .expect("the send's fact");
    assert_eq!(ours.wamid.as_deref(), Some("wamid.OUT7"));
    assert_eq!(ours.template, "order_update");
    assert_eq!(ours.pricing_category, "utility");
    assert_eq!(ours.at_ms, Some(DAY + 10 * HOUR + 2_000));
    assert_eq!(ours.delivered_ms, Some(DAY + 10 * HOUR + 3_500));
    assert!(ours.replied && ours.clicked);
    assert_eq!(facts.len(), 3, "two messages in, one out");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].session_last_ms, DAY + 10 * HOUR + 60_000);

    // in, out, delivered, read, failed, rejected, replied, clicked
    assert_eq!(
        totals(&*store, &day_selection()).await,
        [2, 1, 1, 0, 0, 0, 1, 1]
    );
}

async fn a_batch_from_a_moved_cursor_changes_nothing(store: Arc<dyn Store>) {
    let events = turn(1, 1, DAY, 42);
    let cursor = count(&*store, Cursor::default(), &events).await.unwrap();
    let before = totals(&*store, &day_selection()).await;
    // A second consumer that read from 0 too: refused, nothing counted twice.
    let stale = count(&*store, Cursor::default(), &events).await;
    assert!(matches!(stale, Err(StoreError::CursorMoved)), "{stale:?}");
    assert_eq!(totals(&*store, &day_selection()).await, before);
    assert_eq!(store.cursor().await.unwrap(), cursor);
}

async fn sums_group_and_filter_the_same_from_days_or_hours(store: Arc<dyn Store>) {
    let mut events = turn(1, 1, DAY + HOUR, 1);
    events.extend(turn(5, 2, DAY + 5 * HOUR, 2));
    // A send refused by Meta (template missing), and one that failed after it was sent.
    let mut refused = event(9, EventKind::SendFailed, DAY + 6 * HOUR);
    refused.outbound_id = 3;
    refused.template = "promo".into();
    refused.message_type = "template".into();
    refused.error_code = 132_001;
    let mut sent = event(10, EventKind::SendAccepted, DAY + 7 * HOUR);
    sent.outbound_id = 4;
    sent.wamid = "wamid.F".into();
    let mut failed = event(11, EventKind::StatusUpdated, DAY + 7 * HOUR + 1);
    failed.wamid = "wamid.F".into(); // no callback data: found by its wamid
    failed.status = "failed".into();
    failed.error_code = 131_026;
    events.extend([refused, sent, failed]);
    // Another number's message.
    let mut other = event(12, EventKind::MessageReceived, DAY + 8 * HOUR);
    other.number = "999".into();
    other.wamid = "wamid.O".into();
    events.push(other);
    count(&*store, Cursor::default(), &events).await.unwrap();

    let by_day = day_selection();
    let by_hour = Selection {
        spans: vec![(Grain::Hour, DAY, DAY + DAY_MS)],
        ..Selection::default()
    };
    let all = totals(&*store, &by_day).await;
    assert_eq!(all, [5, 3, 2, 0, 2, 1, 2, 2]);
    assert_eq!(
        totals(&*store, &by_hour).await,
        all,
        "a day is the sum of its hours"
    );

    let one_number = Selection {
        number: Some(NUMBER.into()),
        ..by_day.clone()
    };
    assert_eq!(totals(&*store, &one_number).await[0], 4);
    let outbound = Selection {
        direction: Some("outbound".into()),
        ..by_day.clone()
    };
    assert_eq!(totals(&*store, &outbound).await[0], 0);

    let by_code = store
        .message_sums(
            &by_day,
            GroupBy {
                error_code: true,
                ..GroupBy::default()
            },
        )
        .await
        .unwrap();
    let mut failures: Vec<(i64, i64)> = by_code
        .iter()
        .filter(|s| s.counts.failed > 0)
        .map(|s| (s.error_code, s.counts.failed))
        .collect();
    failures.sort();
    assert_eq!(failures, [(131_026, 1), (132_001, 1)]);

    let by_bucket = store
        .message_sums(
            &by_hour,
            GroupBy {
                bucket: true,
                ..GroupBy::default()
            },
        )
        .await
        .unwrap();
    let mut hours: Vec<(i64, i64)> = by_bucket
        .iter()
        .map(|s| ((s.bucket_ms - DAY) / HOUR, s.counts.messages_in))
        .collect();
    hours.sort();
    assert_eq!(hours, [(1, 2), (5, 2), (6, 0), (7, 0), (8, 1)]);

    let templates = query::templates(
        &*store,
        Range::custom(DAY, DAY + DAY_MS, HOUR).unwrap(),
        None,
        "sent",
        false,
        0,
    )
    .await
    .unwrap()
    .unwrap();
    let names: Vec<&str> = templates.iter().map(|t| t.template.as_str()).collect();
    assert_eq!(names, ["order_update", "promo"]);
    assert_eq!(templates[0].counts.messages_out, 2);
    assert_eq!(templates[0].counts.clicked, 2);
    assert_eq!(templates[1].failures_by_code, [(132_001, 1)]);
}

async fn sketches_merge_across_batches(store: Arc<dyn Store>) {
    // Two users, each answered after 2 s and delivered 1.5 s after sending, in two batches.
    let first = turn(1, 1, DAY + HOUR, 1);
    let second = turn(5, 2, DAY + HOUR + 10_000, 2);
    let cursor = count(&*store, Cursor::default(), &first).await.unwrap();
    count(&*store, cursor, &second).await.unwrap();

    for selection in [
        day_selection(),
        Selection {
            spans: vec![(Grain::Hour, DAY, DAY + DAY_MS)],
            ..Selection::default()
        },
    ] {
        let by_template = store
            .delivery_sketches(&selection, false, true)
            .await
            .unwrap();
        let mut counts: Vec<(&str, u64)> = by_template
            .iter()
            .map(|d| (d.template.as_str(), d.sketch.count()))
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [(ALL_TEMPLATES, 2), ("order_update", 2)],
            "the template's sketch, and the number's of every template"
        );
        let all = Selection {
            template: Some(ALL_TEMPLATES.into()),
            ..selection.clone()
        };
        let delivery = store.delivery_sketches(&all, false, false).await.unwrap();
        assert_eq!(delivery.len(), 1);
        assert_eq!(delivery[0].sketch.count(), 2);
        let median = delivery[0].sketch.quantile(0.5).unwrap();
        assert!((median - 1_500.0).abs() <= 15.0, "{median}");

        let conversations = store.conversation_sums(&selection, false).await.unwrap();
        let c = &conversations[0];
        assert_eq!(c.users.estimate(), 2);
        assert_eq!(c.response_ms.count(), 2);
        assert!((c.response_ms.quantile(0.5).unwrap() - 2_000.0).abs() <= 20.0);
        assert_eq!(
            c.counts.user_turns, 4,
            "each user wrote, then replied to us"
        );
        assert_eq!(c.counts.user_turns_answered, 2);
        assert_eq!(c.counts.business_turns, 2);
        assert_eq!(c.counts.business_turns_answered, 2);
        assert_eq!(c.counts.sessions, 2);
        assert_eq!(c.counts.session_ms, 2 * 60_000);
    }
}

async fn purge_removes_what_is_older_and_nothing_else(store: Arc<dyn Store>) {
    let old = turn(1, 1, DAY - 2 * DAY_MS + HOUR, 1);
    let new = turn(5, 2, DAY + HOUR, 2);
    let events: Vec<Event> = old.iter().chain(&new).cloned().collect();
    count(&*store, Cursor::default(), &events).await.unwrap();
    let before_new = totals(&*store, &day_selection()).await;

    let purged = store.purge(DAY).await.unwrap();
    assert_eq!(
        purged.facts, 3,
        "the old turn's two messages in and one out"
    );
    assert_eq!(purged.users, 1);
    assert!(purged.rollups > 0);
    assert_eq!(
        totals(&*store, &day_selection()).await,
        before_new,
        "the new day is intact"
    );
    let old_day = Selection {
        spans: vec![(Grain::Day, DAY - 2 * DAY_MS, DAY)],
        ..Selection::default()
    };
    assert_eq!(totals(&*store, &old_day).await, [0; 8]);
    assert!(
        store
            .conversation_sums(&old_day, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .delivery_sketches(&old_day, false, false)
            .await
            .unwrap()
            .is_empty()
    );
    let (facts, _) = store.load(&needs(&new)).await.unwrap();
    assert_eq!(facts.len(), 3, "the new turn's facts stay");
    assert_eq!(
        store.purge(DAY).await.unwrap().facts,
        0,
        "nothing more to purge"
    );
}
