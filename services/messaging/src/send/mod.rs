//! Sending: `SendMessage` into a durable queue, send workers out to the Graph API, and what
//! the gateway shows of them.
//!
//! - [`request`]: the proto request into domain types, checked against Meta's limits;
//! - [`plan`]: the 24-hour window and the template registry's fallback chains;
//! - [`Outbox`]: idempotent, group-committed enqueueing (wakes a local worker);
//! - [`worker`]: claim, rate-limit, call, settle; [`limits`]: the rate-limit stream client;
//! - [`stats`]: what each worker did lately; [`Sending::run`] also reconciles in-doubt sends
//!   and reports the workers.
pub mod limits;
pub mod plan;
pub mod request;
pub mod stats;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use wamesh_runtime::batch::{BatchConfig, Batcher};
use wamesh_runtime::{BusinessNumber, Shutdown};
use wamesh_whatsapp::graph::GraphClient;

use crate::error::MessagingError;
use crate::grpc::EventSignal;
use crate::ingest::now_ms;
use crate::store::outbound::{
    Callback, Enqueued, NewOutbound, OutboundKey, QueueCounts, WorkerReport,
};
use crate::store::{Store, StoreError};
use crate::window::ServiceWindow;
pub use request::SendRequest;
use stats::WorkerStats;
pub use worker::Backoff;

/// How sending runs.
#[derive(Debug, Clone)]
pub struct SendConfig {
    /// Send workers in this replica.
    pub workers: usize,
    /// Messages a worker claims at once.
    pub batch: u32,
    /// Attempts before a message with transient errors is dead.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long a claim holds its messages: longer than a Graph API call may take, so only a
    /// worker that died loses its claim.
    pub lease: Duration,
    /// How long an in-doubt message waits for a status webhook proving Meta has it before it
    /// is sent again.
    pub evidence_window: Duration,
    /// How often idle workers look for due messages (new ones of this replica wake them at once).
    pub poll_interval: Duration,
    /// How long a message waits when rate-limit cannot be asked.
    pub limits_unavailable_delay: Duration,
    /// `https://graph.facebook.com`, or the simulator.
    pub graph_api_url: String,
    pub graph_api_version: String,
    /// One Graph API call at most (then its outcome is in doubt).
    pub graph_timeout: Duration,
    /// The rate-limit service, e.g. `http://127.0.0.1:50052`.
    pub ratelimit_url: String,
    /// This replica's name in worker ids (`<instance>/<n>`).
    pub instance: String,
    /// How often workers' stats are written for other replicas to show.
    pub report_interval: Duration,
    /// How often expired claims and in-doubt messages are looked at.
    pub reconcile_interval: Duration,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            batch: 64,
            max_attempts: 10,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(600),
            },
            lease: Duration::from_secs(60),
            evidence_window: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
            limits_unavailable_delay: Duration::from_secs(1),
            graph_api_url: "https://graph.facebook.com".into(),
            graph_api_version: "v23.0".into(),
            graph_timeout: Duration::from_secs(15),
            ratelimit_url: "http://127.0.0.1:50052".into(),
            instance: instance_name(),
            report_interval: Duration::from_secs(2),
            reconcile_interval: Duration::from_secs(1),
        }
    }
}

/// This process's name: the host (a pod's name on Kubernetes) and the process id.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "messaging".into());
    format!("{host}:{}", std::process::id())
}

/// The business numbers messaging sends for.
#[derive(Debug, Default)]
pub struct Senders {
    numbers: Vec<BusinessNumber>,
}

impl Senders {
    pub fn new(numbers: Vec<BusinessNumber>) -> Self {
        Self { numbers }
    }

    /// The number with this id, else the default number (which serves any).
    pub fn lookup(&self, phone_number_id: &str) -> Option<&BusinessNumber> {
        let exact = self
            .numbers
            .iter()
            .find(|n| n.phone_number_id.as_deref() == Some(phone_number_id));
        exact.or_else(|| self.numbers.iter().find(|n| n.phone_number_id.is_none()))
    }
}

/// The rate-limit scope of a number: its WABA (all of its buckets, and its tier, live there),
/// else the number itself.
pub fn scope_of(number: &BusinessNumber, phone_number_id: &str) -> String {
    number
        .waba_id
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| phone_number_id.to_owned())
}

/// The Graph API body of a stored payload, with the callback data Meta echoes on its statuses.
pub fn callback_body(payload: &str, callback: &Callback) -> Vec<u8> {
    let mut body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(payload).unwrap_or_default();
    body.insert(
        "biz_opaque_callback_data".into(),
        serde_json::Value::String(callback.encode()),
    );
    serde_json::Value::Object(body).to_string().into_bytes()
}

