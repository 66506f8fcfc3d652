//! The reads, answered with the exact numbers of the day of traffic.
use reqwest::StatusCode;
use serde_json::Value;
use wamesh_analytics::rollup::DAY_MS;

use super::harness::{Api, DAY, HOUR, NUMBER, approx, the_day};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_answers_the_exact_counts() {
    let api = Api::start().await;
    let rfc3339 = "from=2026-11-30T00:00:00Z&to=2026-12-01T01:00:00%2B01:00";
    for query in [the_day(), rfc3339.to_owned()] {
        let (status, o) = api.get(&format!("/api/analytics/overview?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {o}");
        let counts = ["messages_in", "messages_out", "delivered", "read", "failed"]
            .map(|name| o[name].as_u64().unwrap_or_else(|| panic!("{name}: {o}")));
        assert_eq!(counts, [12, 12, 8, 4, 5], "{query}");
        assert_eq!(
            o["failures_by_code"],
            serde_json::json!([{"code": 131026, "count": 4}, {"code": 132001, "count": 1}])
        );
        assert!(approx(&o["delivery_rate"], 8.0 / 12.0), "{o}");
        assert!(approx(&o["read_rate"], 4.0 / 12.0), "{o}");
        assert!(approx(&o["error_rate"], 5.0 / 13.0), "{o}");
        assert_eq!(o["delivery_time"]["count"], 8);
        assert!((o["delivery_time"]["p50_ms"].as_f64().unwrap() - 800.0).abs() <= 8.0);
        assert_eq!(o["active_users"], 12);
        assert!(approx(&o["response_rate"], 1.0));
        assert_eq!(o["sessions"], 12);
        assert_eq!(o["range"]["from_unix_ms"], DAY);
        assert_eq!(o["range"]["to_unix_ms"], DAY + DAY_MS);
        assert_eq!(o["range"]["from"], "2026-11-30T00:00:00.000Z");
        assert_eq!(o["range"]["to"], "2026-12-01T00:00:00.000Z");
    }

    let (_, ours) = api
        .get(&format!(
            "/api/analytics/overview?{}&number={NUMBER}",
            the_day()
        ))
        .await;
    assert_eq!(ours["messages_in"], 12);
    let (status, other) = api
        .get(&format!("/api/analytics/overview?{}&number=999", the_day()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&other["messages_in"], &other["failed"]),
        (&0.into(), &0.into())
    );

    // A named period is resolved by analytics: it ends at the end of the current hour.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, recent) = api.get("/api/analytics/overview?period=7d").await;
    assert_eq!(status, StatusCode::OK, "{recent}");
    let range = &recent["range"];
    let (from, to) = (
        range["from_unix_ms"].as_i64().unwrap(),
        range["to_unix_ms"].as_i64().unwrap(),
    );
    assert_eq!(to - from, 7 * DAY_MS);
    assert!((now..=now + HOUR).contains(&to), "{recent}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_series_has_one_point_per_bucket() {
    let api = Api::start().await;
    let (status, series) = api
        .get(&format!(
            "/api/analytics/timeseries?metric=messages_in&granularity=hour&{}",
            the_day()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(
        (&series["metric"], &series["granularity"]),
        (&"messages_in".into(), &"hour".into())
    );
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 24, "one point per hour, empty ones included");
    for (i, point) in points.iter().enumerate() {
        assert_eq!(point["at_unix_ms"], DAY + i as i64 * HOUR);
        assert_eq!(point["value"], if i < 12 { 1.0 } else { 0.0 }, "hour {i}");
    }
    assert_eq!(points[9]["at"], "2026-11-30T09:00:00.000Z");

    // Three days by day: only the middle one has traffic; filters pass through.
    let (status, series) = api
        .get(&format!(
            "/api/analytics/timeseries?metric=failed&granularity=day&from={}&to={}&error_code=131026&number={NUMBER}",
            DAY - DAY_MS,
            DAY + 2 * DAY_MS
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let values: Vec<f64> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [0.0, 4.0, 0.0]);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_come_sorted_as_asked() {
    let api = Api::start().await;
    let names = |body: &Value| -> Vec<String> {
        body["templates"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|t| t["template_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let day = the_day();
    let (status, by_name) = api
        .get(&format!(
            "/api/analytics/templates?{day}&sort=name&order=asc"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{by_name}");
    assert_eq!(names(&by_name), ["order_update", "promo", "welcome"]);
    let (_, by_name_desc) = api
        .get(&format!(
            "/api/analytics/templates?{day}&sort=name&order=desc"
        ))
        .await;
    assert_eq!(names(&by_name_desc), ["welcome", "promo", "order_update"]);
    let (_, by_read) = api
        .get(&format!(
            "/api/analytics/templates?{day}&sort=read_rate&order=desc&limit=1"
        ))
        .await;
    assert_eq!(names(&by_read), ["welcome"]);
    let welcome = &by_read["templates"][0];
    assert_eq!((&welcome["sent"], &welcome["read"]), (&6.into(), &4.into()));
    assert!(approx(&welcome["read_rate"], 4.0 / 6.0), "{welcome}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed() {
    let api = Api::start().await;
    for query in ["", "?firing=true&limit=10"] {
        let (status, body) = api.get(&format!("/api/analytics/alerts{query}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["alerts"],
            serde_json::json!([]),
            "no live traffic, no alert"
        );
    }
    let (status, body) = api.get("/api/analytics/alerts?limit=100000").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "analytics' own limit: {body}"
    );
    assert_eq!(body["error"]["code"], "invalid_argument");
    api.stop().await;
}
