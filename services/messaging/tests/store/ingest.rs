//! Ingest and reads: webhooks stored exactly once, statuses, contacts, events and pages.
//!
//! Payloads are real webhook envelopes, built as JSON below or taken from the shared corpus,
//! and go through the same parsing (`Webhook::parse` + `Updates::from_webhook`) as production.
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wamesh_messaging::store::{
    ContactCursor, Direction, IncomingWebhook, IngestOutcome, MessageCursor, MessageKey, Store,
    StoredContact, StoredMessage,
};
use wamesh_whatsapp::{DeliveryStatus, Updates, Webhook};

conformance!(
    every_corpus_payload_is_stored_and_readable,
    the_same_webhook_in_two_batches_is_a_duplicate,
    the_same_webhook_three_times_in_one_batch_is_stored_once,
    the_same_wamid_in_two_different_webhooks_is_stored_once,
    a_repeated_event_is_a_duplicate_and_an_empty_webhook_never_is,
    concurrent_ingests_of_the_same_webhook_store_one_message,
    statuses_move_the_state_forward_only,
    an_echo_arriving_after_its_status_fills_in_the_message,
    last_inbound_is_the_newest_inbound_message_time,
    contacts_keep_their_name_and_page_by_cursor,
    messages_list_newest_first_by_cursor,
    batch_outcomes_are_in_input_order_with_increasing_delivery_ids,
    events_filter_by_field_and_page_by_after_id,
    ping_and_backend_name,
    the_pool_says_how_many_connections_are_idle_and_lent,
    timelines_of_several_messages_come_in_one_call,
);

// ---------------------------------------------------------------------------------------------
// Building payloads.

const WABA: &str = "102290129340398";
pub(crate) const PHONE: &str = "106540352242922";
const OTHER_PHONE: &str = "106540352242999";

/// An envelope with one change.
pub(crate) fn envelope(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": WABA, "changes": [{ "field": field, "value": value }] }]
    })
}

fn metadata(phone_number_id: &str) -> Value {
    json!({ "display_phone_number": "15550001111", "phone_number_id": phone_number_id })
}

/// A user's text message, with a `contacts[]` item (no profile name: see [`with_profile_name`]).
pub(crate) fn text_webhook(
    phone_number_id: &str,
    from: &str,
    wamid: &str,
    timestamp: i64,
    body: &str,
) -> Value {
    envelope(
        "messages",
        json!({
            "messaging_product": "whatsapp",
            "metadata": metadata(phone_number_id),
            "contacts": [{ "wa_id": from }],
            "messages": [{
                "from": from,
                "id": wamid,
                "timestamp": timestamp.to_string(),
                "type": "text",
                "text": { "body": body }
            }]
        }),
    )
}

/// The same webhook with `contacts[0].profile.name` set.
fn with_profile_name(mut webhook: Value, name: &str) -> Value {
    webhook["entry"][0]["changes"][0]["value"]["contacts"][0]["profile"] = json!({ "name": name });
    webhook
}

/// A delivery status of an outbound message.
pub(crate) fn status_webhook(
    phone_number_id: &str,
    wamid: &str,
    status: &str,
    timestamp: i64,
    recipient: &str,
    errors: Option<Value>,
) -> Value {
    let mut item = json!({
        "id": wamid,
        "status": status,
        "timestamp": timestamp.to_string(),
        "recipient_id": recipient
    });
    if let Some(errors) = errors {
        item["errors"] = errors;
    }
    envelope(
        "messages",
        json!({ "messaging_product": "whatsapp", "metadata": metadata(phone_number_id), "statuses": [item] }),
    )
}

/// An echo of a text message the business sent from the WhatsApp Business app.
fn echo_webhook(phone_number_id: &str, to: &str, wamid: &str, timestamp: i64, body: &str) -> Value {
    envelope(
        "smb_message_echoes",
        json!({
            "messaging_product": "whatsapp",
            "metadata": metadata(phone_number_id),
            "message_echoes": [{
                "from": "15550001111",
                "to": to,
                "id": wamid,
                "timestamp": timestamp.to_string(),
                "type": "text",
                "text": { "body": body }
            }]
        }),
    )
}

fn bytes(webhook: &Value) -> Vec<u8> {
    serde_json::to_vec(webhook).expect("serialize a webhook")
}

/// A webhook as the service hands it to the store: parsed, hashed, timestamped.
pub(crate) fn incoming_bytes(raw_body: Vec<u8>, received_at_ms: i64) -> IncomingWebhook {
    let webhook = Webhook::parse(&raw_body).expect("a valid webhook envelope");
    IncomingWebhook {
        body_sha256: hex::encode(Sha256::digest(&raw_body)),
        updates: Updates::from_webhook(&webhook),
        raw_body,
        received_at_ms,
        verified_by: "test".to_owned(),
        traces: Default::default(),
    }
}

pub(crate) fn incoming(webhook: &Value, received_at_ms: i64) -> IncomingWebhook {
    incoming_bytes(bytes(webhook), received_at_ms)
}

