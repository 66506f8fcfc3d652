//! The outbound queue, the template registry and the workers' reports: idempotent enqueueing,
//! claims that never overlap, settles fenced by their claim, in-doubt sends proven by their
//! status webhooks (or queued again only after the evidence window), and the counts the
//! gateway shows.
use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use wamesh_messaging::store::Store;
use wamesh_messaging::store::outbound::{
    Callback, NewOutbound, OutboundKey, OutboundRow, Put, SendFailure, Settle, Settlement,
    TemplateRow, WorkerReport,
};

use crate::ingest::{PHONE, incoming, ingest_one, outbound, status_webhook, text_webhook};

conformance!(
    enqueue_is_idempotent_by_key_within_and_across_batches,
    concurrent_enqueues_of_one_key_queue_one_message,
    claims_take_due_messages_oldest_first_and_never_the_same_twice,
    a_settle_applies_only_under_the_claim_that_holds_the_message,
    each_outcome_moves_the_message_as_it_should,
    an_accepted_send_fills_in_the_message_its_status_created_first,
    an_expired_claim_goes_in_doubt_and_a_status_with_its_callback_data_proves_it_sent,
    a_message_in_doubt_without_evidence_is_queued_again_only_after_the_window,
    queue_counts_see_every_state,
    worker_reports_replace_each_other_by_worker,
    templates_are_created_once_updated_in_place_and_listed_by_filter,
);

const NOW: i64 = 1_700_000_000_000;
const USER: &str = "15551230001";

fn new(key: &str, body: &str) -> NewOutbound {
    NewOutbound {
        business_phone_number_id: PHONE.to_owned(),
        idempotency_key: key.to_owned(),
        request_digest: format!("digest-of-{key}"),
        recipient: USER.to_owned(),
        kind: "text".to_owned(),
        template: None,
        preview: Some(body.to_owned()),
        payload: json!({"messaging_product": "whatsapp", "to": USER, "type": "text",
                        "text": {"body": body}})
        .to_string(),
        fallback_json: None,
        traceparent: None,
        tracestate: None,
    }
}

async fn enqueue(store: &dyn Store, messages: &[NewOutbound], now: i64) -> Vec<OutboundRow> {
    store
        .enqueue(messages, now)
        .await
        .expect("enqueue")
        .into_iter()
        .map(|e| e.row)
        .collect()
}

async fn get(store: &dyn Store, id: i64) -> OutboundRow {
    store
        .get_outbound(&OutboundKey::Id(id))
        .await
        .expect("get_outbound")
        .expect("the message is stored")
}

fn failure(code: i64) -> SendFailure {
    SendFailure {
        code,
        json: json!({"code": code, "title": "t", "message": "m", "details": "d"}).to_string(),
    }
}

async fn settle(store: &dyn Store, id: i64, token: i64, result: Settlement, now: i64) -> u64 {
    store
        .settle(
            &[Settle {
                id,
                claim_token: token,
                result,
                traceparent: None,
            }],
            now,
        )
        .await
        .expect("settle")
}

async fn enqueue_is_idempotent_by_key_within_and_across_batches(store: Arc<dyn Store>) {
    let done = store
        .enqueue(&[new("a", "one"), new("b", "two"), new("a", "again")], NOW)
        .await
        .unwrap();
    assert_eq!(done.len(), 3, "one outcome per input, in order");
    assert_eq!(done[0].row.idempotency_key, "a");
    assert!(!done[0].duplicate && !done[1].duplicate);
    assert!(done[2].duplicate, "the same key later in the batch");
    assert_eq!(done[2].row.id, done[0].row.id);
    assert_eq!(
        done[2].row.preview.as_deref(),
        Some("one"),
        "the first one won"
    );
    assert_ne!(done[0].row.id, done[1].row.id);
    assert_eq!(
        (done[0].row.state.as_str(), done[0].row.attempts),
        ("queued", 0)
    );
    assert_eq!(done[0].row.next_attempt_at_ms, NOW);

    let again = store.enqueue(&[new("a", "later")], NOW + 5).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].row, done[0].row, "the stored message, unchanged");

    let mut elsewhere = new("a", "one");
    elsewhere.business_phone_number_id = "another-number".into();
    let other = store.enqueue(&[elsewhere], NOW).await.unwrap();
    assert!(!other[0].duplicate, "keys are per business number");
    let by_key = store
        .get_outbound(&OutboundKey::Idempotency {
            business_phone_number_id: PHONE.into(),
            key: "b".into(),
        })
        .await
        .unwrap()
        .expect("found by its key");
    assert_eq!(by_key.id, done[1].row.id);
}

