//! `GetSystemHealth`: the mesh right now. From the live window (what the consumer counted in the
//! last minutes): webhook processing latency (Meta's timestamp of a user's message to
//! messaging's commit) and error rates of sending and of delivery; from the services'
//! `/metrics` over the same window ([`crate::scrape`]): each service's requests and server
//! errors; asked of messaging: the outbound queue; asked of rate-limit: its most used buckets. A service that cannot be asked
//! is named as unavailable, never guessed.
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use wamesh_proto::messaging::v1 as messaging;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;
use wamesh_telemetry::GrpcTraceInterceptor;

use crate::alerts::RateLimitProbe;
use crate::live::{Live, Window};
use crate::query::Percentiles;
use crate::scrape::Scrapes;

/// How long a health question to another service may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One kind of operation's failures in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Errors {
    /// `messaging.send` (send attempts to Meta), `meta.delivery` (messages Meta failed to
    /// deliver, of those delivered or failed), or a service's name as its `/metrics` label it
    /// (`gateway`, `messaging`: its requests, and its server errors, see [`crate::scrape`]).
    pub service: String,
    pub total: u64,
    pub errors: u64,
}

/// The mesh right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub webhook_processing: Percentiles,
    pub errors: Vec<Errors>,
    pub queue_depth: u64,
    pub oldest_queued_age_ms: i64,
    /// (scope, key, usage ratio, warning).
    pub rate_limit: Vec<(String, String, f64, bool)>,
    /// Services that could not be asked, and why.
    pub unavailable: Vec<String>,
}

/// Asks the services and reads the live window.
#[derive(Clone)]
pub struct Health {
    messaging: MessagingClient<InterceptedService<Channel, GrpcTraceInterceptor>>,
    ratelimit: Option<RateLimitProbe>,
    /// The usage ratio from which a bucket is flagged (`MONITORING_RATE_LIMIT_WARNING`).
    warning: f64,
    live: Live,
    scrapes: Scrapes,
}

impl Health {
    pub fn new(
        messaging_url: &str,
        ratelimit: Option<RateLimitProbe>,
        warning: f64,
        live: Live,
        scrapes: Scrapes,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(messaging_url.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(ASK_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            messaging: MessagingClient::with_interceptor(channel, GrpcTraceInterceptor),
            ratelimit,
            warning,
            live,
            scrapes,
        })
    }

    pub async fn report(&self, now_ms: i64) -> Report {
        let window = self.live.window(now_ms);
        let mut report = Report {
            webhook_processing: Percentiles::of(&window.webhook_latency),
            errors: errors(&window),
            ..Report::default()
        };
        let (services, unreadable) = self.scrapes.errors(now_ms);
        report.errors.extend(services);
        let mut client = self.messaging.clone();
        let queue = client.get_send_status(messaging::GetSendStatusRequest::default());
        let usage = async {
            match &self.ratelimit {
                Some(probe) => Some(probe.usage().await),
                None => None,
            }
        };
        let (queue, usage) = tokio::join!(queue, usage);
        match queue {
            Ok(status) => {
                let status = status.into_inner();
                report.queue_depth = status.queue_depth;
                report.oldest_queued_age_ms = status.oldest_age_ms;
            }
            Err(e) => report
                .unavailable
                .push(format!("messaging: {}", e.message())),
        }
        match usage {
            Some(Ok(buckets)) => {
                report.rate_limit = buckets
                    .into_iter()
                    .map(|b| {
                        let warning = b.usage_ratio >= self.warning;
                        (b.scope, b.key, b.usage_ratio, warning)
                    })
                    .collect();
            }
            Some(Err(e)) => report.unavailable.push(format!("rate-limit: {e}")),
            None => report
                .unavailable
                .push("rate-limit: not configured (WAMESH_RATELIMIT_URL)".into()),
        }
        report.unavailable.extend(unreadable);
        report
    }
}

fn errors(window: &Window) -> Vec<Errors> {
    vec![
        Errors {
            service: "messaging.send".into(),
            total: window.attempts,
            errors: window.failed_attempts,
        },
        Errors {
            service: "meta.delivery".into(),
            total: window.deliveries + window.failed_deliveries,
            errors: window.failed_deliveries,
        },
    ]
}
