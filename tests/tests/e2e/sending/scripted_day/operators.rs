//! A gateway of the test's own on port 0, serving the operators' REST API over the test's
//! analytics with one operator key (the sending mesh's gateway takes webhooks and knows no
//! analytics).
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use wamesh_gateway::{Gateway, GatewayConfig};
use wamesh_runtime::{Secret, Shutdown};

const KEY: &str = "op-key-scripted-day";

pub struct Operators {
    url: String,
    http: reqwest::Client,
    stop: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Operators {
    pub async fn start(analytics_url: String) -> Self {
        // Nothing listens there: the operator API does not need messaging.
        let messaging_url = {
            let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            format!("http://{}", closed.local_addr().expect("address"))
        };
        let gateway = Gateway::build(GatewayConfig {
            numbers: Vec::new(),
            messaging_url,
            ingest_timeout: Duration::from_secs(3),
            analytics_url: Some(analytics_url),
            operator_api_keys: vec![Secret::new(KEY)],
        })
        .expect("build the operators' gateway");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let stop = Shutdown::new();
        let task = tokio::spawn(gateway.serve(listener, stop.clone()));
        Self {
            url,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            stop,
            task,
        }
    }

    /// GETs `path` with the key; expects 200 and answers the body as text.
    pub async fn text(&self, path: &str) -> String {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status();
        let body = response.text().await.expect("the body");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// GETs `path` with the key; expects 200 and answers the JSON.
    pub async fn json(&self, path: &str) -> Value {
        let body = self.text(path).await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    pub async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the gateway stops within 30 s")
            .expect("the gateway's task")
            .expect("the gateway stops cleanly");
    }
}
