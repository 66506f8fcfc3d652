//! The mesh as it is deployed: each service a process of its own of the real `wamesh` binary
//! (`wamesh ratelimit`, `wamesh simulator`, `wamesh messaging`, `wamesh gateway`), wired to
//! each other over loopback: messaging on a fresh Postgres database, rate-limit on the shared
//! Redis under a fresh key prefix, messaging sending to the simulator through rate-limit, the
//! simulator's signed webhooks going to the gateway.
//!
//! Every listener is port 0; a process is found by the `... listening` log line it prints
//! (`addr`, and `admin` for the admin server of messaging and rate-limit). Each process's
//! stdout and stderr lines are kept, for tests that look for a log line (or an exported span)
//! afterwards. [`MeshProcesses::stop`] stops them in order with SIGTERM and checks each exits
//! cleanly; anything still running when a test ends (it failed) is killed on drop.
//!
//! Use:
//! ```ignore
//! let mesh = MeshProcesses::start(MeshOptions::default()).await;
//! // mesh.gateway.url(), mesh.messaging.grpc_url(), mesh.simulator.url(), mesh.ratelimit.admin_url() ...
//! let text = mesh.messaging.scrape_metrics().await;
//! mesh.stop().await;
//! ```
//! `MeshOptions::env` goes to every process (say `OTEL_EXPORTER_OTLP_ENDPOINT`), and each
//! process can take extra flags.
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BIN;

/// How long a process may take to print its listening line or to become ready: generous, the
/// machine is slow and shared.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM (its drain deadline is 25 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The business number, token and secrets the mesh runs with.
pub const PHONE_NUMBER_ID: &str = "100000000000002";
pub const ACCESS_TOKEN: &str = "processes-token";
pub const APP_SECRET: &str = "processes-app-secret";
pub const VERIFY_TOKEN: &str = "processes-verify-token";

/// One running `wamesh <command>`: its addresses and every line it wrote. Killed on drop.
pub struct Process {
    /// The command (`gateway`, `messaging`, ...).
    pub name: String,
    /// The main listener (HTTP for the gateway and the simulator, gRPC for the others).
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`), for messaging and rate-limit.
    pub admin: Option<SocketAddr>,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `wamesh <command> <args>` with only `env` (and `PATH`, `HOME`, `TMPDIR`) in its
    /// environment, and waits until it logs that it listens.
    pub async fn start(command: &str, args: &[String], env: &[(String, String)]) -> Self {
        let mut child = Command::new(BIN)
            .arg(command)
            .args(args)
            .env_clear()
            .envs(
                ["PATH", "HOME", "TMPDIR", "RUST_BACKTRACE"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("wamesh {command} starts: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        keep_lines(child.stdout.take().expect("stdout"), output.clone());
        keep_lines(child.stderr.take().expect("stderr"), output.clone());
        let mut process = Self {
            name: command.to_owned(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: None,
            child: Some(child),
            output,
        };
        let line = process
            .wait_for_log(START_TIMEOUT, |log| {
                log["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with(" listening"))
                    && log["addr"].is_string()
            })
            .await;
        let addr = |key: &str| {
            line[key].as_str().map(|a| {
                a.parse()
                    .unwrap_or_else(|e| panic!("{command}'s {key} {a:?}: {e}"))
            })
        };
        process.addr = addr("addr").expect("addr");
        process.admin = addr("admin");
        process
    }

    /// `http://<addr>`: the HTTP base URL, or the gRPC endpoint for tonic clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://<admin>`, for messaging and rate-limit.
    pub fn admin_url(&self) -> String {
        let admin = self
            .admin
            .unwrap_or_else(|| panic!("{} has no admin listener", self.name));
        format!("http://{admin}")
    }

    /// Where its `/metrics` is: the admin server's, else the main listener's.
    pub fn metrics_url(&self) -> String {
        match self.admin {
            Some(admin) => format!("http://{admin}/metrics"),
            None => format!("{}/metrics", self.url()),
        }
    }

    /// Its `/metrics` text (asserting a 200).
    pub async fn scrape_metrics(&self) -> String {
        let response = reqwest::get(self.metrics_url())
            .await
            .unwrap_or_else(|e| panic!("scraping {}: {e}", self.name));
        assert_eq!(response.status(), 200, "{}'s /metrics", self.name);
        response.text().await.expect("metrics text")
    }