// ---------------------------------------------------------------------------------------------
// Store helpers.

/// Ingests one webhook as a batch of its own; answers its outcome.
pub(crate) async fn ingest_one(store: &dyn Store, webhook: IncomingWebhook) -> IngestOutcome {
    let stored_at_ms = webhook.received_at_ms + 1;
    let outcomes = store
        .ingest(&[webhook], stored_at_ms)
        .await
        .expect("ingest");
    assert_eq!(outcomes.len(), 1, "one outcome per webhook");
    outcomes[0]
}

async fn message(store: &dyn Store, wamid: &str, direction: Direction) -> Option<StoredMessage> {
    store
        .get_message(&MessageKey::Wamid(wamid.to_owned(), Some(direction)))
        .await
        .expect("get_message")
}

async fn inbound(store: &dyn Store, wamid: &str) -> StoredMessage {
    message(store, wamid, Direction::Inbound)
        .await
        .unwrap_or_else(|| panic!("inbound {wamid} is stored"))
}

pub(crate) async fn outbound(store: &dyn Store, wamid: &str) -> StoredMessage {
    message(store, wamid, Direction::Outbound)
        .await
        .unwrap_or_else(|| panic!("outbound {wamid} is stored"))
}

/// The statuses of a message's timeline, in the order the store returns them.
pub(crate) async fn timeline(store: &dyn Store, wamid: &str) -> Vec<String> {
    store
        .status_timelines(&[wamid])
        .await
        .expect("status_timeline")
        .into_iter()
        .map(|s| s.status)
        .collect()
}

/// Every message of a conversation, page by page (newest first).
async fn all_messages(
    store: &dyn Store,
    phone: &str,
    contact: &str,
    page: u32,
) -> Vec<StoredMessage> {
    let mut all: Vec<StoredMessage> = Vec::new();
    let mut before = None;
    loop {
        let rows = store
            .list_messages(phone, contact, before, page)
            .await
            .expect("list_messages");
        assert!(
            rows.len() <= page as usize,
            "a page holds at most {page} messages"
        );
        let Some(last) = rows.last() else { break };
        before = Some(MessageCursor {
            timestamp_s: last.timestamp_s,
            id: last.id,
        });
        all.extend(rows);
    }
    all
}

/// Every contact of a number ("" = all), page by page (most recently seen first).
async fn all_contacts(store: &dyn Store, phone: &str, page: u32) -> Vec<StoredContact> {
    let mut all: Vec<StoredContact> = Vec::new();
    let mut after = None;
    loop {
        let rows = store
            .list_contacts(phone, after, page)
            .await
            .expect("list_contacts");
        assert!(
            rows.len() <= page as usize,
            "a page holds at most {page} contacts"
        );
        let Some(last) = rows.last() else { break };
        after = Some(ContactCursor {
            last_seen_ms: last.last_seen_ms,
            business_phone_number_id: last.business_phone_number_id.clone(),
            contact_id: last.contact_id.clone(),
        });
        all.extend(rows);
    }
    all
}

// ---------------------------------------------------------------------------------------------
// The suite.