async fn concurrent_enqueues_of_one_key_queue_one_message(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.enqueue(&[new("same", "x")], NOW).await })
        })
        .collect();
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let done = task.await.unwrap().expect("every enqueue is answered");
        ids.insert(done[0].row.id);
        fresh += usize::from(!done[0].duplicate);
    }
    assert_eq!(ids.len(), 1, "one message");
    assert_eq!(fresh, 1, "and only one caller queued it");
}

async fn claims_take_due_messages_oldest_first_and_never_the_same_twice(store: Arc<dyn Store>) {
    let batch: Vec<NewOutbound> = (0..10).map(|n| new(&format!("k{n}"), "x")).collect();
    let rows = enqueue(&*store, &batch, NOW).await;
    let first = store.claim("w1", 1, 4, NOW, NOW + 60_000).await.unwrap();
    let ids: Vec<i64> = first.iter().map(|c| c.id).collect();
    assert_eq!(ids, rows[..4].iter().map(|r| r.id).collect::<Vec<_>>());
    assert_eq!(first[0].payload, rows[0].payload);
    assert_eq!(get(&*store, ids[0]).await.state, "sending");

    // Two workers at once share the rest without overlap.
    let (a, b) = tokio::join!(
        store.claim("w2", 2, 4, NOW, NOW + 60_000),
        store.claim("w3", 3, 4, NOW, NOW + 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<i64> = ids.clone();
    all.extend(a.iter().map(|c| c.id));
    all.extend(b.iter().map(|c| c.id));
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "no message claimed twice");
    assert_eq!(a.len() + b.len(), 6, "between them, the six left");
    let rest = store.claim("w4", 4, 10, NOW, NOW + 60_000).await.unwrap();
    assert!(rest.is_empty(), "every message claimed once");

    // Deferred to later: not due until then.
    let (c, token) = if a.is_empty() { (&b[0], 3) } else { (&a[0], 2) };
    settle(
        &*store,
        c.id,
        token,
        Settlement::Deferred {
            until_ms: NOW + 5_000,
        },
        NOW,
    )
    .await;
    assert!(
        store
            .claim("w5", 5, 10, NOW + 4_999, NOW + 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    let due = store
        .claim("w5", 6, 10, NOW + 5_000, NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|c| c.id).collect::<Vec<_>>(), vec![c.id]);
}

async fn a_settle_applies_only_under_the_claim_that_holds_the_message(store: Arc<dyn Store>) {
    let row = enqueue(&*store, &[new("k", "x")], NOW).await.remove(0);
    store.claim("w", 7, 1, NOW, NOW + 60_000).await.unwrap();
    let accepted = Settlement::Accepted {
        wamid: "wamid.A".into(),
    };
    assert_eq!(settle(&*store, row.id, 8, accepted.clone(), NOW).await, 0);
    assert_eq!(
        get(&*store, row.id).await.state,
        "sending",
        "another claim's token"
    );
    assert_eq!(settle(&*store, row.id, 7, accepted.clone(), NOW).await, 1);
    assert_eq!(get(&*store, row.id).await.state, "sent");
    // Settled already: a second answer of the same claim changes nothing.
    let retry = Settlement::Retry {
        at_ms: NOW,
        error: failure(131000),
    };
    assert_eq!(settle(&*store, row.id, 7, retry, NOW).await, 0);
    let after = get(&*store, row.id).await;
    assert_eq!((after.state.as_str(), after.attempts), ("sent", 1));
}

async fn each_outcome_moves_the_message_as_it_should(store: Arc<dyn Store>) {
    let keys = ["accepted", "deferred", "retry", "failed", "dead", "doubt"];
    let batch: Vec<NewOutbound> = keys.iter().map(|k| new(k, k)).collect();
    let rows = enqueue(&*store, &batch, NOW).await;
    store.claim("w", 9, 10, NOW, NOW + 60_000).await.unwrap();
    let results = [
        Settlement::Accepted {
            wamid: "wamid.OK".into(),
        },
        Settlement::Deferred {
            until_ms: NOW + 100,
        },
        Settlement::Retry {
            at_ms: NOW + 2_000,
            error: failure(131000),
        },
        Settlement::Failed {
            error: failure(131026),
        },
        Settlement::Dead {
            error: failure(130429),
        },
        Settlement::InDoubt { error: failure(0) },
    ];
    let settles: Vec<Settle> = rows
        .iter()
        .zip(results)
        .map(|(row, result)| Settle {
            id: row.id,
            claim_token: 9,
            result,
            traceparent: None,
        })
        .collect();
    let now = NOW + 10;
    assert_eq!(store.settle(&settles, now).await.unwrap(), 6);
    let seen = |row: OutboundRow| {
        (
            row.state,
            row.attempts,
            row.next_attempt_at_ms,
            row.error_code,
            row.wamid,
        )
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        seen(get(&*store, rows[0].id).await),
        (s("sent"), 1, NOW, None, Some(s("wamid.OK")))
    );
    assert_eq!(get(&*store, rows[0].id).await.accepted_at_ms, Some(now));
    assert_eq!(
        seen(get(&*store, rows[1].id).await),
        (s("queued"), 0, NOW + 100, None, None),
        "deferred: no attempt counted"
    );
    assert_eq!(
        seen(get(&*store, rows[2].id).await),
        (s("queued"), 1, NOW + 2_000, Some(131000), None)
    );
    assert_eq!(
        seen(get(&*store, rows[3].id).await),
        (s("failed"), 1, NOW, Some(131026), None)
    );
    assert_eq!(
        seen(get(&*store, rows[4].id).await),
        (s("dead"), 1, NOW, Some(130429), None)
    );
    let doubt = get(&*store, rows[5].id).await;
    assert_eq!((doubt.state.as_str(), doubt.attempts), ("in_doubt", 1));
    assert_eq!(doubt.in_doubt_since_ms, Some(now));
    let error: serde_json::Value =
        serde_json::from_str(rows_error(&get(&*store, rows[2].id).await)).unwrap();
    assert_eq!(error["code"], 131000);
    // The accepted one is in the conversation history, as sent by wamesh.
    let message = outbound(&*store, "wamid.OK").await;
    assert_eq!(
        (
            message.origin.as_str(),
            message.contact_id.as_str(),
            message.kind.as_str()
        ),
        ("api", USER, "text")
    );
    assert_eq!(message.text_body.as_deref(), Some("accepted"));
}

fn rows_error(row: &OutboundRow) -> &str {
    row.error_json.as_deref().expect("an error is recorded")
}

async fn an_accepted_send_fills_in_the_message_its_status_created_first(store: Arc<dyn Store>) {
    let row = enqueue(&*store, &[new("k", "hello there")], NOW)
        .await
        .remove(0);
    store.claim("w", 1, 1, NOW, NOW + 60_000).await.unwrap();
    // The status webhook outruns the Graph API's answer.
    let status = status_webhook(PHONE, "wamid.EARLY", "delivered", 1_700_000_001, USER, None);
    ingest_one(&*store, incoming(&status, NOW + 1)).await;
    assert_eq!(outbound(&*store, "wamid.EARLY").await.origin, "external");
    let accepted = Settlement::Accepted {
        wamid: "wamid.EARLY".into(),
    };
    assert_eq!(settle(&*store, row.id, 1, accepted, NOW + 2).await, 1);
    let message = outbound(&*store, "wamid.EARLY").await;
    assert_eq!(message.origin, "api");
    assert_eq!(message.text_body.as_deref(), Some("hello there"));
    assert_eq!(
        message.status.as_deref(),
        Some("delivered"),
        "the delivery state stays"
    );
}

async fn an_expired_claim_goes_in_doubt_and_a_status_with_its_callback_data_proves_it_sent(
    store: Arc<dyn Store>,
) {
    let rows = enqueue(&*store, &[new("a", "x"), new("b", "y")], NOW).await;
    store
        .claim("dead-worker", 3, 2, NOW, NOW + 1_000)
        .await
        .unwrap();
    let done = store.reconcile(NOW + 999, NOW - 600_000).await.unwrap();
    assert_eq!(done.expired, 0, "the lease still holds");
    let done = store.reconcile(NOW + 1_001, NOW - 600_000).await.unwrap();
    assert_eq!(done.expired, 2);
    assert_eq!(get(&*store, rows[0].id).await.state, "in_doubt");
    // Meta had the first: its status echoes our callback data.
    let mut status = status_webhook(PHONE, "wamid.PROOF", "sent", 1_700_000_002, USER, None);
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["biz_opaque_callback_data"] = json!(
        Callback {
            outbound_id: rows[0].id,
            sent_at_ms: Some(NOW),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        }
        .encode()
    );
    ingest_one(&*store, incoming(&status, NOW + 1_500)).await;
    let done = store.reconcile(NOW + 2_000, NOW - 600_000).await.unwrap();
    assert_eq!((done.proven_sent, done.requeued), (1, 0));
    let proven = get(&*store, rows[0].id).await;
    assert_eq!(
        (proven.state.as_str(), proven.wamid.as_deref()),
        ("sent", Some("wamid.PROOF"))
    );
    assert_eq!(outbound(&*store, "wamid.PROOF").await.origin, "api");
    assert_eq!(
        get(&*store, rows[1].id).await.state,
        "in_doubt",
        "no evidence yet"
    );
}

async fn a_message_in_doubt_without_evidence_is_queued_again_only_after_the_window(
    store: Arc<dyn Store>,
) {
    let row = enqueue(&*store, &[new("k", "x")], NOW).await.remove(0);
    store.claim("w", 5, 1, NOW, NOW + 60_000).await.unwrap();
    let doubt = Settlement::InDoubt { error: failure(0) };
    settle(&*store, row.id, 5, doubt, NOW).await;
    // An inbound message with the same wamid-looking text proves nothing: only callback data.
    ingest_one(
        &*store,
        incoming(&text_webhook(PHONE, USER, "wamid.IN", 1, "hi"), NOW),
    )
    .await;
    let done = store.reconcile(NOW + 10, NOW - 1).await.unwrap();
    assert_eq!(done.requeued, 0, "went in doubt after the window's start");
    assert!(
        store
            .claim("w", 6, 1, NOW + 10, NOW + 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    let done = store.reconcile(NOW + 20, NOW + 1).await.unwrap();
    assert_eq!(done.requeued, 1);
    let again = store
        .claim("w", 7, 1, NOW + 20, NOW + 60_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "due again");
    assert_eq!(again[0].attempts, 1, "the attempt in doubt counts");
}

async fn queue_counts_see_every_state(store: Arc<dyn Store>) {
    let empty = store.queue_counts(NOW).await.unwrap();
    assert_eq!((empty.queued, empty.oldest_queued_at_ms), (0, None));
    let batch: Vec<NewOutbound> = (0..6).map(|n| new(&format!("k{n}"), "x")).collect();
    let rows = enqueue(&*store, &batch, NOW).await;
    enqueue(&*store, &[new("late", "x")], NOW + 500).await;
    let claimed = store.claim("w", 1, 4, NOW, NOW + 60_000).await.unwrap();
    let results = [
        Settlement::Deferred {
            until_ms: NOW + 10_000,
        },
        Settlement::Dead { error: failure(1) },
        Settlement::InDoubt { error: failure(0) },
    ];
    let settles: Vec<Settle> = claimed
        .iter()
        .zip(results)
        .map(|(c, result)| Settle {
            id: c.id,
            claim_token: 1,
            result,
            traceparent: None,
        })
        .collect();
    store.settle(&settles, NOW).await.unwrap();
    let counts = store.queue_counts(NOW + 1_000).await.unwrap();
    // Queued: 2 never claimed + "late" + the deferred one; one of the four still sending.
    assert_eq!(counts.queued, 4);
    assert_eq!(counts.due, 3, "the deferred one is not due yet");
    assert_eq!((counts.sending, counts.in_doubt, counts.dead), (1, 1, 1));
    assert_eq!(counts.oldest_queued_at_ms, Some(rows[0].queued_at_ms));
}

async fn worker_reports_replace_each_other_by_worker(store: Arc<dyn Store>) {
    let report = |id: &str, at: i64, sent: i32| WorkerReport {
        worker_id: id.into(),
        started_at_ms: 1,
        reported_at_ms: at,
        in_flight: 2,
        sent_last_minute: sent,
        sent_total: i64::from(sent) * 10,
        last_error_code: 131000,
        last_error: "Something went wrong".into(),
        last_error_at_ms: at - 1,
        ..Default::default()
    };
    store.report_worker(&report("a/0", 1_000, 1)).await.unwrap();
    store.report_worker(&report("a/0", 2_000, 5)).await.unwrap();
    store.report_worker(&report("b/0", 500, 3)).await.unwrap();
    assert_eq!(
        store.worker_reports(0).await.unwrap(),
        vec![report("a/0", 2_000, 5), report("b/0", 500, 3)]
    );
    assert_eq!(
        store.worker_reports(1_000).await.unwrap(),
        vec![report("a/0", 2_000, 5)],
        "older reports are left out"
    );
}

async fn templates_are_created_once_updated_in_place_and_listed_by_filter(store: Arc<dyn Store>) {
    let template = |waba: &str, name: &str, language: &str, status: &str, at: i64| TemplateRow {
        waba_id: waba.into(),
        name: name.into(),
        language: language.into(),
        category: "utility".into(),
        status: status.into(),
        components_json: r#"[{"type":"BODY","text":"Hi {{1}}"}]"#.into(),
        fallback_template_name: Some("plain".into()),
        fallback_template_language: Some(language.into()),
        fallback_text: None,
        created_at_ms: at,
        updated_at_ms: at,
    };
    let order = template("w1", "order", "en_US", "approved", 1);
    assert!(store.put_template(&order, Put::Create).await.unwrap());
    assert!(
        !store.put_template(&order, Put::Create).await.unwrap(),
        "exists"
    );
    let missing = template("w1", "nope", "en_US", "approved", 1);
    assert!(!store.put_template(&missing, Put::Update).await.unwrap());
    let paused = template("w1", "order", "en_US", "paused", 9);
    assert!(store.put_template(&paused, Put::Update).await.unwrap());
    let stored = store
        .get_template("w1", "order", "en_US")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stored.status.as_str(),
            stored.created_at_ms,
            stored.updated_at_ms
        ),
        ("paused", 1, 9)
    );
    for t in [
        template("w1", "order", "pt_BR", "approved", 2),
        template("w2", "order", "en_US", "approved", 3),
        template("", "welcome", "en_US", "approved", 4),
    ] {
        assert!(store.put_template(&t, Put::Create).await.unwrap());
    }
    let names = |rows: Vec<TemplateRow>| -> Vec<String> {
        rows.into_iter()
            .map(|t| format!("{}/{}/{}", t.waba_id, t.name, t.language))
            .collect()
    };
    assert_eq!(
        names(store.list_templates("", "").await.unwrap()),
        [
            "/welcome/en_US",
            "w1/order/en_US",
            "w1/order/pt_BR",
            "w2/order/en_US"
        ]
    );
    assert_eq!(
        names(store.list_templates("w1", "").await.unwrap()),
        ["w1/order/en_US", "w1/order/pt_BR"]
    );
    assert_eq!(
        names(store.list_templates("", "order").await.unwrap()).len(),
        3
    );
    assert!(
        store
            .get_template("w3", "order", "en_US")
            .await
            .unwrap()
            .is_none()
    );
}
