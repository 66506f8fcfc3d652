//! One trace for a conversation turn, across the four services as separate processes, each
//! exporting its spans over OTLP to a receiver in this test: a simulated user writes; this
//! test, subscribed to messaging's event log, replies under the event's trace context; the
//! reply goes out through rate-limit to the simulated Meta and is read. The trace holds the
//! gateway's webhook, messaging's ingest and processing, the reply's enqueue and send,
//! rate-limit's decision, the Graph API call, and the sent, delivered and read confirmations,
//! each with the right parent; each confirmation is linked to its status webhook's own span.
//! Then nothing any process logged or exported holds a phone number, a token, the app secret
//! or a message body in clear.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh::otlp_sink::Collector;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::events_client::EventsClient;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_runtime::Shutdown;

use super::processes::{ACCESS_TOKEN, APP_SECRET, MeshOptions, MeshProcesses, PHONE_NUMBER_ID};

const USER: &str = "15557654321";
const USER_SAYS: &str = "Where is my parcel, order 3141?";
const WE_SAY: &str = "It left our depot this morning!";

/// An exported span with the service that exported it.
struct Exported {
    service: String,
    span: Span,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self.span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match value.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => s.clone(),
            Any::IntValue(i) => i.to_string(),
            Any::BoolValue(b) => b.to_string(),
            Any::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
    }
}