/// 1. Every corpus payload, one per batch: delivery and body, messages, statuses, other fields.
async fn every_corpus_payload_is_stored_and_readable(store: Arc<dyn Store>) {
    let corpus = wamesh_testkit::webhook_corpus();
    assert_eq!(corpus.len(), 74, "the shared webhook corpus");

    // (wamid, direction) -> raw JSON of the first message carrying it, unless a status created
    // the outbound row before any message did (that case has a test of its own).
    let mut first_raw: HashMap<(String, &'static str), Option<String>> = HashMap::new();
    let mut status_stubs: HashSet<String> = HashSet::new();
    let mut best_status: HashMap<String, Option<DeliveryStatus>> = HashMap::new();
    let mut expected_events: HashMap<String, (String, &'static str, String)> = HashMap::new();
    let mut seen_statuses: HashSet<(String, String)> = HashSet::new();

    for (n, (name, body)) in corpus.iter().enumerate() {
        let webhook = incoming_bytes(body.clone(), 1_700_000_000_000 + n as i64);
        let updates = webhook.updates.clone();
        let sha = webhook.body_sha256.clone();
        let outcome = ingest_one(&*store, webhook).await;

        let delivery = store
            .get_delivery(outcome.delivery_id)
            .await
            .expect("get_delivery")
            .unwrap_or_else(|| panic!("{name}: its delivery is logged"));
        assert_eq!(
            delivery.body, *body,
            "{name}: the stored body is the raw bytes"
        );
        assert_eq!(delivery.body_sha256, sha, "{name}");
        assert_eq!(delivery.size_bytes, body.len() as i64, "{name}");
        assert_eq!(delivery.messages as usize, updates.messages.len(), "{name}");
        assert_eq!(delivery.statuses as usize, updates.statuses.len(), "{name}");
        assert_eq!(
            delivery.other_fields as usize,
            updates.other.len(),
            "{name}"
        );
        assert_eq!(delivery.new_messages as u32, outcome.new_messages, "{name}");
        // Ids repeat across files: a webhook whose every update came in an earlier file changed
        // nothing, and only that is a duplicate.
        let brings_news = updates.messages.iter().any(|m| {
            !first_raw.contains_key(&(m.wamid.clone(), Direction::from(m.direction).as_str()))
        }) || updates
            .statuses
            .iter()
            .any(|s| !seen_statuses.contains(&(s.wamid.clone(), s.status.clone())))
            || updates
                .other
                .iter()
                .map(|o| &o.dedup_key)
                .chain(updates.errors.iter().map(|e| &e.dedup_key))
                .any(|key| !expected_events.contains_key(key));
        let held = updates.messages.len()
            + updates.statuses.len()
            + updates.other.len()
            + updates.errors.len();
        assert_eq!(
            outcome.duplicate,
            held > 0 && !brings_news,
            "{name}: duplicate exactly when it brought nothing new: {outcome:?}"
        );
        assert_eq!(delivery.duplicate, outcome.duplicate, "{name}");
        assert_eq!(delivery.new_events as u32, outcome.new_events, "{name}");

        for m in &updates.messages {
            let direction = Direction::from(m.direction);
            let key = (m.wamid.clone(), direction.as_str());
            let stubbed = direction == Direction::Outbound && status_stubs.contains(&m.wamid);
            first_raw
                .entry(key)
                .or_insert_with(|| (!stubbed).then(|| m.raw.clone()));
            let stored = message(&*store, &m.wamid, direction)
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: message {} ({}) is stored",
                        m.wamid,
                        direction.as_str()
                    )
                });
            assert_eq!(stored.direction, direction.as_str(), "{name}");
        }
        for s in &updates.statuses {
            status_stubs.insert(s.wamid.clone());
            seen_statuses.insert((s.wamid.clone(), s.status.clone()));
            let best = best_status.entry(s.wamid.clone()).or_insert(None);
            *best = (*best).max(DeliveryStatus::parse(&s.status));
            let stored = outbound(&*store, &s.wamid).await;
            assert_eq!(stored.wamid, s.wamid, "{name}");
            let statuses = timeline(&*store, &s.wamid).await;
            assert!(
                statuses.contains(&s.status),
                "{name}: {} in the timeline {statuses:?}",
                s.status
            );
        }
        for o in &updates.other {
            expected_events.entry(o.dedup_key.clone()).or_insert((
                o.field.clone(),
                "field",
                o.raw.clone(),
            ));
        }
        for e in &updates.errors {
            expected_events.entry(e.dedup_key.clone()).or_insert((
                "messages".to_owned(),
                "error",
                e.raw.clone(),
            ));
        }
    }

    // Ids repeat across files: the first message stored under a (wamid, direction) wins.
    let mut row_ids = BTreeSet::new();
    let mut conversations = BTreeSet::new();
    for ((wamid, direction), raw) in &first_raw {
        let direction = if *direction == "inbound" {
            Direction::Inbound
        } else {
            Direction::Outbound
        };
        let stored = message(&*store, wamid, direction)
            .await
            .expect("stored above");
        if let Some(raw) = raw {
            assert_eq!(
                &stored.raw_json, raw,
                "{wamid}: the first message stored wins"
            );
        }
        let by_id = store
            .get_message(&MessageKey::Id(stored.id))
            .await
            .expect("get_message");
        assert_eq!(by_id.as_ref(), Some(&stored), "{wamid}: the same row by id");
        row_ids.insert(stored.id);
        conversations.insert((stored.business_phone_number_id, stored.contact_id));
    }
    assert_eq!(
        row_ids.len(),
        first_raw.len(),
        "one row per distinct (wamid, direction)"
    );

    // A status moves its message to the highest ranked status the corpus holds for it; with no
    // direction given, the outbound message is preferred.
    for (wamid, best) in &best_status {
        let stored = outbound(&*store, wamid).await;
        assert_eq!(
            stored.status.as_deref(),
            best.map(DeliveryStatus::as_str),
            "{wamid}"
        );
        let any = store
            .get_message(&MessageKey::Wamid(wamid.clone(), None))
            .await
            .expect("get_message");
        assert_eq!(
            any.map(|m| m.direction),
            Some("outbound".to_owned()),
            "{wamid}"
        );
        row_ids.insert(stored.id);
        conversations.insert((stored.business_phone_number_id, stored.contact_id));
    }

    // The conversations hold exactly these rows: nothing more is readable.
    let mut listed = BTreeSet::new();
    for (phone, contact) in &conversations {
        for m in all_messages(&*store, phone, contact, 5).await {
            assert!(listed.insert(m.id), "message {} listed once", m.id);
        }
    }
    assert_eq!(
        listed, row_ids,
        "every stored message, and only those, is listed"
    );

    // Non-message fields and value.errors items, each once.
    let events = store.list_events("", 0, 10_000).await.expect("list_events");
    assert_eq!(
        events.len(),
        expected_events.len(),
        "one event per distinct update"
    );
    for (field, kind, raw) in expected_events.values() {
        assert!(
            events.iter().any(|e| &e.field == field
                && e.kind == *kind
                && &e.raw_json == raw
                && !e.waba_id.is_empty()),
            "event {field}/{kind} is listed: {raw}"
        );
    }
    let fields: BTreeSet<&str> = events.iter().map(|e| e.field.as_str()).collect();
    for field in [
        "account_update",
        "calls",
        "message_template_status_update",
        "user_preferences",
    ] {
        assert!(
            fields.contains(field),
            "{field} events are listed: {fields:?}"
        );
    }
}

