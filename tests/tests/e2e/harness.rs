//! The test harness: a mesh started in-process on port 0 over a fresh database, and the few
//! helpers every test needs to talk to it (signed webhook POSTs, plain GETs, the gRPC client).
//!
//! Two ways to start:
//! - [`TestMesh::start`] / [`TestMesh::start_with_numbers`] go through `wamesh::mesh::Mesh`, the
//!   same composition `wamesh dev` runs;
//! - [`TestMesh::start_split`] builds messaging and the gateway separately, so a test can stop
//!   messaging alone and start it again on the same port and database.
use std::net::SocketAddr;
use std::sync::Once;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use wamesh::mesh::{Mesh, MeshConfig};
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_messaging::{IngestConfig, Messaging, MessagingConfig, SendConfig};
use wamesh_proto::messaging::v1::events_client::EventsClient;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_runtime::{BusinessNumber, Secret, Shutdown};

/// The gRPC client tests read messaging with.
pub type Grpc = MessagingClient<Channel>;

/// How long a webhook may wait for messaging before the gateway answers 503: generous, since a
/// debug build storing several 3 MB webhooks on a loaded machine can take seconds.
const INGEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The same for outage tests: short, so they see their 503 well within the 5 s they allow.
const OUTAGE_INGEST_TIMEOUT: Duration = Duration::from_secs(3);
const DB_MAX_CONNECTIONS: u32 = 8;

/// Which storage backend messaging runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The name messaging reports for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }

    async fn fresh_database_url(self) -> String {
        match self {
            Self::Postgres => wamesh_testkit::fresh_postgres_url().await,
            Self::Sqlite => wamesh_testkit::fresh_sqlite_url(),
        }
    }
}

/// A running mesh of one test, with its own database, ports and secrets.
pub struct TestMesh {
    pub database_url: String,
    /// `http://127.0.0.1:<port>`.
    pub gateway_url: String,
    /// The app secret of the first registered number: what [`TestMesh::post`] signs with.
    pub app_secret: Secret,
    /// The verify token of the first registered number.
    pub verify_token: Secret,
    messaging_addr: SocketAddr,
    http: reqwest::Client,
    grpc: Grpc,
    services: Services,
}

enum Services {
    Whole(Box<Mesh>),
    Split {
        gateway: Running,
        messaging: Option<Running>,
    },
}

/// A service started with its own shutdown token.
struct Running {
    stop: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn spawn<F>(serve: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let stop = Shutdown::new();
        Self {
            task: tokio::spawn(serve(stop.clone())),
            stop,
        }
    }

    async fn stop(self, name: &str) {
        self.stop.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("{name} failed: {e:#}"),
            Ok(Err(e)) => panic!("{name} panicked: {e}"),
            Err(_) => panic!("{name} did not stop within 30 s"),
        }
    }
}

/// One business number with fresh random credentials.
pub fn number(phone_number_id: Option<&str>) -> BusinessNumber {
    BusinessNumber {
        phone_number_id: phone_number_id.map(str::to_owned),
        waba_id: None,
        app_secret: Secret::generate(),
        verify_token: Secret::generate(),
        access_token: None,
        throughput: None,
        tier: None,
    }
}