    /// Every line it wrote so far (stdout and stderr, in arrival order per stream).
    pub fn lines(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Its JSON log lines so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until a JSON log line satisfies `found`, and answers it; panics with the output
    /// when the process exits first or `timeout` passes.
    pub async fn wait_for_log(
        &mut self,
        timeout: Duration,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().into_iter().find(|l| found(l)) {
                return line;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "wamesh {} exited ({status}) before the awaited line:\n{}",
                    self.name,
                    self.lines().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "wamesh {}: no awaited line within {timeout:?}:\n{}",
                self.name,
                self.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it was not stopped yet (it may have exited by itself).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends SIGTERM and waits for it to exit; answers how it exited. Panics when it was
    /// stopped already.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} was stopped already", self.name));
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success(), "SIGTERM to {}", self.name);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "wamesh {} did not stop within {STOP_TIMEOUT:?} of SIGTERM:\n{}",
                    self.name,
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it (SIGTERM) and asserts it exited cleanly.
    pub async fn stop_cleanly(&mut self) {
        let status = self.stop().await;
        assert!(
            status.success(),
            "wamesh {} exited with {status} after SIGTERM:\n{}",
            self.name,
            self.lines().join("\n")
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Keeps every line `stream` writes, from a thread of its own.
fn keep_lines(stream: impl Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            into.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
}

/// What to run the mesh with besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// Environment for every process, after the harness's own (so it may override them):
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `RUST_LOG`, ... Processes are found by their JSON
    /// `... listening` line: a `RUST_LOG` must keep `wamesh::run` at `info`, and
    /// `WAMESH_LOG_FORMAT` must stay JSON.
    pub env: Vec<(String, String)>,
    /// Extra flags of each command.
    pub ratelimit_args: Vec<String>,
    pub simulator_args: Vec<String>,
    pub messaging_args: Vec<String>,
    pub gateway_args: Vec<String>,
}

/// The four services, running and wired together.
pub struct MeshProcesses {
    pub ratelimit: Process,
    pub simulator: Process,
    pub messaging: Process,
    pub gateway: Process,
    /// messaging's database (a fresh one), for tests that look into it.
    #[allow(dead_code, reason = "the harness is shared; not every test reads it")]
    pub database_url: String,
    /// rate-limit's Redis key prefix (a fresh one), for tests that look into Redis.
    #[allow(dead_code, reason = "the harness is shared; not every test reads it")]
    pub redis_prefix: String,
}

impl MeshProcesses {
    /// Starts rate-limit, the simulator, messaging and the gateway, in that order (each one's
    /// addresses go into the next one's configuration), points the simulator's webhooks at the
    /// gateway, and waits until each says it is ready. The simulator sends statuses within a
    /// few hundred milliseconds (`sent` 50 ms, `delivered` 100 ms, `read` 200 ms after it
    /// accepted a message), unless `simulator_args` say otherwise.
    pub async fn start(options: MeshOptions) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let database_url = wamesh_testkit::fresh_postgres_url().await;
        let redis_prefix = wamesh_testkit::fresh_redis_prefix();
        let env = |own: &[(&str, &str)]| -> Vec<(String, String)> {
            let mut env: Vec<(String, String)> = [("RUST_LOG", "warn,wamesh=info")]
                .iter()
                .chain(own)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            env.extend(options.env.iter().cloned());
            env
        };
        let args = |own: &[&str], extra: &[String]| -> Vec<String> {
            own.iter()
                .map(|a| a.to_string())
                .chain(extra.iter().cloned())
                .collect()
        };
        let loopback = ["--addr", "127.0.0.1:0"];
        let with_admin = ["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];

        let redis_url = wamesh_testkit::redis_url();
        let ratelimit = Process::start(
            "ratelimit",
            &args(&with_admin, &options.ratelimit_args),
            &env(&[
                ("REDIS_URL", &redis_url),
                ("WAMESH_RATELIMIT_PREFIX", &redis_prefix),
            ]),
        )
        .await;
        let fast_statuses = [
            "--sim-sent-after",
            "50ms",
            "--sim-delivered-after",
            "100ms",
            "--sim-read-after",
            "200ms",
            "--sim-webhook-flush",
            "10ms",
        ];
        let simulator = Process::start(
            "simulator",
            &args(
                &[&loopback[..], &fast_statuses[..]].concat(),
                &options.simulator_args,
            ),
            &env(&[("WAMESH_ACCESS_TOKEN", ACCESS_TOKEN)]),
        )
        .await;
        let messaging = Process::start(
            "messaging",
            &args(&with_admin, &options.messaging_args),
            &env(&[
                ("DATABASE_URL", &database_url),
                ("WAMESH_ACCESS_TOKEN", ACCESS_TOKEN),
                ("WAMESH_GRAPH_API_URL", &simulator.url()),
                ("WAMESH_RATELIMIT_URL", &ratelimit.url()),
                ("WAMESH_SEND_POLL_INTERVAL", "50ms"),
            ]),
        )
        .await;
        let gateway = Process::start(
            "gateway",
            &args(&loopback, &options.gateway_args),
            &env(&[
                ("WAMESH_MESSAGING_URL", &messaging.url()),
                ("WAMESH_APP_SECRET", APP_SECRET),
                ("WAMESH_VERIFY_TOKEN", VERIFY_TOKEN),
            ]),
        )
        .await;
        let mesh = Self {
            ratelimit,
            simulator,
            messaging,
            gateway,
            database_url,
            redis_prefix,
        };
        let http = reqwest::Client::new();
        let webhooks = http
            .post(format!("{}/_sim/config", mesh.simulator.url()))
            .json(&serde_json::json!({
                "webhook_url": format!("{}/api/webhooks/whatsapp", mesh.gateway.url()),
                "app_secret": APP_SECRET,
            }))
            .send()
            .await
            .expect("the simulator's configuration");
        assert_eq!(webhooks.status(), 200, "the simulator takes the gateway");
        for url in [
            format!("{}/readyz", mesh.ratelimit.admin_url()),
            format!("{}/readyz", mesh.messaging.admin_url()),
            format!("{}/readyz", mesh.gateway.url()),
            format!("{}/_sim/stats", mesh.simulator.url()),
        ] {
            ready(&http, &url).await;
        }
        mesh
    }

    /// The four processes, in start order.
    pub fn all(&self) -> [&Process; 4] {
        [
            &self.ratelimit,
            &self.simulator,
            &self.messaging,
            &self.gateway,
        ]
    }

    /// Stops those still running as a deployment drains: the gateway (no more webhooks in),
    /// messaging (its workers settle their claims), rate-limit, the simulator; each must exit
    /// cleanly.
    pub async fn stop(mut self) {
        for process in [
            &mut self.gateway,
            &mut self.messaging,
            &mut self.ratelimit,
            &mut self.simulator,
        ] {
            if process.is_running() {
                process.stop_cleanly().await;
            }
        }
    }
}

/// Waits until `url` answers 200.
async fn ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let status = http.get(url).send().await.map(|r| r.status().as_u16());
        if matches!(status, Ok(200)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} not ready within {START_TIMEOUT:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