/// What workers share.
pub struct SendContext {
    pub store: Arc<dyn Store>,
    pub senders: Arc<Senders>,
    pub graph: GraphClient,
    pub limits: limits::Limits,
    pub config: SendConfig,
    /// Rung when this replica queues something, so an idle worker claims it at once.
    pub wake: Arc<Notify>,
    /// Rung after commits that append events (settles, reconciliations).
    pub signal: EventSignal,
}

type EnqueueResult = Result<Enqueued, Arc<StoreError>>;

/// Where `SendMessage` puts messages: idempotent, durable, group-committed.
#[derive(Clone)]
pub struct Outbox {
    store: Arc<dyn Store>,
    senders: Arc<Senders>,
    batcher: Batcher<NewOutbound, EnqueueResult>,
    wake: Arc<Notify>,
}

impl Outbox {
    /// Queues one message (see the `SendMessage` RPC for the rules).
    pub async fn send(
        &self,
        request: SendRequest,
        traceparent: Option<String>,
        tracestate: Option<String>,
    ) -> Result<Enqueued, MessagingError> {
        let pnid = &request.business_phone_number_id;
        let number = self
            .senders
            .lookup(pnid)
            .filter(|n| n.access_token.is_some())
            .ok_or_else(|| {
                MessagingError::FailedPrecondition(format!(
                    "business_phone_number_id: {pnid} has no access token configured for sending \
                     (WAMESH_ACCESS_TOKEN or the numbers file)"
                ))
            })?;
        let contact = self.store.get_contact(pnid, &request.message.to).await?;
        let window = ServiceWindow {
            last_inbound_s: contact.map_or(0, |c| c.last_inbound_s),
        };
        let waba = number.waba_id.clone().unwrap_or_default();
        let planned = plan::plan(
            &*self.store,
            &waba,
            &request,
            window.is_open_at(now_ms() / 1000),
        )
        .await;
        // A key asked before answers its message, whatever would be decided now (the window
        // may have closed since, say); a new one is planned and queued.
        let plan = match planned {
            Ok(plan) => plan,
            Err(refused) => return self.known(&request).await?.ok_or(refused),
        };
        let new = NewOutbound {
            business_phone_number_id: pnid.clone(),
            idempotency_key: request.idempotency_key.clone(),
            request_digest: request.digest.clone(),
            recipient: request.message.to.clone(),
            kind: plan.message.content.kind().to_owned(),
            template: plan.template(),
            preview: plan.preview.clone(),
            payload: plan.message.to_graph_body().to_string(),
            fallback_json: plan
                .fallback
                .as_ref()
                .map(|f| serde_json::to_string(f).unwrap_or_default()),
            traceparent,
            tracestate,
        };
        let enqueued = self
            .batcher
            .submit(new)
            .await
            .map_err(|_| MessagingError::from(StoreError::Unavailable(sqlx::Error::PoolClosed)))?
            .map_err(MessagingError::Store)?;
        if !enqueued.duplicate {
            self.wake.notify_one();
        }
        same_request(enqueued, &request)
    }

    /// The message an earlier request with this key queued, if any (and the same request).
    async fn known(&self, request: &SendRequest) -> Result<Option<Enqueued>, MessagingError> {
        let key = OutboundKey::Idempotency {
            business_phone_number_id: request.business_phone_number_id.clone(),
            key: request.idempotency_key.clone(),
        };
        match self.store.get_outbound(&key).await? {
            Some(row) => same_request(
                Enqueued {
                    row,
                    duplicate: true,
                },
                request,
            )
            .map(Some),
            None => Ok(None),
        }
    }
}

/// A known key answers its message only when it was asked for the same message.
fn same_request(enqueued: Enqueued, request: &SendRequest) -> Result<Enqueued, MessagingError> {
    if enqueued.row.request_digest != request.digest {
        return Err(MessagingError::AlreadyExists(format!(
            "idempotency_key: {:?} was used for a different message (id {})",
            request.idempotency_key, enqueued.row.id
        )));
    }
    Ok(enqueued)
}

/// Sending in one replica: the outbox, the workers and their upkeep.
pub struct Sending {
    ctx: Arc<SendContext>,
    stats: Vec<WorkerStats>,
    outbox: Outbox,
}

