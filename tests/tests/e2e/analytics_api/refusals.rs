//! 400s naming the bad parameter, analytics' own refusals, and 503 when analytics is not
//! configured or down.
use reqwest::StatusCode;
use wamesh_runtime::Secret;

use super::harness::{Api, DAY, KEY, closed_url, the_day};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_by_name_before_analytics_is_asked() {
    // analytics is configured but down: a 400 proves the gateway never called it.
    let api = Api::gateway(Some(closed_url().await), vec![Secret::new(KEY)]).await;
    let day = the_day();
    for (path, parameter) in [
        ("/api/analytics/overview?period=1y".to_owned(), "period"),
        (
            format!("/api/analytics/overview?from={}&to={DAY}", DAY + 1),
            "from",
        ),
        (
            format!("/api/analytics/overview?from={DAY}&to={DAY}"),
            "from",
        ),
        (
            "/api/analytics/overview?from=yesterday&to=1".to_owned(),
            "from",
        ),
        (format!("/api/analytics/overview?from={DAY}"), "to"),
        (
            "/api/analytics/overview?period=7d&period=30d".to_owned(),
            "period",
        ),
        ("/api/analytics/overview?perod=7d".to_owned(), "perod"),
        (
            "/api/analytics/overview?number=%2B15550001".to_owned(),
            "number",
        ),
        (format!("/api/analytics/timeseries?{day}"), "metric"),
        (
            format!("/api/analytics/timeseries?metric=read&granularity=week&{day}"),
            "granularity",
        ),
        (
            format!("/api/analytics/timeseries?metric=read&direction=up&{day}"),
            "direction",
        ),
        (
            format!("/api/analytics/timeseries?metric=read&error_code=x&{day}"),
            "error_code",
        ),
        ("/api/analytics/templates?limit=ten".to_owned(), "limit"),
        (
            "/api/analytics/templates?order=sideways".to_owned(),
            "order",
        ),
        ("/api/analytics/alerts?limit=-3".to_owned(), "limit"),
        ("/api/analytics/alerts?firing=yes".to_owned(), "firing"),
        (
            format!("/api/analytics/export?dataset=rollups&format=xml&{day}"),
            "format",
        ),
        (
            format!("/api/analytics/export?dataset=users&{day}"),
            "dataset",
        ),
        (format!("/api/analytics/export?{day}"), "dataset"),
    ] {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument", "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(parameter), "{path}: {message}");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_analytics_refuses_is_a_400_with_its_message() {
    let api = Api::start().await;
    let (status, body) = api
        .get(&format!(
            "/api/analytics/timeseries?metric=happiness&{}",
            the_day()
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert!(
        body["error"]["parameter"].is_null(),
        "analytics' refusal: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("metric") && message.contains("happiness"),
        "{message}"
    );

    let (status, body) = api
        .get(&format!(
            "/api/analytics/templates?{}&sort=colour",
            the_day()
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour")
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_not_configured_or_down_is_a_503() {
    let day = the_day();
    let paths = [
        format!("/api/analytics/overview?{day}"),
        format!("/api/analytics/timeseries?metric=read&{day}"),
        format!("/api/analytics/templates?{day}"),
        "/api/analytics/alerts".to_owned(),
        format!("/api/analytics/export?dataset=rollups&{day}"),
    ];
    let api = Api::gateway(None, vec![Secret::new(KEY)]).await;
    for path in &paths {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_configured", "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("analytics is not configured"),
            "{body}"
        );
    }
    api.stop().await;

    let api = Api::gateway(Some(closed_url().await), vec![Secret::new(KEY)]).await;
    for path in &paths {
        let (status, body) = api.get(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{path}: {body}");
    }
    api.stop().await;
}
