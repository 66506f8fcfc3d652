//! The export, streamed from analytics into the HTTP body.
use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE, TRANSFER_ENCODING};
use serde_json::Value;

use super::harness::{Api, KEY, the_day};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_streams_csv_that_parses_and_sums_to_the_overview() {
    let api = Api::start().await;
    let day = the_day();
    let auth = format!("Bearer {KEY}");
    let response = api
        .get_with(
            &format!("/api/analytics/export?dataset=rollups&format=csv&granularity=hour&{day}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(CONTENT_TYPE), "text/csv; charset=utf-8");
    assert_eq!(
        header(TRANSFER_ENCODING),
        "chunked",
        "passed on as it comes, not gathered first to know its length"
    );
    assert_eq!(
        header(CONTENT_DISPOSITION),
        "attachment; filename=\"wamesh-rollups-20261130T000000Z-20261201T000000Z.csv\""
    );
    let csv = response.text().await.expect("the CSV");
    let mut lines = csv.lines();
    let columns: Vec<&str> = lines.next().expect("a header row").split(',').collect();
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} column in {columns:?}"))
    };
    let mut sums = [0_u64; 5];
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), columns.len(), "{line}");
        for (sum, name) in
            sums.iter_mut()
                .zip(["messages_in", "messages_out", "delivered", "read", "failed"])
        {
            *sum += cells[column(name)].parse::<u64>().expect("a count");
        }
    }
    assert_eq!(sums, [12, 12, 8, 4, 5], "the rows sum to the day's counts");

    let response = api
        .get_with(
            &format!("/api/analytics/export?dataset=messages&format=json&{day}"),
            &[("x-api-key", KEY)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).unwrap(),
        "application/x-ndjson"
    );
    let lines = response.text().await.expect("JSON lines");
    let facts: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        facts.len(),
        12 + 12 + 1,
        "every message in and out, and the refused one"
    );

    let unauthenticated = api
        .get_with(&format!("/api/analytics/export?dataset=rollups&{day}"), &[])
        .await;
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    api.stop().await;
}
