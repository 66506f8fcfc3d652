//! The event log over gRPC (`wamesh.messaging.v1.Events/Subscribe`): a subscriber gets every
//! change once, in commit order, live as it commits; it resumes from its cursor after it went
//! away and after messaging restarted, missing nothing and repeating nothing; a filtering
//! subscriber gets checkpoints; a bad filter is refused by name.
use std::time::Duration;

use tonic::Streaming;
use wamesh_proto::messaging::v1 as pb;

use crate::harness::{Backend, TestMesh};
use crate::payloads::{self, now_s};

on_both_backends!(
    a_subscriber_gets_every_change_once_in_order_and_resumes_from_its_cursor,
    a_filtered_subscription_gets_its_kinds_and_checkpoints,
);

async fn subscribe(
    mesh: &TestMesh,
    after_seq: u64,
    kinds: &[&str],
) -> Streaming<pb::SubscribeResponse> {
    mesh.events()
        .subscribe(pb::SubscribeRequest {
            after_seq,
            kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
        })
        .await
        .expect("Subscribe")
        .into_inner()
}

/// The next answer of the stream, within a generous wait.
async fn next(stream: &mut Streaming<pb::SubscribeResponse>) -> pb::subscribe_response::Item {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("an answer within 20 s")
        .expect("a healthy stream")
        .expect("the stream goes on")
        .item
        .expect("an item")
}

async fn next_event(stream: &mut Streaming<pb::SubscribeResponse>) -> pb::Event {
    loop {
        match next(stream).await {
            pb::subscribe_response::Item::Event(event) => return event,
            pb::subscribe_response::Item::Checkpoint(_) => continue,
        }
    }
}

async fn user_writes(mesh: &TestMesh, user: &str, wamid: &str) {
    let (status, answer) = mesh
        .post(&payloads::inbound_text(user, wamid, now_s(), "hello"))
        .await;
    assert_eq!(status, 200, "{answer}");
}

async fn a_subscriber_gets_every_change_once_in_order_and_resumes_from_its_cursor(
    backend: Backend,
) {
    let mut mesh = TestMesh::start_split(backend).await;
    for n in 1..=3 {
        user_writes(&mesh, "15550000001", &format!("wamid.E{n}")).await;
    }
    let mut stream = subscribe(&mesh, 0, &[]).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_event(&mut stream).await);
    }
    // Live: what commits while subscribed arrives as it commits.
    user_writes(&mesh, "15550000001", "wamid.E4").await;
    seen.push(next_event(&mut stream).await);
    let wamids: Vec<&str> = seen.iter().map(|e| e.wamid.as_str()).collect();
    assert_eq!(wamids, ["wamid.E1", "wamid.E2", "wamid.E3", "wamid.E4"]);
    assert_eq!(seen.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for event in &seen {
        assert_eq!(event.kind, "message.received");
        assert_eq!(event.business_phone_number_id, payloads::PHONE);
        assert_eq!(event.contact_id, "15550000001");
        assert_eq!(event.r#type, "text");
        assert!(event.message_id > 0 && event.committed_at_unix_ms > 0);
    }
    drop(stream);

    // Away: what commits meanwhile waits for it at its cursor.
    user_writes(&mesh, "15550000002", "wamid.E5").await;
    // messaging restarts (its log is in the database).
    mesh.stop_messaging().await;
    mesh.restart_messaging().await;
    user_writes(&mesh, "15550000002", "wamid.E6").await;
    let mut stream = subscribe(&mesh, 4, &[]).await;
    let resumed = [next_event(&mut stream).await, next_event(&mut stream).await];
    assert_eq!(
        resumed
            .iter()
            .map(|e| (e.seq, e.wamid.as_str()))
            .collect::<Vec<_>>(),
        [(5, "wamid.E5"), (6, "wamid.E6")],
        "nothing missed, nothing repeated"
    );
    // A retried webhook (Meta's) changes nothing and appends nothing.
    user_writes(&mesh, "15550000002", "wamid.E6").await;
    user_writes(&mesh, "15550000003", "wamid.E7").await;
    assert_eq!(next_event(&mut stream).await.wamid, "wamid.E7");
    drop(stream);
    mesh.stop().await;
}

async fn a_filtered_subscription_gets_its_kinds_and_checkpoints(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    user_writes(&mesh, "15550000001", "wamid.F1").await;
    let (status, answer) = mesh
        .post(&payloads::statuses(vec![payloads::status(
            "wamid.OUT",
            "delivered",
            now_s(),
            "15550000001",
        )]))
        .await;
    assert_eq!(status, 200, "{answer}");
    user_writes(&mesh, "15550000001", "wamid.F2").await;

    let mut stream = subscribe(&mesh, 0, &["status.updated"]).await;
    let status = next_event(&mut stream).await;
    assert_eq!(
        (status.seq, status.kind.as_str(), status.status.as_str()),
        (2, "status.updated", "delivered")
    );
    assert_eq!(status.wamid, "wamid.OUT");
    // What follows was filtered out: a checkpoint carries the cursor past it.
    match next(&mut stream).await {
        pb::subscribe_response::Item::Checkpoint(checkpoint) => assert_eq!(checkpoint.seq, 3),
        other => panic!("a checkpoint, not {other:?}"),
    }
    drop(stream);

    let refused = mesh
        .events()
        .subscribe(pb::SubscribeRequest {
            after_seq: 0,
            kinds: vec!["message.exploded".into()],
        })
        .await
        .expect_err("an unknown kind is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("message.exploded"),
        "{refused:?}"
    );
    mesh.stop().await;
}
