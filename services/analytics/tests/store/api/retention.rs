//! The retention job through the real server.
use super::*;

async fn overview_of(client: &mut AnalyticsClient<Channel>, from: i64) -> pb::Overview {
    client
        .get_overview(pb::GetOverviewRequest {
            period: Some(pb::Period {
                period: Some(pb::period::Period::Range(pb::TimeRange {
                    from_unix_ms: from,
                    to_unix_ms: from + DAY_MS,
                })),
            }),
            business_phone_number_id: String::new(),
        })
        .await
        .expect("GetOverview")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_what_is_older_than_the_limit_and_nothing_else() {
    // The day of traffic, and a message the day after it.
    let mut events = day_of_traffic();
    let mut next_day = event(
        events.len() as i64 + 1,
        EventKind::MessageReceived,
        DAY + DAY_MS + 2 * HOUR,
        555,
    );
    next_day.wamid = "wamid.NEXT".into();
    events.push(next_day);
    // A retention that keeps the day after and everything since, and not the day.
    let today = wamesh_analytics::now_ms().div_euclid(DAY_MS);
    let retention_days = u32::try_from(today - (DAY + DAY_MS) / DAY_MS).unwrap();
    assert_eq!(
        wamesh_analytics::retention_cutoff(wamesh_analytics::now_ms(), retention_days),
        DAY + DAY_MS
    );
    let (mut client, stop) =
        serve_keeping(&events, &peaks_of_the_day(), None, retention_days).await;

    // The purge runs as analytics starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while overview_of(&mut client, DAY).await.messages_in > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old day was never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = overview_of(&mut client, DAY).await;
    assert_eq!((old.messages_out, old.failed, old.sessions), (0, 0, 0));
    assert!(old.rate_limit_peaks.is_empty());
    assert_eq!(old.delivery_time.unwrap().count, 0);
    let kept = overview_of(&mut client, DAY + DAY_MS).await;
    assert_eq!(kept.messages_in, 1, "the day after is kept");
    assert_eq!(kept.active_users, 1);
    assert_eq!(kept.rate_limit_peaks.len(), 1);
    let facts = export(
        &mut client,
        pb::ExportDataset::Messages,
        pb::ExportFormat::Json,
    )
    .await;
    assert_eq!(facts, "", "no fact of the purged day is left");
    stop.cancel();
}
