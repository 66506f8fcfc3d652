//! What the gateway refuses: bad or missing signatures, oversized bodies, bodies that are not
//! WhatsApp webhooks. Each gets the right 4xx with a JSON error naming the problem, and nothing
//! of it is stored: no delivery, message, contact or event appears.
use reqwest::StatusCode;
use serde_json::Value;
use tonic::Code;

use crate::harness::{Backend, TestMesh};
use crate::payloads::{self, now_s};
use crate::reads;

on_both_backends!(
    bad_or_missing_signatures_are_refused_and_nothing_is_stored,
    a_body_over_3_mb_is_413_and_nothing_is_stored,
    bodies_that_are_not_whatsapp_webhooks_are_400_and_nothing_is_stored,
);

/// Asserts the answer's status and that its JSON `error` mentions `needle`.
async fn assert_refused(
    mesh: &TestMesh,
    case: &str,
    body: &[u8],
    signature: Option<&str>,
    expected: StatusCode,
    needle: &str,
) {
    let (status, answer) = mesh.post_raw(body, signature).await;
    assert_eq!(status, expected, "{case}: {answer}");
    let error = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: the answer is not {{\"error\": ...}}: {answer}"));
    assert!(
        error.contains(needle),
        "{case}: the error {error:?} should mention {needle:?}"
    );
    assert_eq!(
        answer.as_object().map(|o| o.len()),
        Some(1),
        "{case}: only `error` in {answer}"
    );
}

/// Asserts that messaging holds nothing at all, and no message with any of `wamids`.
async fn assert_nothing_stored(mesh: &TestMesh, wamids: &[&str]) {
    let grpc = mesh.grpc();
    let first = reads::delivery(&grpc, 1).await;
    assert_eq!(
        first.as_ref().map_err(|s| s.code()).err(),
        Some(Code::NotFound),
        "GetWebhookDelivery(1): {first:?}"
    );
    assert_eq!(
        reads::events(&grpc, "").await,
        vec![],
        "no webhook event is stored"
    );
    assert_eq!(reads::contacts(&grpc).await, vec![], "no contact is stored");
    for wamid in wamids {
        reads::assert_no_message(&grpc, wamid).await;
    }
}

async fn bad_or_missing_signatures_are_refused_and_nothing_is_stored(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let body = payloads::inbound_text("15551230001", "wamid.signature", now_s(), "hello");

    let forged = wamesh_whatsapp::sign(b"another app's secret", &body);
    assert_refused(
        &mesh,
        "signed with another secret",
        &body,
        Some(&forged),
        StatusCode::FORBIDDEN,
        "does not match",
    )
    .await;
    assert_refused(
        &mesh,
        "no signature header",
        &body,
        None,
        StatusCode::UNAUTHORIZED,
        "missing",
    )
    .await;
    let malformed = [
        "sha256=zz".to_owned(),
        format!(
            "sha1={}",
            &wamesh_whatsapp::sign(mesh.app_secret.expose().as_bytes(), &body)[7..47]
        ),
        String::new(),
    ];
    for header in &malformed {
        assert_refused(
            &mesh,
            &format!("header {header:?}"),
            &body,
            Some(header),
            StatusCode::FORBIDDEN,
            "sha256=",
        )
        .await;
    }
    // A signature of other bytes (the body with one more space) does not cover this body.
    let mut other_body = body.clone();
    other_body.push(b' ');
    let of_other = wamesh_whatsapp::sign(mesh.app_secret.expose().as_bytes(), &other_body);
    assert_refused(
        &mesh,
        "signature of other bytes",
        &body,
        Some(&of_other),
        StatusCode::FORBIDDEN,
        "does not match",
    )
    .await;

    assert_nothing_stored(&mesh, &["wamid.signature"]).await;
    mesh.stop().await;
}

async fn a_body_over_3_mb_is_413_and_nothing_is_stored(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let body = payloads::inbound_text_of_len("15551230002", "wamid.too.large", 3 * 1024 * 1024 + 1);
    let signature = wamesh_whatsapp::sign(mesh.app_secret.expose().as_bytes(), &body);
    assert_refused(
        &mesh,
        "3 MiB + 1 byte, signed",
        &body,
        Some(&signature),
        StatusCode::PAYLOAD_TOO_LARGE,
        "exceeds",
    )
    .await;
    assert_nothing_stored(&mesh, &["wamid.too.large"]).await;
    mesh.stop().await;
}

async fn bodies_that_are_not_whatsapp_webhooks_are_400_and_nothing_is_stored(backend: Backend) {
    let mesh = TestMesh::start(backend).await;
    let valid = payloads::inbound_text("15551230003", "wamid.bad.body", now_s(), "caf-e");

    let truncated = valid[..valid.len() / 2].to_vec();
    let mut not_utf8 = valid.clone();
    let at = not_utf8
        .windows(5)
        .position(|w| w == b"caf-e")
        .expect("the text is in the body")
        + 3;
    not_utf8[at] = 0xff;
    let nested = "[".repeat(100_000).into_bytes();
    let page = br#"{"object":"page","entry":[]}"#.to_vec();
    let bare_change = br#"{"field":"messages","value":{}}"#.to_vec();
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("not JSON at all", b"hello, gateway".to_vec(), "not JSON"),
        ("truncated JSON", truncated, "not JSON"),
        ("invalid UTF-8", not_utf8, "UTF-8"),
        ("100k nested arrays", nested, "not JSON"),
        ("a Page webhook", page, "whatsapp_business_account"),
        (
            "a bare change, no envelope",
            bare_change,
            "whatsapp_business_account",
        ),
    ];
    for (case, body, needle) in &cases {
        let signature = wamesh_whatsapp::sign(mesh.app_secret.expose().as_bytes(), body);
        assert_refused(
            &mesh,
            case,
            body,
            Some(&signature),
            StatusCode::BAD_REQUEST,
            needle,
        )
        .await;
    }
    assert_nothing_stored(&mesh, &["wamid.bad.body"]).await;
    // The valid original goes through: the refusals above were about the bodies, not the mesh.
    let (status, answer) = mesh.post(&valid).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["new_messages"], Value::from(1));
    mesh.stop().await;
}
