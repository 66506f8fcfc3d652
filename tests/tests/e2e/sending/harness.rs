//! A sending mesh of one test: the simulator playing Meta (its webhooks signed to the
//! gateway), rate-limit on Redis (a fresh key prefix), the gateway, and messaging on a fresh
//! Postgres database, each on port 0. messaging runs in a tokio runtime of its own, so a test
//! can kill it as a crash would (the runtime dropped: no drain, no last write) and start it
//! again on the same address and database.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_messaging::send::Backoff;
use wamesh_messaging::{IngestConfig, Messaging, MessagingConfig, SendConfig};
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_proto::ratelimit::v1 as rl;
use wamesh_proto::ratelimit::v1::rate_limiter_client::RateLimiterClient;
use wamesh_ratelimit::{LimiterConfig, RateLimit, RateLimitConfig};
use wamesh_runtime::{BusinessNumber, Secret, Shutdown};
use wamesh_simulator::{
    Behaviour, Delivery, Identity, SendLimits, Simulator, SimulatorConfig, WebhookTarget,
};

/// The business number every sending test sends from.
pub const PHONE: &str = "106540352242922";
pub const WABA: &str = "102290129340398";
const ACCESS_TOKEN: &str = "test-access-token";

/// What a test changes of the default sending mesh.
pub struct SendSetup {
    /// Meta's limits as the simulator enforces them.
    pub limits: SendLimits,
    pub behaviour: Behaviour,
    pub undeliverable: Vec<String>,
    /// The number's throughput and tier as messaging asks rate-limit for them.
    pub throughput: Option<f64>,
    pub tier: Option<u64>,
    /// How long an in-doubt send waits for evidence; how long a claim holds.
    pub evidence_window: Duration,
    pub lease: Duration,
    pub graph_timeout: Duration,
    pub max_attempts: u32,
    pub workers: usize,
}

impl Default for SendSetup {
    fn default() -> Self {
        Self {
            limits: SendLimits {
                throughput_per_s: 1_000.0,
                throughput_burst: 1_000.0,
                pair_burst: 45.0,
                pair_interval: Duration::from_secs(6),
            },
            behaviour: Behaviour::default(),
            undeliverable: Vec::new(),
            throughput: Some(1_000.0),
            tier: None,
            evidence_window: Duration::from_secs(60),
            lease: Duration::from_secs(30),
            graph_timeout: Duration::from_secs(10),
            max_attempts: 10,
            workers: 2,
        }
    }
}

/// messaging in its own runtime.
struct MessagingProcess {
    runtime: tokio::runtime::Runtime,
    stop: Shutdown,
    done: tokio::sync::oneshot::Receiver<anyhow::Result<()>>,
}

