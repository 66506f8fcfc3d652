//! Reading conversations back over gRPC: pages newest first, and the 24-hour customer service
//! window, both fed by signed webhooks through the gateway.
use std::collections::HashSet;

use wamesh_proto::messaging::v1::{GetServiceWindowRequest, ServiceWindow};

use crate::harness::{Backend, Grpc, TestMesh};
use crate::payloads::{self, PHONE, now_s};
use crate::reads;

on_both_backends!(
    list_messages_pages_newest_first_with_every_message_once,
    the_service_window_is_open_after_a_message_now_and_closed_25_hours_later,
);

const DAY_S: i64 = 24 * 60 * 60;

async fn list_messages_pages_newest_first_with_every_message_once(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();
    let from = "15551230010";
    let t0 = now_s() - 600;
    // Posted out of order, so the pages' order comes from the timestamps, not arrival.
    for i in [2, 0, 4, 1, 3] {
        let body = payloads::inbound_text(
            from,
            &format!("wamid.page.{i}"),
            t0 + i,
            &format!("message {i}"),
        );
        let (status, answer) = mesh.post(&body).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Another contact's message must not show up in this conversation.
    let (status, _) = mesh
        .post(&payloads::inbound_text(
            "15551239999",
            "wamid.page.other",
            t0,
            "other",
        ))
        .await;
    assert_eq!(status, 200);

    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = reads::messages_page(&grpc, from, 2, token).await;
        assert!(page.len() <= 2, "a page holds at most page_size messages");
        pages.push(page.iter().map(|m| m.wamid.clone()).collect::<Vec<_>>());
        if next.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "pagination does not end: {pages:?}");
        token = next;
    }
    let expected = [
        vec!["wamid.page.4", "wamid.page.3"],
        vec!["wamid.page.2", "wamid.page.1"],
        vec!["wamid.page.0"],
    ];
    assert_eq!(pages, expected);
    let all: Vec<String> = pages.concat();
    assert_eq!(
        all.iter().collect::<HashSet<_>>().len(),
        5,
        "every message once: {all:?}"
    );
    mesh.stop().await;
}

async fn window(grpc: &Grpc, contact_id: &str) -> ServiceWindow {
    let request = GetServiceWindowRequest {
        business_phone_number_id: PHONE.to_owned(),
        contact_id: contact_id.to_owned(),
    };
    grpc.clone()
        .get_service_window(request)
        .await
        .unwrap_or_else(|s| panic!("GetServiceWindow({contact_id}): {s}"))
        .into_inner()
}

async fn the_service_window_is_open_after_a_message_now_and_closed_25_hours_later(
    backend: Backend,
) {
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();
    let now = now_s();
    let old = now - 25 * 60 * 60;
    for (from, wamid, at) in [
        ("15551230011", "wamid.window.now", now),
        ("15551230012", "wamid.window.old", old),
    ] {
        let (status, answer) = mesh
            .post(&payloads::inbound_text(from, wamid, at, "hi"))
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    let open = window(&grpc, "15551230011").await;
    assert!(open.open, "{open:?}");
    assert_eq!(
        (open.last_inbound_unix_s, open.expires_at_unix_s),
        (now, now + DAY_S)
    );
    let closed = window(&grpc, "15551230012").await;
    assert!(!closed.open, "{closed:?}");
    assert_eq!(
        (closed.last_inbound_unix_s, closed.expires_at_unix_s),
        (old, old + DAY_S)
    );
    let never = window(&grpc, "15551230013").await;
    assert_eq!(
        never,
        ServiceWindow {
            open: false,
            expires_at_unix_s: 0,
            last_inbound_unix_s: 0
        },
        "a stranger never wrote"
    );
    mesh.stop().await;
}
