//! The record: bounded, paginated, reset.
use serde_json::json;
use wamesh_simulator::SimulatorConfig;

use crate::harness::{Sim, config, template};

#[tokio::test]
async fn the_record_keeps_its_bound_pages_by_seq_and_resets() {
    let sim = Sim::start_with(SimulatorConfig {
        record_limit: 3,
        ..config(None)
    })
    .await;
    for i in 0..5 {
        sim.accepted(&template(
            &format!("1555000000{i}"),
            "hello_world",
            json!([]),
        ))
        .await;
    }
    let page = sim.get("/_sim/messages").await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![3, 4, 5], "the oldest went");
    assert_eq!(page["dropped"], 2);
    assert_eq!(page["more"], false);
    assert_eq!(
        sim.stats().await["record"],
        json!({"kept": 3, "dropped": 2})
    );

    let page = sim.get("/_sim/messages?after=3&limit=1").await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["seq"], 4);
    assert_eq!(page["next_after"], 4);
    assert_eq!(page["more"], true);
    let page = sim.get("/_sim/messages?after=4&limit=10").await;
    assert_eq!(page["messages"][0]["seq"], 5);
    assert_eq!(page["more"], false);
    let page = sim.get("/_sim/messages?after=5").await;
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["next_after"], 5, "an empty page keeps the cursor");

    for query in ["after=x", "limit=0", "limit=100001", "after=-1"] {
        let (status, answer) = sim
            .call(
                reqwest::Method::GET,
                &format!("/_sim/messages?{query}"),
                &json!(null),
            )
            .await;
        assert_eq!(status, 400, "{query}");
        let details = answer["error"]["error_data"]["details"].as_str().unwrap();
        assert!(
            details.contains(query.split('=').next().unwrap()),
            "{details}"
        );
    }

    let (status, _) = sim
        .call(reqwest::Method::DELETE, "/_sim/messages", &json!(null))
        .await;
    assert_eq!(status, 204);
    let page = sim.get("/_sim/messages").await;
    assert_eq!(page["messages"], json!([]));
    assert_eq!(page["dropped"], 0);
    sim.accepted(&template("15550000009", "hello_world", json!([])))
        .await;
    let page = sim.get("/_sim/messages").await;
    assert_eq!(page["messages"][0]["seq"], 6, "seq goes on after a reset");
}