impl Sending {
    /// Builds the clients (rate-limit is dialled lazily) and the outbox.
    pub fn new(
        store: Arc<dyn Store>,
        numbers: Vec<BusinessNumber>,
        config: SendConfig,
        signal: EventSignal,
    ) -> anyhow::Result<Self> {
        let graph = GraphClient::new(
            &config.graph_api_url,
            &config.graph_api_version,
            config.graph_timeout,
        )?;
        let limits = limits::Limits::connect_lazy(&config.ratelimit_url)?;
        let senders = Arc::new(Senders::new(numbers));
        let wake = Arc::new(Notify::new());
        let committers = if store.backend() == "sqlite" { 1 } else { 2 };
        let batcher = Batcher::start(
            BatchConfig {
                workers: committers,
                max_batch: 256,
                queue_capacity: 4096,
            },
            {
                let (store, signal) = (store.clone(), signal.clone());
                move |batch: Vec<NewOutbound>| {
                    let (store, signal) = (store.clone(), signal.clone());
                    async move {
                        let done = enqueue_batch(&*store, batch).await;
                        signal.committed();
                        done
                    }
                }
            },
        );
        let started = now_ms();
        let stats = (0..config.workers.max(1))
            .map(|n| WorkerStats::new(format!("{}/{n}", config.instance), started))
            .collect();
        let outbox = Outbox {
            store: store.clone(),
            senders: senders.clone(),
            batcher,
            wake: wake.clone(),
        };
        Ok(Self {
            ctx: Arc::new(SendContext {
                store,
                senders,
                graph,
                limits,
                config,
                wake,
                signal,
            }),
            stats,
            outbox,
        })
    }

    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// The queue and the workers, for `GetSendStatus`.
    pub fn board(&self) -> StatusBoard {
        StatusBoard {
            store: self.ctx.store.clone(),
            local: self.stats.clone(),
        }
    }

    /// Runs the workers, the reconciler and the reporter until `shutdown`; the workers finish
    /// the claims in hand, then the last reports are written.
    pub async fn run(self, shutdown: Shutdown) {
        let mut tasks = tokio::task::JoinSet::new();
        for stats in &self.stats {
            tasks.spawn(worker::run(
                self.ctx.clone(),
                stats.clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(reconcile(self.ctx.clone(), shutdown.clone()));
        tasks.spawn(report(
            self.ctx.clone(),
            self.stats.clone(),
            shutdown.clone(),
        ));
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a send task panicked");
            }
        }
    }
}

async fn enqueue_batch(store: &dyn Store, batch: Vec<NewOutbound>) -> Vec<EnqueueResult> {
    match store.enqueue(&batch, now_ms()).await {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(e) => {
            let e = Arc::new(e);
            batch.iter().map(|_| Err(e.clone())).collect()
        }
    }
}

/// Every `reconcile_interval`: expired claims go in doubt; in-doubt messages are settled by
/// the evidence, or queued again once the window passed without any.
async fn reconcile(ctx: Arc<SendContext>, shutdown: Shutdown) {
    let window = ctx.config.evidence_window.as_millis() as i64;
    while !shutdown.is_cancelled() {
        let now = now_ms();
        match ctx.store.reconcile(now, now - window).await {
            Ok(done) if done != Default::default() => {
                ctx.signal.committed();
                tracing::warn!(
                    expired = done.expired,
                    proven_sent = done.proven_sent,
                    requeued = done.requeued,
                    "reconciled sends in doubt"
                );
                if done.requeued > 0 {
                    ctx.wake.notify_one();
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reconciling sends failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.config.reconcile_interval) => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// Every `report_interval`, and once more at the end: the workers' stats into the store (and
/// the queue's and the pool's gauges into metrics).
async fn report(ctx: Arc<SendContext>, stats: Vec<WorkerStats>, shutdown: Shutdown) {
    loop {
        let stopping = shutdown.is_cancelled();
        crate::metrics::sample(&*ctx.store, now_ms()).await;
        for worker in &stats {
            if let Err(e) = ctx.store.report_worker(&worker.report(now_ms())).await {
                tracing::debug!(error = %e, "could not report a send worker");
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(ctx.config.report_interval) => {}
            // Let the workers finish their claims before the last report.
            () = shutdown.cancelled() => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The queue and every worker that reported lately.
#[derive(Clone)]
pub struct StatusBoard {
    store: Arc<dyn Store>,
    local: Vec<WorkerStats>,
}

/// Reports older than this are not shown.
const REPORTS_SHOWN_FOR_MS: i64 = 10 * 60 * 1000;
/// A worker that reported within this is live.
pub const LIVE_FOR_MS: i64 = 30 * 1000;

impl StatusBoard {
    /// The queue's counts and every worker's report: this replica's as they are now, the
    /// others' as they last wrote them.
    pub async fn status(&self, now: i64) -> Result<(QueueCounts, Vec<WorkerReport>), StoreError> {
        let counts = self.store.queue_counts(now).await?;
        let mut workers = self
            .store
            .worker_reports(now - REPORTS_SHOWN_FOR_MS)
            .await?;
        for local in &self.local {
            let live = local.report(now);
            match workers.iter_mut().find(|w| w.worker_id == live.worker_id) {
                Some(stored) => *stored = live,
                None => workers.push(live),
            }
        }
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok((counts, workers))
    }
}