impl TestMesh {
    /// The whole mesh (`wamesh::mesh::Mesh`) with one default number of random credentials.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with_numbers(backend, vec![number(None)]).await
    }

    /// The whole mesh, for outage tests: the gateway gives up on messaging after 3 s.
    pub async fn start_for_outage(backend: Backend) -> Self {
        Self::start_with(backend, vec![number(None)], OUTAGE_INGEST_TIMEOUT).await
    }

    /// The whole mesh with these numbers; [`TestMesh::post`] signs with the first one's secret.
    pub async fn start_with_numbers(backend: Backend, numbers: Vec<BusinessNumber>) -> Self {
        Self::start_with(backend, numbers, INGEST_TIMEOUT).await
    }

    async fn start_with(
        backend: Backend,
        numbers: Vec<BusinessNumber>,
        ingest_timeout: Duration,
    ) -> Self {
        init_tracing();
        let database_url = backend.fresh_database_url().await;
        let gateway_listener = bind("127.0.0.1:0").await;
        let messaging_listener = bind("127.0.0.1:0").await;
        let (app_secret, verify_token) = (
            numbers[0].app_secret.clone(),
            numbers[0].verify_token.clone(),
        );
        let mesh = Mesh::start(MeshConfig {
            gateway_listener,
            messaging_listener,
            database_url: database_url.clone(),
            db_max_connections: DB_MAX_CONNECTIONS,
            ingest: IngestConfig::default(),
            numbers,
            ingest_timeout,
            operator_api_keys: Vec::new(),
            send: SendConfig::default(),
            ratelimit: None,
            simulator: None,
            analytics: None,
        })
        .await
        .unwrap_or_else(|e| panic!("starting the mesh on {}: {e:#}", backend.name()));
        assert_eq!(
            mesh.backend,
            backend.name(),
            "messaging runs on the backend the test asked for"
        );
        let (gateway_addr, messaging_addr) = (mesh.gateway_addr, mesh.messaging_addr);
        Self::connect(
            database_url,
            app_secret,
            verify_token,
            gateway_addr,
            messaging_addr,
            Services::Whole(Box::new(mesh)),
        )
        .await
    }

    /// Messaging and the gateway started separately, so messaging can be stopped alone.
    pub async fn start_split(backend: Backend) -> Self {
        init_tracing();
        let database_url = backend.fresh_database_url().await;
        let messaging_listener = bind("127.0.0.1:0").await;
        let messaging_addr = messaging_listener.local_addr().expect("messaging address");
        let messaging = start_messaging(&database_url, messaging_listener).await;
        let default = number(None);
        let (app_secret, verify_token) = (default.app_secret.clone(), default.verify_token.clone());
        let gateway = Gateway::build(GatewayConfig {
            numbers: vec![default],
            messaging_url: format!("http://{messaging_addr}"),
            ingest_timeout: OUTAGE_INGEST_TIMEOUT,
            analytics_url: None,
            operator_api_keys: Vec::new(),
        })
        .expect("build the gateway");
        let gateway_listener = bind("127.0.0.1:0").await;
        let gateway_addr = gateway_listener.local_addr().expect("gateway address");
        let gateway = Running::spawn(|stop| gateway.serve(gateway_listener, stop));
        let services = Services::Split {
            gateway,
            messaging: Some(messaging),
        };
        Self::connect(
            database_url,
            app_secret,
            verify_token,
            gateway_addr,
            messaging_addr,
            services,
        )
        .await
    }

    async fn connect(
        database_url: String,
        app_secret: Secret,
        verify_token: Secret,
        gateway_addr: SocketAddr,
        messaging_addr: SocketAddr,
        services: Services,
    ) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("build the HTTP client");
        let channel = Channel::from_shared(format!("http://{messaging_addr}"))
            .expect("messaging URL")
            .connect()
            .await
            .expect("connect to messaging over gRPC");
        // Big deliveries and pages come back whole: allow more than tonic's 4 MiB default.
        let grpc = MessagingClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        Self {
            database_url,
            gateway_url: format!("http://{gateway_addr}"),
            app_secret,
            verify_token,
            messaging_addr,
            http,
            grpc,
            services,
        }
    }

    /// A client of messaging's gRPC API (reconnects by itself after a restart).
    pub fn grpc(&self) -> Grpc {
        self.grpc.clone()
    }

    /// A client of messaging's event log (dialled anew each time, so it finds a restarted
    /// messaging).
    pub fn events(&self) -> EventsClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.messaging_addr))
            .expect("messaging URL")
            .connect_lazy();
        EventsClient::new(channel)
    }

    /// POSTs a webhook signed with [`TestMesh::app_secret`] over exactly these bytes.
    pub async fn post(&self, body: &[u8]) -> (StatusCode, Value) {
        let signature = wamesh_whatsapp::sign(self.app_secret.expose().as_bytes(), body);
        self.post_raw(body, Some(&signature)).await
    }

    /// POSTs a webhook with this `X-Hub-Signature-256` header (or none); the answer's JSON body
    /// (or its text as a JSON string when it is not JSON).
    pub async fn post_raw(&self, body: &[u8], signature: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!("{}/api/webhooks/whatsapp", self.gateway_url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(wamesh_whatsapp::SIGNATURE_HEADER, signature);
        }
        let response = request.send().await.expect("POST the webhook");
        let status = response.status();
        let text = response.text().await.expect("read the answer");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GETs a path of the gateway (`/healthz`, `/api/webhooks/whatsapp?hub.mode=...`).
    pub async fn get(&self, path_and_query: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.gateway_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let status = response.status();
        (status, response.text().await.expect("read the answer"))
    }

    /// GETs a path whose answer is JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.get(path).await;
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path} answered no JSON ({e}): {text}"));
        (status, value)
    }

    /// Stops messaging alone (split meshes only), draining what it has in flight.
    pub async fn stop_messaging(&mut self) {
        let Services::Split { messaging, .. } = &mut self.services else {
            panic!("only a mesh from start_split can stop messaging alone");
        };
        messaging
            .take()
            .expect("messaging is running")
            .stop("messaging")
            .await;
    }

    /// Starts messaging again on the same address and database (split meshes only).
    pub async fn restart_messaging(&mut self) {
        let listener = bind_again(self.messaging_addr).await;
        let messaging = start_messaging(&self.database_url, listener).await;
        let Services::Split {
            messaging: slot, ..
        } = &mut self.services
        else {
            panic!("only a mesh from start_split can restart messaging");
        };
        assert!(slot.is_none(), "messaging is already running");
        *slot = Some(messaging);
    }

    /// Stops everything: the gateway first, then messaging; removes a SQLite file.
    pub async fn stop(self) {
        match self.services {
            Services::Whole(mesh) => mesh.stop().await.expect("the mesh stops cleanly"),
            Services::Split { gateway, messaging } => {
                gateway.stop("gateway").await;
                if let Some(messaging) = messaging {
                    messaging.stop("messaging").await;
                }
            }
        }
        if let Some(path) = sqlite_path(&self.database_url) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }
}

async fn start_messaging(database_url: &str, listener: TcpListener) -> Running {
    let messaging = Messaging::build(&MessagingConfig {
        database_url: database_url.to_owned(),
        max_db_connections: DB_MAX_CONNECTIONS,
        ingest: IngestConfig::default(),
        numbers: Vec::new(),
        send: SendConfig::default(),
    })
    .await
    .unwrap_or_else(|e| panic!("starting messaging: {e}"));
    Running::spawn(|stop| messaging.serve(listener, stop))
}

async fn bind(address: &str) -> TcpListener {
    TcpListener::bind(address)
        .await
        .unwrap_or_else(|e| panic!("bind {address}: {e}"))
}

/// Binds an address that was just released (the OS may hold it for a moment).
pub async fn bind_again(address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {address} again: {e}"),
        }
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://")?;
    Some(rest.split_once('?').map_or(rest, |(path, _)| path))
}

/// Logs of every test go to the test's captured output; `RUST_LOG` tunes them (default warn).
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Retries `attempt` until it answers `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