/// 2. A retry of the same body in a later batch.
async fn the_same_webhook_in_two_batches_is_a_duplicate(store: Arc<dyn Store>) {
    let webhook = text_webhook(PHONE, "15551230001", "wamid.dup2", 1_700_000_100, "hello");
    let first = ingest_one(&*store, incoming(&webhook, 1_000)).await;
    let second = ingest_one(&*store, incoming(&webhook, 2_000)).await;

    assert!(!first.duplicate);
    assert_eq!(first.new_messages, 1);
    assert!(second.duplicate);
    assert_eq!(second.new_messages, 0);
    assert_eq!(second.counts, first.counts, "the same updates were seen");

    let messages = all_messages(&*store, PHONE, "15551230001", 10).await;
    assert_eq!(messages.len(), 1, "exactly one message");
    assert_eq!(messages[0].wamid, "wamid.dup2");

    assert_ne!(first.delivery_id, second.delivery_id);
    for (outcome, received_at_ms) in [(first, 1_000), (second, 2_000)] {
        let delivery = store
            .get_delivery(outcome.delivery_id)
            .await
            .expect("get_delivery")
            .expect("logged");
        assert_eq!(delivery.received_at_ms, received_at_ms);
        assert_eq!(delivery.duplicate, outcome.duplicate);
        assert_eq!(
            delivery.body,
            bytes(&webhook),
            "every delivery keeps its body"
        );
    }
}

/// 3. The same body three times inside one batch: the first slot owns it.
async fn the_same_webhook_three_times_in_one_batch_is_stored_once(store: Arc<dyn Store>) {
    let webhook = text_webhook(PHONE, "15551230002", "wamid.dup3", 1_700_000_200, "hi");
    let batch: Vec<IncomingWebhook> = (0..3).map(|i| incoming(&webhook, 1_000 + i)).collect();
    let outcomes = store.ingest(&batch, 5_000).await.expect("ingest");

    assert_eq!(outcomes.len(), 3);
    assert!(!outcomes[0].duplicate);
    assert_eq!(outcomes[0].new_messages, 1);
    for o in &outcomes[1..] {
        assert!(o.duplicate, "later slots are duplicates: {o:?}");
        assert_eq!(o.new_messages, 0);
    }
    let ids: BTreeSet<i64> = outcomes.iter().map(|o| o.delivery_id).collect();
    assert_eq!(ids.len(), 3, "three deliveries logged");
    assert_eq!(
        all_messages(&*store, PHONE, "15551230002", 10).await.len(),
        1,
        "one message"
    );
}

/// 4. One wamid in two different bodies (Meta resends with other envelope data).
async fn the_same_wamid_in_two_different_webhooks_is_stored_once(store: Arc<dyn Store>) {
    let first = text_webhook(
        PHONE,
        "15551230003",
        "wamid.same",
        1_700_000_300,
        "first text",
    );
    let second = text_webhook(
        PHONE,
        "15551230003",
        "wamid.same",
        1_700_000_301,
        "second text",
    );
    assert_ne!(bytes(&first), bytes(&second));

    let a = ingest_one(&*store, incoming(&first, 1_000)).await;
    let b = ingest_one(&*store, incoming(&second, 2_000)).await;
    assert_eq!(a.new_messages, 1);
    assert!(
        b.duplicate,
        "a different body, but nothing new in it: {b:?}"
    );
    assert_eq!(b.new_messages, 0);

    let messages = all_messages(&*store, PHONE, "15551230003", 10).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].text_body.as_deref(),
        Some("first text"),
        "the first one stored wins"
    );
    assert_eq!(messages[0].timestamp_s, 1_700_000_300);
}

