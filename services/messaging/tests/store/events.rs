//! The event log: each change messaging commits appends its events in the same transaction,
//! once (a duplicate webhook appends nothing), numbered without gaps in commit order, with the
//! trace context of its change; a reader reading while others commit never finds a gap to
//! skip past.
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use wamesh_messaging::store::events::{LoggedEvent, kind};
use wamesh_messaging::store::outbound::{Callback, NewOutbound, SendFailure, Settle, Settlement};
use wamesh_messaging::store::{Store, Traces};

use crate::ingest::{PHONE, envelope, incoming, ingest_one, status_webhook, text_webhook};

conformance!(
    each_change_appends_its_events_once_in_order_with_its_trace,
    reads_filter_by_kind_and_page_from_a_cursor,
    concurrent_commits_are_numbered_without_gaps_and_a_reader_never_skips,
);

const NOW: i64 = 1_700_000_000_000;
const USER: &str = "15557770001";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn all_events(store: &dyn Store) -> Vec<LoggedEvent> {
    store
        .read_events(0, &[], 10_000)
        .await
        .expect("read the log")
}

fn kinds(events: &[LoggedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

fn queued(key: &str) -> NewOutbound {
    NewOutbound {
        business_phone_number_id: PHONE.into(),
        idempotency_key: key.into(),
        request_digest: key.into(),
        recipient: USER.into(),
        kind: "template".into(),
        template: Some(("order_update".into(), "en_US".into())),
        preview: None,
        payload: "{}".into(),
        fallback_json: None,
        traceparent: Some(TRACE.into()),
        tracestate: None,
    }
}

fn failure(code: i64) -> SendFailure {
    SendFailure {
        code,
        json: json!({"code": code}).to_string(),
    }
}

async fn each_change_appends_its_events_once_in_order_with_its_trace(store: Arc<dyn Store>) {
    assert_eq!(store.last_event_seq().await.unwrap(), 0);
    // A user writes (the webhook's message under its processing span).
    let mut message = incoming(
        &text_webhook(PHONE, USER, "wamid.IN1", 1_700_000_001, "hi"),
        NOW,
    );
    message.traces = Traces {
        webhook: Some("00-11111111111111111111111111111111-1111111111111111-01".into()),
        messages: vec![Some(TRACE.into())],
        statuses: Vec::new(),
    };
    ingest_one(&*store, message.clone()).await;
    ingest_one(&*store, message).await; // Meta's retry: nothing new, no event
    let events = all_events(&*store).await;
    assert_eq!(kinds(&events), ["message.received"]);
    let received = &events[0];
    assert_eq!(received.seq, 1);
    assert_eq!(
        (
            received.business_phone_number_id.as_str(),
            received.contact_id.as_str()
        ),
        (PHONE, USER)
    );
    assert_eq!(received.wamid.as_deref(), Some("wamid.IN1"));
    assert_eq!(received.message_type.as_deref(), Some("text"));
    assert_eq!(received.timestamp_s, Some(1_700_000_001));
    assert_eq!(received.traceparent.as_deref(), Some(TRACE));
    assert!(received.message_id.is_some_and(|id| id > 0));

    // We queue replies: one is sent, one fails, one goes dead, one is deferred, one retried,
    // and later one is in doubt.
    let rows: Vec<i64> = store
        .enqueue(
            &[
                queued("a"),
                queued("b"),
                queued("c"),
                queued("d"),
                queued("r"),
            ],
            NOW,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.row.id)
        .collect();
    store.enqueue(&[queued("a")], NOW).await.unwrap(); // a repeated key queues nothing
    store.claim("w", 1, 10, NOW, NOW + 60_000).await.unwrap();
    let send_trace = "00-22222222222222222222222222222222-2222222222222222-01";
    let settle = |id: i64, result: Settlement| Settle {
        id,
        claim_token: 1,
        result,
        traceparent: Some(send_trace.into()),
    };
    store
        .settle(
            &[
                settle(
                    rows[0],
                    Settlement::Accepted {
                        wamid: "wamid.OUT1".into(),
                    },
                ),
                settle(
                    rows[1],
                    Settlement::Failed {
                        error: failure(131026),
                    },
                ),
                settle(
                    rows[2],
                    Settlement::Dead {
                        error: failure(131000),
                    },
                ),
                settle(rows[3], Settlement::Deferred { until_ms: NOW + 1 }),
                settle(
                    rows[4],
                    Settlement::Retry {
                        at_ms: NOW + 60_000,
                        error: failure(131000),
                    },
                ),
            ],
            NOW,
        )
        .await
        .unwrap();
    // Meta's status of the accepted one, its callback data naming it.
    let mut status = status_webhook(PHONE, "wamid.OUT1", "delivered", 1_700_000_002, USER, None);
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["biz_opaque_callback_data"] = json!(
        Callback {
            outbound_id: rows[0],
            sent_at_ms: Some(NOW),
            traceparent: Some(send_trace.into()),
        }
        .encode()
    );
    let mut status = incoming(&status, NOW + 5);
    status.traces.statuses = vec![Some(send_trace.into())];
    ingest_one(&*store, status).await;
    // Another webhook field (an account update).
    let other = envelope("account_update", json!({"event": "VERIFIED_ACCOUNT"}));
    ingest_one(&*store, incoming(&other, NOW + 6)).await;

    let events = all_events(&*store).await;
    assert_eq!(
        kinds(&events),
        [
            "message.received",
            "send.queued",
            "send.queued",
            "send.queued",
            "send.queued",
            "send.queued",
            "send.accepted",
            "send.failed",
            "send.dead",
            "send.retrying",
            "status.updated",
            "webhook.event",
        ],
        "the deferral is no event (a retry is); the repeated key and webhook add none"
    );
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "numbered without gaps");
    assert_eq!(store.last_event_seq().await.unwrap(), 12);
    let first_queued = &events[1];
    assert_eq!(first_queued.outbound_id, Some(rows[0]));
    assert_eq!(first_queued.template_name.as_deref(), Some("order_update"));
    assert_eq!(first_queued.traceparent.as_deref(), Some(TRACE));
    let accepted = &events[6];
    assert_eq!(
        (accepted.outbound_id, accepted.wamid.as_deref()),
        (Some(rows[0]), Some("wamid.OUT1"))
    );
    assert_eq!(accepted.traceparent.as_deref(), Some(send_trace));
    assert_eq!(events[7].error_code, 131026);
    assert_eq!(
        (events[9].outbound_id, events[9].error_code),
        (Some(rows[4]), 131000),
        "the retried attempt's error"
    );
    let delivered = &events[10];
    assert_eq!(delivered.status.as_deref(), Some("delivered"));
    assert_eq!(delivered.outbound_id, Some(rows[0]));
    assert!(
        delivered.message_id.is_some(),
        "the stored outbound message"
    );
    assert_eq!(delivered.traceparent.as_deref(), Some(send_trace));
    assert_eq!(events[11].message_type.as_deref(), Some("account_update"));
    assert!(events.iter().all(|e| e.committed_at_ms >= NOW));

    // A claim that expires: in doubt, one event.
    store.enqueue(&[queued("e")], NOW).await.unwrap();
    store.claim("dead", 2, 10, NOW, NOW + 10).await.unwrap();
    store.reconcile(NOW + 20, NOW - 1).await.unwrap();
    let last = all_events(&*store).await;
    assert_eq!(
        kinds(&last[12..]),
        ["send.queued", "send.in_doubt"],
        "e queued, claimed, expired (d, deferred, is not due yet)"
    );
    assert_eq!(
        last[13].traceparent.as_deref(),
        Some(TRACE),
        "the message's own trace"
    );
}

async fn reads_filter_by_kind_and_page_from_a_cursor(store: Arc<dyn Store>) {
    for n in 0..5 {
        let wamid = format!("wamid.P{n}");
        ingest_one(
            &*store,
            incoming(&text_webhook(PHONE, USER, &wamid, n, "hi"), NOW),
        )
        .await;
        store
            .enqueue(&[queued(&format!("k{n}"))], NOW)
            .await
            .unwrap();
    }
    let page = store.read_events(3, &[], 4).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [4, 5, 6, 7],
        "after the cursor, at most the limit"
    );
    let received = store
        .read_events(0, &[kind::MESSAGE_RECEIVED.to_owned()], 100)
        .await
        .unwrap();
    assert_eq!(received.len(), 5);
    assert!(received.iter().all(|e| e.kind == "message.received"));
    assert_eq!(
        received.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 3, 5, 7, 9]
    );
    let both = store
        .read_events(
            4,
            &[
                kind::MESSAGE_RECEIVED.to_owned(),
                kind::SEND_QUEUED.to_owned(),
            ],
            100,
        )
        .await
        .unwrap();
    assert_eq!(both.len(), 6);
    assert!(store.read_events(10, &[], 100).await.unwrap().is_empty());
}

