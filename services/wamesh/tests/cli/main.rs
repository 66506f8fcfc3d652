//! The `wamesh` binary itself, as an operator runs it: `wamesh dev` serves webhooks and
//! rate-limit decisions, answers gRPC health and reflection, stops cleanly on SIGTERM and
//! SIGINT, and keeps what it stored across a restart; `wamesh ratelimit` serves Redis buckets
//! with metrics and readiness; the benchmarks end with their JSON summary.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_proto::messaging::v1::{GetMessageRequest, get_message_request};
use wamesh_proto::ratelimit::v1 as rl;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;

const BIN: &str = env!("CARGO_BIN_EXE_wamesh");

/// A running `wamesh dev` and the addresses it printed.
struct Dev {
    child: Child,
    gateway: String,
    messaging: String,
    ratelimit: String,
    simulator: String,
    analytics: String,
}

impl Dev {
    fn start(data_dir: &Path) -> Self {
        Self::start_on(data_dir, None, &[])
    }

    /// `wamesh dev` on SQLite under `data_dir`, or on the Postgres `database_url` names, with
    /// these environment variables besides.
    fn start_on(data_dir: &Path, database_url: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args([
                "dev",
                "--gateway-addr",
                "127.0.0.1:0",
                "--messaging-addr",
                "127.0.0.1:0",
                "--ratelimit-addr",
                "127.0.0.1:0",
                "--simulator-addr",
                "127.0.0.1:0",
                "--analytics-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .env_remove("WAMESH_APP_SECRET")
            .env_remove("WAMESH_ACCESS_TOKEN")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped());
        if let Some(url) = database_url {
            command.env("DATABASE_URL", url);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("wamesh dev starts");
        let (lines, received) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let (mut gateway, mut messaging, mut ratelimit, mut simulator, mut analytics) =
            (None, None, None, None, None);
        while gateway.is_none()
            || messaging.is_none()
            || ratelimit.is_none()
            || simulator.is_none()
            || analytics.is_none()
        {
            let line = received
                .recv_timeout(Duration::from_secs(60))
                .expect("wamesh dev prints its addresses");
            let word = |prefix: &str| {
                line.trim_start()
                    .strip_prefix(prefix)
                    .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
            };
            gateway = gateway.or_else(|| word("gateway"));
            messaging =
                messaging.or_else(|| word("messaging").map(|m| m.replace("grpc://", "http://")));
            ratelimit =
                ratelimit.or_else(|| word("ratelimit").map(|m| m.replace("grpc://", "http://")));
            simulator = simulator.or_else(|| word("simulator"));
            analytics =
                analytics.or_else(|| word("analytics").map(|m| m.replace("grpc://", "http://")));
        }
        Self {
            child,
            gateway: gateway.unwrap(),
            messaging: messaging.unwrap(),
            ratelimit: ratelimit.unwrap(),
            simulator: simulator.unwrap(),
            analytics: analytics.unwrap(),
        }
    }

    /// Kills the process outright (SIGKILL): no drain, no flush.
    fn crash(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// Sends `signal` and waits for a clean exit.
    fn stop_with(mut self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        for _ in 0..300 {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                assert!(
                    exit.success(),
                    "wamesh dev exited with {exit} after {signal}"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("wamesh dev did not stop within 30 s of {signal}");
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wamesh-cli-{:016x}", rand_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

fn app_secret(data_dir: &Path) -> String {
    dev_secret(data_dir, "app_secret")
}

fn dev_secret(data_dir: &Path, name: &str) -> String {
    let text =
        std::fs::read_to_string(data_dir.join("dev-secrets.json")).expect("dev secrets written");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[name].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_webhooks_stops_on_sigterm_and_keeps_them_across_a_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = temp_dir();
    let dev = Dev::start(&data_dir);
    let secret = app_secret(&data_dir);

    let (_, body) = wamesh_testkit::webhook_corpus()
        .into_iter()
        .find(|(name, _)| name == "message__text.json")
        .unwrap();
    let wamid = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["entry"][0]["changes"]
        [0]["value"]["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = reqwest::Client::new()
        .post(format!("{}/api/webhooks/whatsapp", dev.gateway))
        .header(
            "x-hub-signature-256",
            wamesh_whatsapp::sign(secret.as_bytes(), &body),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The simulator takes the generated access token, and only it.
    for (token, status) in [
        (dev_secret(&data_dir, "access_token"), 200),
        ("other".into(), 401),
    ] {
        let sent = reqwest::Client::new()
            .post(format!("{}/v23.0/1065/messages", dev.simulator))
            .bearer_auth(token)
            .json(
                &serde_json::json!({"messaging_product": "whatsapp", "to": "15551234567",
                                      "type": "text", "text": {"body": "hi"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), status);
    }

    let channel = tonic::transport::Channel::from_shared(dev.messaging.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "wamesh.messaging.v1.Messaging".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert!(
        list_services(channel)
            .await
            .contains(&"wamesh.messaging.v1.Messaging".to_owned())
    );

    // The rate limiter of the mesh answers with WhatsApp's policies, in memory.
    let channel = tonic::transport::Channel::from_shared(dev.ratelimit.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let answer = RateLimiterClient::new(channel)
        .acquire(rl::AcquireRequest {
            scope: "waba-1".into(),
            buckets: vec![rl::BucketRequest {
                key: "throughput:1122334455".into(),
                cost: 1.0,
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.allowed && !answer.degraded, "{answer:?}");
    assert_eq!(answer.buckets[0].capacity, 80.0);

    dev.stop_with("-TERM");

    // Restarted on the same data directory: same secrets, and the webhook is still there.
    let dev = Dev::start(&data_dir);
    assert_eq!(app_secret(&data_dir), secret);
    let channel = tonic::transport::Channel::from_shared(dev.messaging.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let message = MessagingClient::new(channel)
        .get_message(GetMessageRequest {
            key: Some(get_message_request::Key::Wamid(wamid.clone())),
            direction: 0,
        })
        .await
        .expect("the message survived the restart")
        .into_inner()
        .message
        .unwrap();
    assert_eq!(message.wamid, wamid);
    dev.stop_with("-INT");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// The services gRPC reflection lists.
async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    match responses
        .message()
        .await
        .unwrap()
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

/// A free port on loopback (for commands whose admin listener must be found by the test).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_serves_redis_buckets_with_metrics_and_readiness_and_stops_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (grpc, admin) = (free_port(), free_port());
    let prefix = wamesh_testkit::fresh_redis_prefix();
    let child = Command::new(BIN)
        .args(["ratelimit", "--addr", &format!("127.0.0.1:{grpc}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{admin}")])
        .env("REDIS_URL", wamesh_testkit::redis_url())
        .env("WAMESH_RATELIMIT_PREFIX", &prefix)
        .env("RUST_LOG", "warn")
        .spawn()
        .map(KillOnDrop)
        .expect("wamesh ratelimit starts");
    let mut client = None;
    for _ in 0..300 {
        if let Ok(channel) =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
                .unwrap()
                .connect()
                .await
        {
            client = Some(RateLimiterClient::new(channel));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = client.expect("wamesh ratelimit listens");
    // The pair policy holds 45: 30 fit, 30 more do not.
    for allowed in [true, false] {
        let answer = client
            .acquire(rl::AcquireRequest {
                scope: "waba-1".into(),
                buckets: vec![rl::BucketRequest {
                    key: "pair:1:15550001".into(),
                    cost: 30.0,
                    ..Default::default()
                }],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.degraded, "{answer:?}");
        assert_eq!(answer.allowed, allowed, "{answer:?}");
    }
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready: buckets in redis");
    let metrics = http
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "wamesh_ratelimit_decisions_total{result=\"allowed\",policy=\"pair\",degraded=\"no\"} 1"
        ) && metrics.contains(
            "wamesh_ratelimit_decisions_total{result=\"denied\",policy=\"pair\",degraded=\"no\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("15550001"),
        "no key (phone number) in metrics"
    );
    stops_cleanly_on_sigterm(child, "ratelimit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_accepts_sends_with_its_token_records_them_and_stops_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let refused = Command::new(BIN)
        .args(["simulator", "--addr", "127.0.0.1:0"])
        .env_remove("WAMESH_ACCESS_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .expect("wamesh simulator runs");
    assert!(!refused.status.success(), "no token: it must not start");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("WAMESH_ACCESS_TOKEN"),
        "the error names the setting: {}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let port = free_port();
    let child = Command::new(BIN)
        .args(["simulator", "--addr", &format!("127.0.0.1:{port}")])
        .env("WAMESH_ACCESS_TOKEN", "tok-a,tok-b")
        .env("RUST_LOG", "warn")
        .spawn()
        .map(KillOnDrop)
        .expect("wamesh simulator starts");
    let http = reqwest::Client::new();
    let send = |token: &'static str| {
        http.post(format!("http://127.0.0.1:{port}/v23.0/1065/messages"))
            .bearer_auth(token)
            .json(
                &serde_json::json!({"messaging_product": "whatsapp", "to": "15551234567",
                                      "type": "text", "text": {"body": "hi"}}),
            )
            .send()
    };
    let mut answer = None;
    for _ in 0..300 {
        if let Ok(response) = send("tok-b").await {
            answer = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("wamesh simulator listens");
    assert_eq!(
        answer.status(),
        200,
        "the second token of the list is accepted"
    );
    assert_eq!(send("tok-c").await.unwrap().status(), 401);
    let recorded: serde_json::Value = http
        .get(format!("http://127.0.0.1:{port}/_sim/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<_> = recorded["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["error_code"].clone())
        .collect();
    assert_eq!(codes, vec![serde_json::Value::Null, serde_json::json!(190)]);

    stops_cleanly_on_sigterm(child, "simulator").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_sends_signed_status_webhooks_where_its_environment_says() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let half = Command::new(BIN)
        .args(["simulator", "--addr", "127.0.0.1:0"])
        .env("WAMESH_ACCESS_TOKEN", "tok")
        .env("WAMESH_SIMULATOR_WEBHOOK_URL", "http://127.0.0.1:9/hook")
        .env_remove("WAMESH_SIMULATOR_APP_SECRET")
        .env("RUST_LOG", "warn")
        .output()
        .expect("wamesh simulator runs");
    assert!(!half.status.success(), "a webhook URL without its secret");
    let stderr = String::from_utf8_lossy(&half.stderr);
    assert!(
        stderr.contains("WAMESH_SIMULATOR_APP_SECRET"),
        "the error names the missing setting: {stderr}"
    );
    let bad_rate = Command::new(BIN)
        .args(["simulator", "--addr", "127.0.0.1:0", "--sim-drop-rate", "2"])
        .env("WAMESH_ACCESS_TOKEN", "tok")
        .env("RUST_LOG", "warn")
        .output()
        .expect("wamesh simulator runs");
    assert!(!bad_rate.status.success());
    let stderr = String::from_utf8_lossy(&bad_rate.stderr);
    assert!(stderr.contains("drop-rate"), "{stderr}");

    // The gateway: keeps the bodies whose signature verifies with the secret.
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let kept = bodies.clone();
    let gateway = axum::Router::new().route(
        "/api/webhooks/whatsapp",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let header = headers
                        .get(wamesh_whatsapp::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok());
                    if wamesh_whatsapp::verify_signature(b"sim-secret", &body, header).is_err() {
                        return axum::http::StatusCode::FORBIDDEN;
                    }
                    kept.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!(
        "http://{}/api/webhooks/whatsapp",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, gateway).await });

    let port = free_port();
    let child = Command::new(BIN)
        .args(["simulator", "--addr", &format!("127.0.0.1:{port}")])
        .env("WAMESH_ACCESS_TOKEN", "tok")
        .env("WAMESH_SIMULATOR_WEBHOOK_URL", &hook)
        .env("WAMESH_SIMULATOR_APP_SECRET", "sim-secret")
        .env("WAMESH_SIMULATOR_SENT_AFTER", "0ms")
        .env("WAMESH_SIMULATOR_DELIVERED_AFTER", "0ms")
        .env("WAMESH_SIMULATOR_READ_AFTER", "0ms")
        .env("WAMESH_SIMULATOR_WABA_ID", "777")
        .env("RUST_LOG", "warn")
        .spawn()
        .map(KillOnDrop)
        .expect("wamesh simulator starts");
    let http = reqwest::Client::new();
    let mut answer = None;
    for _ in 0..300 {
        let sent = http
            .post(format!("http://127.0.0.1:{port}/v23.0/1065/messages"))
            .bearer_auth("tok")
            .json(
                &serde_json::json!({"messaging_product": "whatsapp", "to": "15551234567",
                "type": "template",
                "template": {"name": "hello_world", "language": {"code": "en_US"}}}),
            )
            .send()
            .await;
        if let Ok(response) = sent {
            answer = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("wamesh simulator listens");
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = answer.json().await.unwrap();
    let wamid = answer["messages"][0]["id"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for _ in 0..300 {
        statuses = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|w| w["entry"][0]["id"] == "777")
            .flat_map(|w| {
                w["entry"][0]["changes"][0]["value"]["statuses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| s["id"] == wamid.as_str())
            .map(|s| s["status"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>();
        if statuses.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec!["delivered", "read", "sent"]);
    stops_cleanly_on_sigterm(child, "simulator").await;
}

/// Sends SIGTERM and waits (30 s at most) for a successful exit.
async fn stops_cleanly_on_sigterm(mut child: KillOnDrop, command: &str) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..300 {
        if let Some(exit) = child.0.try_wait().unwrap() {
            assert!(exit.success(), "wamesh {command} exited with {exit}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("wamesh {command} did not stop within 30 s of SIGTERM");
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `wamesh send <args> --watch` against a dev mesh; answers what it printed.
fn send_and_watch(dev: &Dev, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args([
            "send",
            "--messaging-url",
            &dev.messaging,
            "--watch",
            "--timeout",
            "60s",
        ])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("wamesh send runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "wamesh send failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_sends_through_its_simulator_and_wamesh_send_watches_it_to_read() {
    let data_dir = temp_dir();
    // Statuses a little faster than a person needs them.
    let dev = Dev::start_on(
        &data_dir,
        None,
        &[
            ("WAMESH_SIMULATOR_SENT_AFTER", "100ms"),
            ("WAMESH_SIMULATOR_DELIVERED_AFTER", "200ms"),
            ("WAMESH_SIMULATOR_READ_AFTER", "300ms"),
        ],
    );
    // hello_world is registered by dev (and known to the simulator): it goes to anyone.
    let watched = send_and_watch(
        &dev,
        &["--to", "+1 555 000 1111", "--template", "hello_world"],
    );
    for step in [
        "queued",
        "accepted by Meta as wamid.",
        "sent",
        "delivered",
        "read",
    ] {
        assert!(watched.contains(step), "{step} missing from:\n{watched}");
    }
    // Free-form text needs the user's window: closed, refused by name; open, it goes.
    let refused = Command::new(BIN)
        .args(["send", "--messaging-url", &dev.messaging])
        .args(["--to", "15550002222", "--text", "hello"])
        .output()
        .expect("wamesh send runs");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("FailedPrecondition") && said.contains("window"),
        "{said}"
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let wrote = reqwest::Client::new()
        .post(format!("{}/_sim/inbound", dev.simulator))
        .json(&serde_json::json!({"phone_number_id": "100000000000002",
                                  "from": "15550002222", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrote.status(), 200);
    let mut watched = String::new();
    for _ in 0..100 {
        let output = Command::new(BIN)
            .args(["send", "--messaging-url", &dev.messaging, "--watch"])
            .args([
                "--to",
                "15550002222",
                "--text",
                "hello",
                "--key",
                "dev-text",
            ])
            .output()
            .expect("wamesh send runs");
        if output.status.success() {
            watched = String::from_utf8_lossy(&output.stdout).into_owned();
            break;
        }
        // The user's webhook is on its way through the gateway.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        watched.contains("read"),
        "the text went to read:\n{watched}"
    );

    // dev's analytics counted it all, and its gateway serves it to operators with the key dev
    // generated (and to no one without it).
    let overview = format!("{}/api/analytics/overview?period=24h", dev.gateway);
    let http = reqwest::Client::new();
    let refused = http.get(&overview).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let key = dev_secret(&data_dir, "operator_api_key");
    let mut counted = serde_json::Value::Null;
    for _ in 0..300 {
        let answer = http.get(&overview).bearer_auth(&key).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        counted = answer.json().await.unwrap();
        if counted["messages_out"] == 2 && counted["read"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (
            &counted["messages_in"],
            &counted["messages_out"],
            &counted["read"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(2)
        ),
        "the user's message and our two sends, both read: {counted}"
    );
    assert!(dev.analytics.starts_with("http://127.0.0.1:"));
    dev.stop_with("-TERM");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Runs `wamesh bench <args>` briefly and answers its last line, the JSON summary, checked for
/// the fields every bench must give.
fn bench_summary(command: &mut Command, name: &str) -> serde_json::Value {
    let output = command
        .env("RUST_LOG", "warn")
        .output()
        .expect("wamesh bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let last = stdout.lines().last().expect("output");
    let summary: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(summary["name"], name);
    for key in [
        "throughput_per_s",
        "baseline_per_s",
        "ratio",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(summary[key].as_f64().is_some(), "{key} missing in {last}");
    }
    assert!(summary["throughput_per_s"].as_f64().unwrap() > 0.0);
    assert!(summary["baseline_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["errors"], 0);
    summary
}

#[test]
fn bench_ratelimit_ends_with_its_json_summary_streamed_or_unary() {
    for rpc in ["stream", "unary"] {
        let mut command = Command::new(BIN);
        command
            .args(["bench", "ratelimit", "--duration", "1s", "--warmup", "0s"])
            .args(["--concurrency", "4", "--rounds", "1", "--rpc", rpc])
            .env("REDIS_URL", wamesh_testkit::redis_url())
            .env(
                "WAMESH_RATELIMIT_PREFIX",
                wamesh_testkit::fresh_redis_prefix(),
            );
        let summary = bench_summary(&mut command, "ratelimit");
        assert_eq!(summary["rpc"], rpc);
    }
}

#[test]
fn bench_send_ends_with_its_json_summary() {
    let mut command = Command::new(BIN);
    command
        .args([
            "bench",
            "send",
            "--rate",
            "50",
            "--duration",
            "2s",
            "--warmup",
            "0s",
        ])
        .arg("--database-url")
        .arg(format!(
            "{}?sslmode=disable",
            wamesh_testkit::postgres_admin_url()
        ))
        .env("REDIS_URL", wamesh_testkit::redis_url());
    let summary = bench_summary(&mut command, "send");
    assert_eq!(summary["offered_per_s"], 50.0);
    assert_eq!(
        summary["undelivered"], 0,
        "every measured message was delivered"
    );
}

#[test]
fn bench_analytics_ends_with_its_json_summary() {
    let mut command = Command::new(BIN);
    command
        .args(["bench", "analytics", "--messages", "3000", "--users", "300"])
        .args(["--queries", "5", "--baseline-runs", "1", "--database-url"])
        .arg(format!(
            "{}?sslmode=disable",
            wamesh_testkit::postgres_admin_url()
        ));
    let summary = bench_summary(&mut command, "analytics");
    assert_eq!(summary["messages"], 3000);
    assert!(summary["events_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_ingest_ends_with_its_json_summary() {
    let mut command = Command::new(BIN);
    command
        .args(["bench", "ingest", "--in-process", "--duration", "1s"])
        .args(["--warmup", "0s", "--concurrency", "4", "--database-url"])
        .arg(format!(
            "{}?sslmode=disable",
            wamesh_testkit::postgres_admin_url()
        ));
    bench_summary(&mut command, "ingest");
}

/// A webhook of its own: one inbound text message with a unique wamid.
fn numbered_webhook(n: u32) -> (String, Vec<u8>) {
    let wamid = format!("wamid.crash.{n}");
    let body = serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "waba", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "crash-phone"},
            "messages": [{"from": "15550002222", "id": wamid, "timestamp": "1700000000", "type": "text",
                          "text": {"body": format!("message {n}")}}]
        }}]}]
    });
    (wamid, serde_json::to_vec(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_answered_200_survives_a_kill_9_on_sqlite() {
    survives_a_kill_9(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_answered_200_survives_a_kill_9_on_postgres() {
    survives_a_kill_9(Some(wamesh_testkit::fresh_postgres_url().await)).await;
}

async fn survives_a_kill_9(database_url: Option<String>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = temp_dir();
    let dev = Dev::start_on(&data_dir, database_url.as_deref(), &[]);
    let secret = app_secret(&data_dir);
    let url = format!("{}/api/webhooks/whatsapp", dev.gateway);

    // 8 senders post until the process dies under them; each remembers what got a 200.
    let client = reqwest::Client::new();
    let senders: Vec<_> = (0..8u32)
        .map(|sender| {
            let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..10_000u32 {
                    let (wamid, body) = numbered_webhook(sender * 100_000 + i);
                    let signature = wamesh_whatsapp::sign(secret.as_bytes(), &body);
                    match client
                        .post(&url)
                        .header("x-hub-signature-256", signature)
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(response) if response.status() == 200 => accepted.push(wamid),
                        Ok(_) => {}
                        Err(_) => break, // the process is gone
                    }
                }
                accepted
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    dev.crash();
    let mut accepted = Vec::new();
    for sender in senders {
        accepted.extend(sender.await.unwrap());
    }
    eprintln!("{} webhooks got a 200 before the crash", accepted.len());
    assert!(
        accepted.len() > 10,
        "the senders got answers before the crash ({})",
        accepted.len()
    );

    let dev = Dev::start_on(&data_dir, database_url.as_deref(), &[]);
    let channel = tonic::transport::Channel::from_shared(dev.messaging.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut messaging = MessagingClient::new(channel);
    for wamid in &accepted {
        let found = messaging
            .get_message(GetMessageRequest {
                key: Some(get_message_request::Key::Wamid(wamid.clone())),
                direction: 0,
            })
            .await;
        assert!(
            found.is_ok(),
            "{wamid} got a 200 before the crash but is gone after it"
        );
    }
    dev.stop_with("-TERM");
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_and_names_a_bad_database() {
    let url = wamesh_testkit::fresh_postgres_url().await;
    for _ in 0..2 {
        // twice: migrating an up-to-date schema is a no-op, not an error
        let output = Command::new(BIN)
            .args(["migrate", "--database-url", &url])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout)
                .contains("messaging's postgres schema is up to date")
        );
    }
    let output = Command::new(BIN)
        .args([
            "migrate",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "an unreachable database is an error"
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("migrating messaging's database"), "{said}");
}

mod conversation_trace;
mod metrics;
mod processes;