/// 4b. Events count as updates: the same account update again changed nothing. A webhook that
/// held no update at all is logged, but is not a duplicate of anything.
async fn a_repeated_event_is_a_duplicate_and_an_empty_webhook_never_is(store: Arc<dyn Store>) {
    let value = json!({ "phone_number": "15550001111", "event": "VERIFIED_ACCOUNT" });
    let event = envelope("account_update", value);
    let first = ingest_one(&*store, incoming(&event, 1_000)).await;
    let again = ingest_one(&*store, incoming(&event, 2_000)).await;
    assert_eq!((first.new_events, first.duplicate), (1, false), "{first:?}");
    assert_eq!((again.new_events, again.duplicate), (0, true), "{again:?}");
    let logged = store
        .get_delivery(again.delivery_id)
        .await
        .expect("get_delivery")
        .expect("logged");
    assert_eq!((logged.new_events, logged.duplicate), (0, true));

    let empty = json!({ "object": "whatsapp_business_account", "entry": [] });
    for received_at_ms in [3_000, 4_000] {
        let outcome = ingest_one(&*store, incoming(&empty, received_at_ms)).await;
        assert!(!outcome.duplicate, "nothing to repeat: {outcome:?}");
        let logged = store
            .get_delivery(outcome.delivery_id)
            .await
            .expect("get_delivery")
            .expect("an empty webhook is logged too");
        assert_eq!(logged.body, bytes(&empty));
    }
}

/// 5. Three concurrent ingests (three transactions on Postgres) of one webhook.
async fn concurrent_ingests_of_the_same_webhook_store_one_message(store: Arc<dyn Store>) {
    let webhook = text_webhook(PHONE, "15551230004", "wamid.race", 1_700_000_400, "race");
    let batches: Vec<Vec<IncomingWebhook>> = (0..3)
        .map(|i| vec![incoming(&webhook, 1_000 + i)])
        .collect();
    let results = futures::future::join_all(batches.iter().map(|b| store.ingest(b, 5_000))).await;

    let outcomes: Vec<IngestOutcome> = results
        .into_iter()
        .map(|r| r.expect("every concurrent ingest succeeds").remove(0))
        .collect();
    assert_eq!(
        outcomes.iter().map(|o| o.new_messages).sum::<u32>(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| !o.duplicate).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        all_messages(&*store, PHONE, "15551230004", 10).await.len(),
        1,
        "exactly one message"
    );
    let ids: BTreeSet<i64> = outcomes.iter().map(|o| o.delivery_id).collect();
    assert_eq!(ids.len(), 3, "three deliveries logged");
}