async fn concurrent_commits_are_numbered_without_gaps_and_a_reader_never_skips(
    store: Arc<dyn Store>,
) {
    const WRITERS: usize = 8;
    const EACH: usize = 15;
    let done = Arc::new(AtomicBool::new(false));
    // A reader follows the log while the writers commit: each read must continue exactly
    // where the last one stopped.
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut cursor = 0;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let page = store.read_events(cursor, &[], 1_000).await.unwrap();
                for event in page {
                    assert_eq!(event.seq, cursor + 1, "a gap after {cursor}");
                    cursor = event.seq;
                }
                if finished {
                    return cursor;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    // Conversations shared between writers, so they contend for rows.
                    let user = format!("1555888{:04}", n % 3);
                    let wamid = format!("wamid.C{w}-{n}");
                    let webhook = text_webhook(PHONE, &user, &wamid, n as i64, "hi");
                    store.ingest(&[incoming(&webhook, NOW)], NOW).await.unwrap();
                    store
                        .enqueue(&[queued(&format!("k{w}-{n}"))], NOW)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    done.store(true, Ordering::SeqCst);
    let read = reader.await.expect("the reader kept up without a gap");
    let events = all_events(&*store).await;
    assert_eq!(events.len(), WRITERS * EACH * 2, "one event per change");
    assert_eq!(read as usize, events.len(), "the reader saw them all");
    let wamids: HashSet<&str> = events.iter().filter_map(|e| e.wamid.as_deref()).collect();
    assert_eq!(wamids.len(), WRITERS * EACH, "each message once");
}