fn exported(collector: &Collector) -> Vec<Exported> {
    let mut spans = Vec::new();
    for request in collector.requests() {
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .expect("every resource has a service.name");
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Exported {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
    spans
}

fn trace_id_of(traceparent: &str) -> Vec<u8> {
    let hex = traceparent.split('-').nth(1).expect("a traceparent");
    hex::decode(hex).expect("hex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_users_message_to_the_read_receipt_of_the_reply() {
    let collector = Collector::keeping();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let stop_collector = Shutdown::new();
    tokio::spawn(collector.clone().serve(listener, stop_collector.clone()));
    let mesh = MeshProcesses::start(MeshOptions {
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint)],
        ..MeshOptions::default()
    })
    .await;

    // This test plays a bot: it follows the event log for users' messages.
    let channel = Channel::from_shared(mesh.messaging.url())
        .unwrap()
        .connect()
        .await
        .expect("messaging answers");
    let mut events = EventsClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest {
            after_seq: 0,
            kinds: vec!["message.received".into()],
        })
        .await
        .expect("Subscribe")
        .into_inner();
    let http = reqwest::Client::new();
    let wrote = http
        .post(format!("{}/_sim/inbound", mesh.simulator.url()))
        .json(
            &serde_json::json!({"phone_number_id": PHONE_NUMBER_ID, "from": USER,
                                  "text": USER_SAYS}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(wrote.status(), 200, "the simulated user wrote");
    let event = loop {
        let answer = tokio::time::timeout(Duration::from_secs(30), events.message())
            .await
            .expect("the user's message within 30 s")
            .expect("a healthy stream")
            .expect("the stream goes on");
        if let Some(pb::subscribe_response::Item::Event(event)) = answer.item {
            break event;
        }
    };
    assert_eq!(event.contact_id, USER);
    assert!(!event.traceparent.is_empty(), "the event carries its trace");

    // The reply, under the event's trace context.
    let mut reply = tonic::Request::new(pb::SendMessageRequest {
        business_phone_number_id: event.business_phone_number_id.clone(),
        to: USER.into(),
        idempotency_key: format!("reply-to-{}", event.wamid),
        content: Some(pb::send_message_request::Content::Text(pb::TextContent {
            body: WE_SAY.into(),
            preview_url: false,
        })),
        reply_to_wamid: event.wamid.clone(),
        ..Default::default()
    });
    reply
        .metadata_mut()
        .insert("traceparent", event.traceparent.parse().unwrap());
    let mut messaging = MessagingClient::new(channel);
    let queued = messaging
        .send_message(reply)
        .await
        .expect("SendMessage")
        .into_inner()
        .message
        .expect("queued");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let message = messaging
            .get_outbound_message(pb::GetOutboundMessageRequest {
                key: Some(pb::get_outbound_message_request::Key::Id(queued.id)),
            })
            .await
            .unwrap()
            .into_inner();
        if message.delivery_status == "read" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not read within 60 s: {message:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(events);
    // Each process flushes its spans as it stops.
    let logs: Vec<(String, Vec<String>)> = mesh
        .all()
        .iter()
        .map(|p| (p.name.clone(), p.lines()))
        .collect();
    mesh.stop().await;
    stop_collector.cancel();
    let spans = exported(&collector);

    // One trace.
    let trace = trace_id_of(&event.traceparent);
    let in_trace: Vec<&Exported> = spans.iter().filter(|s| s.span.trace_id == trace).collect();
    let names: Vec<String> = in_trace
        .iter()
        .map(|s| format!("{}:{}", s.service, s.span.name))
        .collect();
    let find = |service: &str, name: &str| -> &Exported {
        let found: Vec<&&Exported> = in_trace
            .iter()
            .filter(|s| s.service == service && s.span.name == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {service}:{name} in the trace: {names:#?}"
        );
        found[0]
    };
    let parent_of = |child: &Exported, parent: &Exported| {
        assert_eq!(
            child.span.parent_span_id, parent.span.span_id,
            "{} is the child of {}: {names:#?}",
            child.span.name, parent.span.name
        );
    };
    let webhook_out = find("simulator", "POST webhook");
    let webhook_in = find("gateway", "HTTP POST /api/webhooks/whatsapp");
    parent_of(webhook_in, webhook_out);
    let ingest = find("messaging", "wamesh.ingest");
    parent_of(ingest, webhook_in);
    let process = find("messaging", "wamesh.process");
    parent_of(process, ingest);
    assert_eq!(
        process.attribute("wamesh.direction").as_deref(),
        Some("inbound")
    );
    let rpc = find("messaging", "wamesh.messaging.v1.Messaging/SendMessage");
    parent_of(rpc, process);
    let enqueue = find("messaging", "wamesh.enqueue");
    parent_of(enqueue, rpc);
    let send = find("messaging", "wamesh.send");
    parent_of(send, enqueue);
    assert_eq!(send.attribute("wamesh.result").as_deref(), Some("accepted"));
    assert_eq!(
        send.attribute("wamesh.message_id"),
        Some(queued.id.to_string())
    );
    let acquire = find("ratelimit", "ratelimit.acquire");
    parent_of(acquire, send);
    let graph = find("messaging", "POST /{version}/{phone_number_id}/messages");
    parent_of(graph, send);
    let meta = find(
        "simulator",
        "HTTP POST /{version}/{phone_number_id}/messages",
    );
    parent_of(meta, graph);
    for status in ["sent", "delivered", "read"] {
        let confirmation = find("messaging", &format!("wamesh.status {status}"));
        parent_of(confirmation, send);
        assert!(
            confirmation
                .attribute("wamesh.delivery_latency_ms")
                .and_then(|ms| ms.parse::<i64>().ok())
                .is_some_and(|ms| ms >= 0),
            "{status} carries its delivery latency"
        );
        // Linked to the status webhook's own ingest span, in a trace of its own.
        let link = confirmation
            .span
            .links
            .first()
            .unwrap_or_else(|| panic!("the {status} confirmation is linked"));
        assert_ne!(link.trace_id, trace, "the webhook has its own trace");
        let linked = spans
            .iter()
            .find(|s| s.span.span_id == link.span_id && s.span.trace_id == link.trace_id)
            .expect("the linked span was exported");
        assert_eq!(
            (linked.service.as_str(), linked.span.name.as_str()),
            ("messaging", "wamesh.ingest")
        );
    }

    // Nothing in clear: not the user's number, the bodies, the token or the secret.
    let secrets = [USER, USER_SAYS, WE_SAY, ACCESS_TOKEN, APP_SECRET];
    for (process, lines) in &logs {
        for line in lines {
            for secret in secrets {
                assert!(
                    !line.contains(secret),
                    "{process} logged {secret:?}: {line}"
                );
            }
        }
    }
    let mut by_service: HashMap<&str, usize> = HashMap::new();
    for exported in &spans {
        *by_service.entry(exported.service.as_str()).or_default() += 1;
        let text = format!("{:?}", exported.span);
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{}:{} holds {secret:?}: {text}",
                exported.service,
                exported.span.name
            );
        }
    }
    for service in ["gateway", "messaging", "ratelimit", "simulator"] {
        assert!(by_service.contains_key(service), "{service} exported spans");
    }
}
