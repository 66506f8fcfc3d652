//! A simulator and a gateway for one test, both on 127.0.0.1:0.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use wamesh_runtime::{Secret, Shutdown};
use wamesh_simulator::{Delivery, Recorder, Simulator, SimulatorConfig, WebhookTarget};

pub const TOKEN: &str = "sim-test-token";
pub const SECRET: &str = "sim-test-app-secret";
pub const NUMBER: &str = "1065";

/// A running simulator.
pub struct Sim {
    pub base: String,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    shutdown: Shutdown,
}

/// A config for tests: our token, statuses at once, quick retries, webhooks to `gateway`.
pub fn config(gateway: Option<&Gateway>) -> SimulatorConfig {
    SimulatorConfig {
        access_tokens: vec![Secret::new(TOKEN)],
        webhook: gateway.map(|g| WebhookTarget {
            url: g.url.clone(),
            app_secret: Secret::new(SECRET),
        }),
        delivery: Delivery {
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..Delivery::default()
        },
        ..SimulatorConfig::default()
    }
}

impl Sim {
    pub async fn start() -> Self {
        Self::start_with(config(None)).await
    }

    pub async fn start_with(config: SimulatorConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let simulator = Simulator::build(config);
        let recorder = simulator.recorder();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        tokio::spawn(simulator.serve(listener, shutdown.clone()));
        Self {
            base,
            http: reqwest::Client::new(),
            recorder,
            shutdown,
        }
    }

    /// Sends as a business would; answers the HTTP status and body.
    pub async fn send(&self, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/v23.0/{NUMBER}/messages", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("the simulator answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// Sends `body` with our token; answers the status and body.
    pub async fn send_json(&self, body: &Value) -> (u16, Value) {
        self.send(Some(TOKEN), &body.to_string()).await
    }

    /// Sends `body`, which must be accepted; answers its wamid.
    pub async fn accepted(&self, body: &Value) -> String {
        let (status, answer) = self.send_json(body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        answer["messages"][0]["id"]
            .as_str()
            .expect("a wamid")
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `method path` with a JSON body; answers the status and the JSON answer (null if none).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, body).await
    }

    /// Changes the simulator's configuration; it must be accepted.
    pub async fn configure(&self, patch: Value) -> Value {
        let (status, answer) = self.post("/_sim/config", &patch).await;
        assert_eq!(status, 200, "{patch}: {answer}");
        answer
    }

    /// A user writes to the business (opening the window); answers the wamid.
    pub async fn inbound(&self, from: &str) -> String {
        let (status, answer) = self
            .post(
                "/_sim/inbound",
                &json!({"phone_number_id": NUMBER, "from": from, "text": "hi"}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["wamid"].as_str().expect("a wamid").to_owned()
    }

    pub async fn stats(&self) -> Value {
        self.get("/_sim/stats").await
    }

    /// Waits (30 s at most) until `done` holds for the stats.
    pub async fn wait_for_stats(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: not within 30 s; stats: {}", self.stats().await);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn text(to: &str, body: &str) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
           "type": "text", "text": {"body": body}})
}

pub fn template(to: &str, name: &str, components: Value) -> Value {
    json!({"messaging_product": "whatsapp", "to": to, "type": "template",
           "template": {"name": name, "language": {"code": "en_US"}, "components": components}})
}

/// The error code and details of a refusal.
pub fn refusal(answer: &Value) -> (i64, &str) {
    let error = &answer["error"];
    assert_eq!(
        error["error_data"]["messaging_product"], "whatsapp",
        "{answer}"
    );
    assert!(error["fbtrace_id"].is_string(), "{answer}");
    (
        error["code"].as_i64().expect("a code"),
        error["error_data"]["details"].as_str().expect("details"),
    )
}

/// What the gateway received: the raw bytes of each webhook it accepted.
#[derive(Default)]
struct Received {
    bodies: Mutex<Vec<Bytes>>,
    /// POSTs answered 500 on purpose before accepting any.
    fail_first: AtomicUsize,
    posts: AtomicUsize,
    bad_signatures: AtomicUsize,
}

/// A stand-in for wamesh's gateway: checks `X-Hub-Signature-256` with the app secret, answers
/// 500 to its first `fail_first` POSTs, then 200, keeping every body it accepted.
pub struct Gateway {
    pub url: String,
    received: Arc<Received>,
    shutdown: Shutdown,
}

async fn receive(
    State(received): State<Arc<Received>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    received.posts.fetch_add(1, Ordering::SeqCst);
    let header = headers
        .get(wamesh_whatsapp::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    if wamesh_whatsapp::verify_signature(SECRET.as_bytes(), &body, header).is_err() {
        received.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::FORBIDDEN;
    }
    let failing = received
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    received.bodies.lock().unwrap().push(body);
    StatusCode::OK
}

impl Gateway {
    pub async fn start() -> Self {
        Self::failing_first(0).await
    }

    /// A gateway that answers 500 to its first `n` webhooks.
    pub async fn failing_first(n: usize) -> Self {
        let received = Arc::new(Received::default());
        received.fail_first.store(n, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/api/webhooks/whatsapp", axum::routing::post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/api/webhooks/whatsapp",
            listener.local_addr().unwrap()
        );
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        Self {
            url,
            received,
            shutdown,
        }
    }

    /// Every accepted webhook's raw body, in arrival order.
    pub fn bodies(&self) -> Vec<Bytes> {
        self.received.bodies.lock().unwrap().clone()
    }

    /// Every accepted webhook, parsed.
    pub fn webhooks(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .map(|b| serde_json::from_slice(b).expect("webhooks are JSON"))
            .collect()
    }

    /// The `value` of every accepted webhook.
    pub fn values(&self) -> Vec<Value> {
        self.webhooks()
            .into_iter()
            .map(|w| w["entry"][0]["changes"][0]["value"].clone())
            .collect()
    }

    /// Every status received, in arrival order.
    pub fn statuses(&self) -> Vec<Value> {
        self.values()
            .iter()
            .flat_map(|v| v["statuses"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The statuses of one message, in arrival order.
    pub fn statuses_of(&self, wamid: &str) -> Vec<Value> {
        self.statuses()
            .into_iter()
            .filter(|s| s["id"] == wamid)
            .collect()
    }

    /// Every user message received, in arrival order.
    pub fn messages(&self) -> Vec<Value> {
        self.values()
            .iter()
            .flat_map(|v| v["messages"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn posts(&self) -> usize {
        self.received.posts.load(Ordering::SeqCst)
    }

    pub fn bad_signatures(&self) -> usize {
        self.received.bad_signatures.load(Ordering::SeqCst)
    }

    /// Waits (30 s at most) until `done` holds.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..600 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: not within 30 s; received {:?}", self.values());
    }

    /// Waits for the statuses of `wamid` until there are `n`; answers them by status name.
    pub async fn wait_for_statuses(&self, wamid: &str, n: usize) -> Vec<Value> {
        self.wait_for(&format!("{n} statuses of {wamid}"), |g| {
            g.statuses_of(wamid).len() >= n
        })
        .await;
        self.statuses_of(wamid)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The names of `statuses`, in order.
pub fn names(statuses: &[Value]) -> Vec<&str> {
    statuses
        .iter()
        .map(|s| s["status"].as_str().unwrap_or(""))
        .collect()
}
