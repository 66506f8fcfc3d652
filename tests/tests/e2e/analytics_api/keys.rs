//! Operator keys: `Authorization: Bearer` or `X-API-Key`, 401 otherwise; none configured: 401 always.
use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use wamesh_runtime::Secret;

use super::harness::{Api, KEY, closed_url, json, the_day};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_routes_need_a_valid_key_in_either_header() {
    let api = Api::start().await;
    let path = format!("/api/analytics/overview?{}", the_day());
    let bearer = format!("Bearer {KEY}");
    let wrong_bearer = format!("Bearer {KEY}x");
    for (case, headers) in [
        ("no key", vec![]),
        (
            "wrong bearer",
            vec![("authorization", wrong_bearer.as_str())],
        ),
        ("wrong X-API-Key", vec![("x-api-key", "op-key")]),
        ("the key under another scheme", vec![("authorization", KEY)]),
    ] {
        let response = api.get_with(&path, &headers).await;
        assert_eq!(
            response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{case}"
        );
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{case}: {body}");
        assert!(body["error"]["message"].is_string(), "{case}: {body}");
        assert!(
            !body.to_string().contains(KEY),
            "{case}: the key is never echoed"
        );
    }
    for (case, headers) in [
        ("bearer", vec![("authorization", bearer.as_str())]),
        ("X-API-Key", vec![("x-api-key", KEY)]),
    ] {
        let (status, body) = json(api.get_with(&path, &headers).await).await;
        assert_eq!(status, StatusCode::OK, "{case}: {body}");
        assert_eq!(body["messages_in"], 12, "{case}");
    }
    // Health stays open, and the webhook route keeps its own (Meta's) checks.
    let health = api.get_with("/healthz", &[]).await;
    assert_eq!(health.status(), StatusCode::OK);
    let handshake = api.get_with("/api/webhooks/whatsapp", &[]).await;
    assert_eq!(handshake.status(), StatusCode::BAD_REQUEST);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_key_configured_every_operator_request_is_refused() {
    // The refusal comes before analytics is asked: none needs to run.
    let api = Api::gateway(Some(closed_url().await), vec![Secret::new("")]).await;
    for headers in [
        vec![],
        vec![("authorization", "Bearer ")],
        vec![("x-api-key", "")],
    ] {
        let response = api
            .get_with("/api/analytics/overview?period=24h", &headers)
            .await;
        assert_eq!(response.headers().get(WWW_AUTHENTICATE).unwrap(), "Bearer");
        let (status, body) = json(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("WAMESH_OPERATOR_API_KEYS"),
            "{body}"
        );
    }
    api.stop().await;
}
