//! The shared webhook corpus (real payloads of every kind Meta sends), each POSTed signed and
//! read back over gRPC. Ids repeat across files (`wamid.xyzxyz`): the first one stored wins, so
//! the checks are that every id is readable, not what it holds.
use serde_json::Value;
use wamesh_proto::messaging::v1::Direction;

use crate::harness::{Backend, TestMesh};
use crate::reads;

on_both_backends!(every_corpus_payload_is_accepted_kept_byte_identical_and_readable);

/// What one corpus payload says, as the tests read it from the JSON.
#[derive(Default)]
struct Expected {
    inbound: Vec<String>,
    echoes: Vec<String>,
    /// `(wamid, status)`.
    statuses: Vec<(String, String)>,
    /// `(field, value)` of changes that are not messages.
    other_fields: Vec<(String, Value)>,
    /// Codes of `value.errors[]`.
    error_codes: Vec<i64>,
}

fn expected(body: &[u8]) -> Expected {
    let root: Value = serde_json::from_slice(body).expect("corpus payloads are JSON");
    let mut expected = Expected::default();
    let ids = |value: &Value, key: &str| -> Vec<String> {
        let items = value[key].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect()
    };
    for entry in root["entry"].as_array().expect("entry[]") {
        for change in entry["changes"].as_array().expect("changes[]") {
            let value = &change["value"];
            match change["field"].as_str().expect("field") {
                "messages" => {
                    expected.inbound.extend(ids(value, "messages"));
                    for s in value["statuses"].as_array().into_iter().flatten() {
                        if let (Some(id), Some(status)) = (s["id"].as_str(), s["status"].as_str()) {
                            expected
                                .statuses
                                .push((id.to_owned(), status.to_ascii_lowercase()));
                        }
                    }
                    for e in value["errors"].as_array().into_iter().flatten() {
                        expected
                            .error_codes
                            .push(e["code"].as_i64().expect("error code"));
                    }
                }
                "smb_message_echoes" => expected.echoes.extend(ids(value, "message_echoes")),
                other => expected
                    .other_fields
                    .push((other.to_owned(), value.clone())),
            }
        }
    }
    expected
}

async fn every_corpus_payload_is_accepted_kept_byte_identical_and_readable(backend: Backend) {
    let corpus = wamesh_testkit::webhook_corpus();
    assert_eq!(corpus.len(), 74, "the corpus holds 74 payloads");
    let mesh = TestMesh::start(backend).await;
    let grpc = mesh.grpc();

    let mut checked = [0usize; 4];
    for (name, body) in &corpus {
        let (status, answer) = mesh.post(body).await;
        assert_eq!(status, 200, "{name}: {answer}");
        let delivery_id = answer["delivery_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: no delivery_id in {answer}"));
        let delivery = reads::existing_delivery(&grpc, delivery_id).await;
        assert!(
            delivery.raw_body == *body,
            "{name}: the stored body differs from the one posted"
        );
        assert_eq!(delivery.size_bytes, body.len() as u64, "{name}");

        let expected = expected(body);
        for wamid in &expected.inbound {
            let m = reads::existing_message(&grpc, wamid, Direction::Inbound).await;
            assert_eq!(
                (m.wamid.as_str(), m.direction()),
                (wamid.as_str(), Direction::Inbound),
                "{name}"
            );
            checked[0] += 1;
        }
        for wamid in &expected.echoes {
            let m = reads::existing_message(&grpc, wamid, Direction::Outbound).await;
            assert_eq!(
                (m.wamid.as_str(), m.direction()),
                (wamid.as_str(), Direction::Outbound),
                "{name}"
            );
            checked[1] += 1;
        }
        for (wamid, status) in &expected.statuses {
            let m = reads::existing_message(&grpc, wamid, Direction::Outbound).await;
            assert_eq!(m.direction(), Direction::Outbound, "{name}: {wamid}");
            assert!(
                reads::timeline(&m).contains(&status.as_str()),
                "{name}: {wamid} has no {status:?} in its timeline {:?}",
                reads::timeline(&m)
            );
            checked[2] += 1;
        }
        for (field, value) in &expected.other_fields {
            let events = reads::events(&grpc, field).await;
            let found = events.iter().any(|e| {
                e.kind == "field"
                    && serde_json::from_str::<Value>(&e.raw_json).ok().as_ref() == Some(value)
            });
            assert!(
                found,
                "{name}: no {field:?} event holds its value (events of that field: {})",
                events.len()
            );
            checked[3] += 1;
        }
        if !expected.error_codes.is_empty() {
            let events = reads::events(&grpc, "messages").await;
            for code in &expected.error_codes {
                assert!(
                    events
                        .iter()
                        .any(|e| e.kind == "error" && e.error_code == *code),
                    "{name}: value.errors code {code} is not listed as an event"
                );
            }
        }
    }
    // The corpus has every kind: make sure none of the loops above silently checked nothing.
    assert!(
        checked.iter().all(|n| *n > 0),
        "inbound, echoes, statuses, other fields checked: {checked:?}"
    );
    mesh.stop().await;
}