pub struct SendMesh {
    pub gateway_url: String,
    pub simulator_url: String,
    pub app_secret: Secret,
    messaging_addr: SocketAddr,
    messaging_config: MessagingConfig,
    messaging: Option<MessagingProcess>,
    others: Vec<(Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    grpc: MessagingClient<Channel>,
    limiter: RateLimiterClient<Channel>,
    http: reqwest::Client,
}

impl SendMesh {
    pub async fn start(setup: SendSetup) -> Self {
        crate::harness::init_tracing();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app_secret = Secret::generate();
        let database_url = wamesh_testkit::fresh_postgres_url().await;
        let gateway_listener = bind().await;
        let gateway_addr = gateway_listener.local_addr().unwrap();
        let simulator_listener = bind().await;
        let simulator_addr = simulator_listener.local_addr().unwrap();
        let ratelimit_listener = bind().await;
        let ratelimit_addr = ratelimit_listener.local_addr().unwrap();
        let messaging_addr = bind().await.local_addr().unwrap(); // released; messaging rebinds it

        let simulator = Simulator::build(SimulatorConfig {
            access_tokens: vec![Secret::new(ACCESS_TOKEN)],
            limits: setup.limits,
            webhook: Some(WebhookTarget {
                url: format!("http://{gateway_addr}/api/webhooks/whatsapp"),
                app_secret: app_secret.clone(),
            }),
            identity: Identity {
                waba_id: WABA.into(),
                ..Identity::default()
            },
            behaviour: setup.behaviour,
            delivery: Delivery::default(),
            undeliverable: setup.undeliverable,
            ..SimulatorConfig::default()
        });
        let ratelimit = RateLimit::build(&RateLimitConfig {
            redis_url: Some(wamesh_testkit::redis_url()),
            redis_prefix: wamesh_testkit::fresh_redis_prefix(),
            limiter: LimiterConfig::default(),
        })
        .await
        .expect("rate-limit on Redis");
        let number = BusinessNumber {
            phone_number_id: Some(PHONE.into()),
            waba_id: Some(WABA.into()),
            app_secret: app_secret.clone(),
            verify_token: Secret::generate(),
            access_token: Some(Secret::new(ACCESS_TOKEN)),
            throughput: setup.throughput,
            tier: setup.tier,
        };
        let gateway = Gateway::build(GatewayConfig {
            numbers: vec![number.clone()],
            messaging_url: format!("http://{messaging_addr}"),
            ingest_timeout: Duration::from_secs(3),
            analytics_url: None,
            operator_api_keys: Vec::new(),
        })
        .expect("build the gateway");
        let others = vec![
            spawn(|stop| simulator.serve(simulator_listener, stop)),
            spawn(|stop| ratelimit.serve(ratelimit_listener, stop)),
            spawn(|stop| gateway.serve(gateway_listener, stop)),
        ];
        let messaging_config = MessagingConfig {
            database_url,
            max_db_connections: 8,
            ingest: IngestConfig::default(),
            numbers: vec![number],
            send: SendConfig {
                workers: setup.workers,
                max_attempts: setup.max_attempts,
                backoff: Backoff {
                    base: Duration::from_millis(200),
                    max: Duration::from_secs(2),
                },
                lease: setup.lease,
                evidence_window: setup.evidence_window,
                poll_interval: Duration::from_millis(50),
                limits_unavailable_delay: Duration::from_millis(200),
                graph_api_url: format!("http://{simulator_addr}"),
                graph_timeout: setup.graph_timeout,
                ratelimit_url: format!("http://{ratelimit_addr}"),
                report_interval: Duration::from_millis(200),
                reconcile_interval: Duration::from_millis(200),
                ..SendConfig::default()
            },
        };
        let messaging = MessagingProcess::start(&messaging_config, messaging_addr).await;
        let grpc = MessagingClient::new(lazy_channel(messaging_addr));
        let limiter = RateLimiterClient::new(lazy_channel(ratelimit_addr));
        Self {
            gateway_url: format!("http://{gateway_addr}"),
            simulator_url: format!("http://{simulator_addr}"),
            app_secret,
            messaging_addr,
            messaging_config,
            messaging: Some(messaging),
            others,
            grpc,
            limiter,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// messaging's gRPC address, as other services dial it.
    pub fn messaging_url(&self) -> String {
        format!("http://{}", self.messaging_addr)
    }

    /// rate-limit's gRPC address, as other services dial it.
    pub fn ratelimit_url(&self) -> String {
        self.messaging_config.send.ratelimit_url.clone()
    }

    pub fn grpc(&self) -> MessagingClient<Channel> {
        self.grpc.clone()
    }

    pub async fn send(
        &self,
        request: pb::SendMessageRequest,
    ) -> Result<pb::SendMessageResponse, tonic::Status> {
        self.grpc()
            .send_message(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Sends and expects it queued; answers our id.
    pub async fn queue(&self, request: pb::SendMessageRequest) -> i64 {
        let key = request.idempotency_key.clone();
        let answer = self
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("SendMessage {key}: {e}"));
        answer.message.expect("the queued message").id
    }

    pub async fn outbound(&self, id: i64) -> pb::OutboundMessage {
        self.grpc()
            .get_outbound_message(pb::GetOutboundMessageRequest {
                key: Some(pb::get_outbound_message_request::Key::Id(id)),
            })
            .await
            .unwrap_or_else(|e| panic!("GetOutboundMessage {id}: {e}"))
            .into_inner()
    }

    /// Polls message `id` until `done` holds (up to `within`); answers it.
    pub async fn wait_for(
        &self,
        id: i64,
        within: Duration,
        what: &str,
        done: impl Fn(&pb::OutboundMessage) -> bool,
    ) -> pb::OutboundMessage {
        let deadline = Instant::now() + within;
        loop {
            let message = self.outbound(id).await;
            if done(&message) {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "message {id} not {what} within {within:?}: {message:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The queue and workers as messaging reports them.
    pub async fn send_status(&self) -> pb::SendStatus {
        self.grpc()
            .get_send_status(pb::GetSendStatusRequest {})
            .await
            .expect("GetSendStatus")
            .into_inner()
    }

    /// Everything the simulator received, oldest first.
    pub async fn sim_received(&self) -> Vec<Value> {
        let answer = self.sim_get("/_sim/messages?limit=100000").await;
        answer["messages"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("the record is a list: {answer}"))
    }

    /// The bodies the simulator accepted (a wamid given), oldest first.
    pub async fn sim_accepted(&self) -> Vec<Value> {
        self.sim_received()
            .await
            .into_iter()
            .filter(|r| r["wamid"].is_string())
            .map(|r| r["body"].clone())
            .collect()
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.simulator_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} of the simulator: {e}"));
        response.json().await.expect("the simulator answers JSON")
    }

    /// POSTs (or PUTs) to the simulator's control API; answers the status and body.
    pub async fn sim_call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.simulator_url);
        let request = match method {
            "PUT" => self.http.put(url),
            _ => self.http.post(url),
        };
        let response = request
            .json(&body)
            .send()
            .await
            .expect("the simulator answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Changes the simulator's knobs (only the fields given).
    pub async fn sim_config(&self, knobs: Value) {
        let (status, answer) = self.sim_call("POST", "/_sim/config", knobs).await;
        assert_eq!(status, 200, "the simulator took the config: {answer}");
    }

    /// The user messages the business through the simulator (which signs the webhook to the
    /// gateway and opens the window on its side); waits until messaging sees the window open.
    pub async fn user_writes(&self, user: &str, text: &str) {
        let (status, answer) = self
            .sim_call(
                "POST",
                "/_sim/inbound",
                json!({"phone_number_id": PHONE, "from": user, "text": text}),
            )
            .await;
        assert_eq!(status, 200, "the simulated user wrote: {answer}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let window = self
                .grpc()
                .get_service_window(pb::GetServiceWindowRequest {
                    business_phone_number_id: PHONE.into(),
                    contact_id: user.into(),
                })
                .await
                .expect("GetServiceWindow")
                .into_inner();
            if window.open {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user}'s message never reached messaging"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets a rate-limit policy for a key or a prefix (`pair:*`).
    pub async fn set_policy(&self, selector: &str, policy: rl::policy::Kind) {
        self.limiter
            .clone()
            .set_policy(rl::SetPolicyRequest {
                selector: selector.into(),
                policy: Some(rl::Policy { kind: Some(policy) }),
                remove: false,
            })
            .await
            .expect("SetPolicy");
    }

    /// Registers a template at both ends: messaging's registry and the simulated Meta.
    pub async fn template(&self, template: pb::Template, at_meta: Option<&str>) {
        self.grpc()
            .create_template(template.clone())
            .await
            .unwrap_or_else(|e| panic!("CreateTemplate {}: {e}", template.name));
        if let Some(status) = at_meta {
            let components: Value = serde_json::from_str(&template.components_json).unwrap();
            let (code, answer) = self
                .sim_call(
                    "PUT",
                    "/_sim/templates",
                    json!({"name": template.name, "language": template.language,
                           "status": status, "category": template.category.to_uppercase(),
                           "components": components}),
                )
                .await;
            assert_eq!(code, 200, "the simulator took the template: {answer}");
        }
    }

    /// GETs a gateway path answering JSON.
    pub async fn gateway_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.gateway_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// Kills messaging as a crash would: its runtime is dropped, nothing drains.
    pub fn kill_messaging(&mut self) {
        let process = self.messaging.take().expect("messaging runs");
        process.runtime.shutdown_background();
    }

    /// Starts messaging again on the same address and database.
    pub async fn restart_messaging(&mut self) {
        assert!(self.messaging.is_none(), "messaging is running");
        self.messaging =
            Some(MessagingProcess::start(&self.messaging_config, self.messaging_addr).await);
    }

    /// Stops everything gracefully: messaging (draining its claims), then the gateway,
    /// rate-limit and the simulator.
    pub async fn stop(mut self) {
        if let Some(process) = self.messaging.take() {
            process.stop.cancel();
            let result = tokio::time::timeout(Duration::from_secs(30), process.done)
                .await
                .expect("messaging stops within 30 s")
                .expect("messaging reports its end");
            result.expect("messaging stops cleanly");
            process.runtime.shutdown_background();
        }
        for (stop, task) in self.others.into_iter().rev() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }
}

impl MessagingProcess {
    async fn start(config: &MessagingConfig, addr: SocketAddr) -> Self {
        let listener = crate::harness::bind_again(addr).await.into_std().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("messaging")
            .enable_all()
            .build()
            .expect("messaging's runtime");
        let stop = Shutdown::new();
        let (report, done) = tokio::sync::oneshot::channel();
        let (config, token) = (config.clone(), stop.clone());
        let (built, ready) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("messaging's listener");
            let messaging = match Messaging::build(&config).await {
                Ok(messaging) => messaging,
                Err(e) => {
                    let _ = built.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let _ = built.send(Ok(()));
            let _ = report.send(messaging.serve(listener, token).await);
        });
        ready
            .await
            .expect("messaging's runtime runs")
            .unwrap_or_else(|e| panic!("starting messaging: {e}"));
        Self {
            runtime,
            stop,
            done,
        }
    }
}

fn spawn<F>(
    serve: impl FnOnce(Shutdown) -> F,
) -> (Shutdown, tokio::task::JoinHandle<anyhow::Result<()>>)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let stop = Shutdown::new();
    (stop.clone(), tokio::spawn(serve(stop)))
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.expect("bind port 0")
}

fn lazy_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .connect_lazy()
}

/// Our message id in a send body's callback data (`wamesh:<id>:...`), if it is ours.
pub fn sent_id(body: &Value) -> Option<i64> {
    body["biz_opaque_callback_data"]
        .as_str()
        .and_then(wamesh_messaging::store::outbound::Callback::parse)
        .map(|c| c.outbound_id)
}

/// A text message request.
pub fn text(key: &str, to: &str, body: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        business_phone_number_id: PHONE.into(),
        to: to.into(),
        idempotency_key: key.into(),
        content: Some(pb::send_message_request::Content::Text(pb::TextContent {
            body: body.into(),
            preview_url: false,
        })),
        ..Default::default()
    }
}

/// A template message request with positional body parameters.
pub fn template(key: &str, to: &str, name: &str, body: &[&str]) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        business_phone_number_id: PHONE.into(),
        to: to.into(),
        idempotency_key: key.into(),
        content: Some(pb::send_message_request::Content::Template(
            pb::TemplateContent {
                name: name.into(),
                language: "en_US".into(),
                body: body
                    .iter()
                    .map(|text| pb::TemplateParameter {
                        name: String::new(),
                        value: Some(pb::template_parameter::Value::Text((*text).into())),
                    })
                    .collect(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// A registered template of `body_text` (with `{{1}}`... placeholders).
pub fn registered(name: &str, status: pb::TemplateStatus, body_text: &str) -> pb::Template {
    pb::Template {
        waba_id: WABA.into(),
        name: name.into(),
        language: "en_US".into(),
        category: "utility".into(),
        status: status as i32,
        components_json: json!([{"type": "BODY", "text": body_text}]).to_string(),
        ..Default::default()
    }
}