/// 6. Out-of-order, duplicate, terminal and unranked statuses.
async fn statuses_move_the_state_forward_only(store: Arc<dyn Store>) {
    let to = "15551230005";
    let mut at = 1_000;
    let mut send = async |wamid: &str, status: &str, ts: i64, errors: Option<Value>| {
        at += 1;
        ingest_one(
            &*store,
            incoming(&status_webhook(PHONE, wamid, status, ts, to, errors), at),
        )
        .await
    };

    // read, delivered, sent, then delivered again (another body, another time).
    send("wamid.out1", "read", 130, None).await;
    send("wamid.out1", "delivered", 120, None).await;
    send("wamid.out1", "sent", 110, None).await;
    let again = send("wamid.out1", "delivered", 125, None).await;
    assert_eq!(again.new_statuses, 0, "a status already known is not new");
    let m = outbound(&*store, "wamid.out1").await;
    assert_eq!(m.status.as_deref(), Some("read"));
    assert_eq!(m.contact_id, to);
    let line = store
        .status_timelines(&["wamid.out1"])
        .await
        .expect("timeline");
    let got: Vec<(&str, i64)> = line
        .iter()
        .map(|s| (s.status.as_str(), s.timestamp_s))
        .collect();
    assert_eq!(
        got,
        [("sent", 110), ("delivered", 120), ("read", 130)],
        "each once, by Meta time"
    );

    // failed after delivered: failed; its errors are kept.
    let errors = json!([{ "code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                          "error_data": { "details": "receiver incapable" } }]);
    send("wamid.out2", "delivered", 200, None).await;
    send("wamid.out2", "failed", 210, Some(errors)).await;
    assert_eq!(
        outbound(&*store, "wamid.out2").await.status.as_deref(),
        Some("failed")
    );
    let line = store
        .status_timelines(&["wamid.out2"])
        .await
        .expect("timeline");
    let failed = line
        .iter()
        .find(|s| s.status == "failed")
        .expect("failed in the timeline");
    assert!(
        failed.errors_json.contains("131026"),
        "{}",
        failed.errors_json
    );

    // delivered (and read) after failed: still failed.
    send("wamid.out3", "failed", 300, None).await;
    send("wamid.out3", "delivered", 290, None).await;
    send("wamid.out3", "read", 310, None).await;
    assert_eq!(
        outbound(&*store, "wamid.out3").await.status.as_deref(),
        Some("failed")
    );
    assert_eq!(
        timeline(&*store, "wamid.out3").await,
        ["delivered", "failed", "read"]
    );

    // played after read: played.
    send("wamid.out4", "read", 400, None).await;
    send("wamid.out4", "played", 410, None).await;
    assert_eq!(
        outbound(&*store, "wamid.out4").await.status.as_deref(),
        Some("played")
    );

    // An unknown status goes into the timeline only.
    send("wamid.out5", "delivered", 500, None).await;
    let deleted = send("wamid.out5", "deleted", 510, None).await;
    assert_eq!(deleted.new_statuses, 1);
    assert_eq!(
        outbound(&*store, "wamid.out5").await.status.as_deref(),
        Some("delivered")
    );
    assert_eq!(
        timeline(&*store, "wamid.out5").await,
        ["delivered", "deleted"]
    );
}

/// A status may arrive before the echo of the message it is about (two webhooks, two races):
/// the echo must still be stored, not dropped because the status created the row first.
async fn an_echo_arriving_after_its_status_fills_in_the_message(store: Arc<dyn Store>) {
    let to = "15551230006";
    ingest_one(
        &*store,
        incoming(
            &status_webhook(PHONE, "wamid.echo1", "delivered", 600, to, None),
            1_000,
        ),
    )
    .await;
    let echo = ingest_one(
        &*store,
        incoming(
            &echo_webhook(PHONE, to, "wamid.echo1", 599, "sent from the app"),
            2_000,
        ),
    )
    .await;

    let m = outbound(&*store, "wamid.echo1").await;
    assert_eq!(m.status.as_deref(), Some("delivered"), "the state is kept");
    assert_eq!(
        (
            m.origin.as_str(),
            m.kind.as_str(),
            m.text_body.as_deref(),
            m.timestamp_s
        ),
        ("echo", "text", Some("sent from the app"), 599),
        "the echo's content is stored (new_messages = {})",
        echo.new_messages
    );
}

/// 7. The customer service window: the newest inbound time, never moved back.
async fn last_inbound_is_the_newest_inbound_message_time(store: Arc<dyn Store>) {
    let user = "15551230007";
    ingest_one(
        &*store,
        incoming(
            &text_webhook(PHONE, user, "wamid.w1", 1_700_000_100, "a"),
            1_000,
        ),
    )
    .await;
    assert_eq!(
        store
            .get_contact(PHONE, user)
            .await
            .expect("get_contact")
            .expect("contact")
            .last_inbound_s,
        1_700_000_100
    );

    ingest_one(
        &*store,
        incoming(
            &text_webhook(PHONE, user, "wamid.w2", 1_700_000_300, "b"),
            2_000,
        ),
    )
    .await;
    ingest_one(
        &*store,
        incoming(
            &text_webhook(PHONE, user, "wamid.w3", 1_700_000_200, "c"),
            3_000,
        ),
    )
    .await;
    let contact = store
        .get_contact(PHONE, user)
        .await
        .expect("get_contact")
        .expect("contact");
    assert_eq!(
        contact.last_inbound_s, 1_700_000_300,
        "an older message arriving later does not move it back"
    );
    assert_eq!(contact.last_seen_ms, 3_000);

    // Inside one batch too: the max, whatever the order.
    let batch = [
        incoming(
            &text_webhook(PHONE, user, "wamid.w4", 1_700_000_500, "d"),
            4_000,
        ),
        incoming(
            &text_webhook(PHONE, user, "wamid.w5", 1_700_000_400, "e"),
            4_001,
        ),
    ];
    store.ingest(&batch, 5_000).await.expect("ingest");
    let contact = store
        .get_contact(PHONE, user)
        .await
        .expect("get_contact")
        .expect("contact");
    assert_eq!(contact.last_inbound_s, 1_700_000_500);
    assert_eq!(
        store
            .get_contact(PHONE, "15550000000")
            .await
            .expect("get_contact"),
        None
    );
}

/// 8. Profile names, pagination by cursor, filter by number.
async fn contacts_keep_their_name_and_page_by_cursor(store: Arc<dyn Store>) {
    // The name from contacts[] is kept when a later webhook has none.
    let named = with_profile_name(
        text_webhook(PHONE, "15551239000", "wamid.c0", 100, "hi"),
        "Ada",
    );
    ingest_one(&*store, incoming(&named, 1_000)).await;
    ingest_one(
        &*store,
        incoming(
            &text_webhook(PHONE, "15551239000", "wamid.c0b", 101, "again"),
            1_001,
        ),
    )
    .await;
    let ada = store
        .get_contact(PHONE, "15551239000")
        .await
        .expect("get_contact")
        .expect("contact");
    assert_eq!(ada.profile_name.as_deref(), Some("Ada"));
    assert_eq!(ada.wa_id.as_deref(), Some("15551239000"));
    assert_eq!((ada.first_seen_ms, ada.last_seen_ms), (1_000, 1_001));

    // Seven more on PHONE (some seen at the same millisecond, so ties need the cursor's keys)
    // and three on OTHER_PHONE.
    let mut expected_phone: BTreeSet<String> = BTreeSet::from(["15551239000".to_owned()]);
    for i in 1..=7 {
        let user = format!("1555123900{i}");
        let at = 2_000 + i / 2;
        ingest_one(
            &*store,
            incoming(
                &text_webhook(PHONE, &user, &format!("wamid.c{i}"), 100 + i, "x"),
                at,
            ),
        )
        .await;
        expected_phone.insert(user);
    }
    for i in 1..=3 {
        let user = format!("1555123910{i}");
        ingest_one(
            &*store,
            incoming(
                &text_webhook(OTHER_PHONE, &user, &format!("wamid.o{i}"), 200, "x"),
                2_002,
            ),
        )
        .await;
    }

    let page = all_contacts(&*store, PHONE, 3).await;
    let users: Vec<&str> = page.iter().map(|c| c.contact_id.as_str()).collect();
    assert_eq!(users.len(), 8, "every contact once: {users:?}");
    assert_eq!(
        users.iter().map(|u| u.to_string()).collect::<BTreeSet<_>>(),
        expected_phone,
        "{users:?}"
    );
    assert!(page.iter().all(|c| c.business_phone_number_id == PHONE));
    assert_sorted_most_recent_first(&page);

    let every = all_contacts(&*store, "", 3).await;
    assert_eq!(every.len(), 11, "both numbers, each contact once");
    let distinct: BTreeSet<(&str, &str)> = every
        .iter()
        .map(|c| (c.business_phone_number_id.as_str(), c.contact_id.as_str()))
        .collect();
    assert_eq!(distinct.len(), 11);
    assert_sorted_most_recent_first(&every);

    let other = all_contacts(&*store, OTHER_PHONE, 3).await;
    assert_eq!(other.len(), 3);
    assert!(
        other
            .iter()
            .all(|c| c.business_phone_number_id == OTHER_PHONE)
    );
}

fn assert_sorted_most_recent_first(contacts: &[StoredContact]) {
    let keys: Vec<_> = contacts
        .iter()
        .map(|c| {
            (
                std::cmp::Reverse(c.last_seen_ms),
                c.business_phone_number_id.clone(),
                c.contact_id.clone(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(
        keys, sorted,
        "most recently seen first, then by number and contact"
    );
}

/// 9. A conversation, newest first, page by page.
async fn messages_list_newest_first_by_cursor(store: Arc<dyn Store>) {
    let user = "15551230009";
    // Meta times with ties (the id breaks them: the later stored comes first).
    let times = [100, 101, 101, 102, 103, 103, 104];
    for (i, ts) in times.iter().enumerate() {
        let webhook = text_webhook(
            PHONE,
            user,
            &format!("wamid.m{i}"),
            *ts,
            &format!("message {i}"),
        );
        ingest_one(&*store, incoming(&webhook, 1_000 + i as i64)).await;
    }
    // Other conversations: another user, and the same user on another number.
    ingest_one(
        &*store,
        incoming(
            &text_webhook(PHONE, "15551230010", "wamid.x1", 150, "other user"),
            3_000,
        ),
    )
    .await;
    ingest_one(
        &*store,
        incoming(
            &text_webhook(OTHER_PHONE, user, "wamid.x2", 150, "other number"),
            3_001,
        ),
    )
    .await;

    let listed = all_messages(&*store, PHONE, user, 3).await;
    let wamids: Vec<&str> = listed.iter().map(|m| m.wamid.as_str()).collect();
    assert_eq!(
        wamids,
        [
            "wamid.m6", "wamid.m5", "wamid.m4", "wamid.m3", "wamid.m2", "wamid.m1", "wamid.m0"
        ]
    );
    assert!(
        listed
            .iter()
            .all(|m| m.business_phone_number_id == PHONE && m.contact_id == user)
    );

    let first_page = store
        .list_messages(PHONE, user, None, 3)
        .await
        .expect("list_messages");
    assert_eq!(first_page.len(), 3);
    assert_eq!(first_page[0].text_body.as_deref(), Some("message 6"));
}

/// 10. Outcomes follow the input order; delivery ids are distinct and increasing.
async fn batch_outcomes_are_in_input_order_with_increasing_delivery_ids(store: Arc<dyn Store>) {
    let earlier = ingest_one(
        &*store,
        incoming(
            &text_webhook(PHONE, "15551230011", "wamid.b0", 90, "before"),
            500,
        ),
    )
    .await;

    // An odd webhook (a message without an id, and a field nobody knows yet) beside a fine one.
    let odd = envelope(
        "messages",
        json!({
            "messaging_product": "whatsapp",
            "metadata": metadata(PHONE),
            "messages": [{ "from": "15551230011", "timestamp": "91", "type": "text", "text": { "body": "no id" } }]
        }),
    );
    let fine = text_webhook(PHONE, "15551230011", "wamid.b1", 92, "fine");
    let batch = [incoming(&odd, 1_000), incoming(&fine, 1_001)];
    let outcomes = store.ingest(&batch, 2_000).await.expect("ingest");

    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        (
            outcomes[0].counts.messages,
            outcomes[0].counts.other_fields,
            outcomes[0].new_messages
        ),
        (0, 1, 0)
    );
    assert_eq!(
        (outcomes[1].counts.messages, outcomes[1].new_messages),
        (1, 1)
    );
    assert!(
        earlier.delivery_id < outcomes[0].delivery_id,
        "{earlier:?} {outcomes:?}"
    );
    assert!(
        outcomes[0].delivery_id < outcomes[1].delivery_id,
        "{outcomes:?}"
    );
    for (webhook, outcome) in batch.iter().zip(&outcomes) {
        let delivery = store
            .get_delivery(outcome.delivery_id)
            .await
            .expect("get_delivery")
            .expect("logged");
        assert_eq!(
            delivery.body, webhook.raw_body,
            "delivery {} is this slot's",
            outcome.delivery_id
        );
        assert_eq!(delivery.received_at_ms, webhook.received_at_ms);
        assert_eq!(delivery.stored_at_ms, 2_000);
    }
    assert_eq!(
        inbound(&*store, "wamid.b1").await.text_body.as_deref(),
        Some("fine")
    );
    let events = store
        .list_events("messages", 0, 10)
        .await
        .expect("list_events");
    assert_eq!(
        events.len(),
        1,
        "the message without an id is kept as an event"
    );
    assert_eq!(events[0].delivery_id, outcomes[0].delivery_id);
}

/// 11. Events by field, oldest first, continued after an id.
async fn events_filter_by_field_and_page_by_after_id(store: Arc<dyn Store>) {
    for i in 0..5 {
        let value = json!({ "phone_number": "15550001111", "event": "VERIFIED_ACCOUNT", "n": i });
        ingest_one(
            &*store,
            incoming(&envelope("account_update", value), 1_000 + i),
        )
        .await;
        if i < 3 {
            let value = json!({ "messaging_product": "whatsapp", "metadata": metadata(PHONE),
                                "user_preferences": [{ "wa_id": "15551230012", "value": "stop", "n": i }] });
            ingest_one(
                &*store,
                incoming(&envelope("user_preferences", value), 2_000 + i),
            )
            .await;
        }
    }

    let mut pages = Vec::new();
    let mut after_id = 0;
    loop {
        let page = store
            .list_events("account_update", after_id, 2)
            .await
            .expect("list_events");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after_id = last.id;
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let events: Vec<_> = pages.into_iter().flatten().collect();
    assert!(
        events
            .iter()
            .all(|e| e.field == "account_update" && e.kind == "field" && e.waba_id == WABA)
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    for (i, e) in events.iter().enumerate() {
        let raw: Value = serde_json::from_str(&e.raw_json).expect("raw JSON");
        assert_eq!(raw["n"], i, "in arrival order");
    }

    let prefs = store
        .list_events("user_preferences", 0, 100)
        .await
        .expect("list_events");
    assert_eq!(prefs.len(), 3);
    assert!(
        prefs
            .iter()
            .all(|e| e.field == "user_preferences" && e.business_phone_number_id == PHONE)
    );
    assert_eq!(
        store
            .list_events("", 0, 100)
            .await
            .expect("list_events")
            .len(),
        8,
        "every field"
    );
    assert_eq!(
        store
            .list_events("calls", 0, 100)
            .await
            .expect("list_events")
            .len(),
        0
    );
}

/// 12. Health and identity (the generated test also checked the name against its module).
async fn ping_and_backend_name(store: Arc<dyn Store>) {
    store.ping().await.expect("ping");
    store.ping().await.expect("ping again");
    assert!(
        ["postgres", "sqlite"].contains(&store.backend()),
        "{}",
        store.backend()
    );
}

async fn the_pool_says_how_many_connections_are_idle_and_lent(store: Arc<dyn Store>) {
    // Opened with 8 connections at most; SQLite keeps its own 4 (one writer, a few readers).
    let max = if store.backend() == "postgres" { 8 } else { 4 };
    store.ping().await.expect("ping");
    // A connection goes back to the pool in the background once its query is done.
    let mut stats = store.pool_stats();
    for _ in 0..200 {
        if stats.in_use == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        stats = store.pool_stats();
    }
    assert_eq!(stats.max, max, "{stats:?}");
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert!(
        (1..=max).contains(&stats.idle),
        "the pinged connection waits in the pool: {stats:?}"
    );
}

async fn timelines_of_several_messages_come_in_one_call(store: Arc<dyn Store>) {
    let to = "15551230099";
    for (at, (wamid, status, ts)) in [
        ("wamid.a", "read", 30),
        ("wamid.b", "sent", 5),
        ("wamid.a", "sent", 10),
        ("wamid.c", "sent", 7),
    ]
    .into_iter()
    .enumerate()
    {
        ingest_one(
            &*store,
            incoming(
                &status_webhook(PHONE, wamid, status, ts, to, None),
                2_000 + at as i64,
            ),
        )
        .await;
    }
    let lines = store
        .status_timelines(&["wamid.a", "wamid.b", "wamid.unknown"])
        .await
        .expect("timelines");
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|s| (s.wamid.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("wamid.a", "sent"),
            ("wamid.a", "read"),
            ("wamid.b", "sent")
        ],
        "only the wamids asked for, each by Meta time"
    );
    assert!(
        store
            .status_timelines(&[])
            .await
            .expect("no wamids")
            .is_empty()
    );
}
