//! The simulator's command-line options, each also an environment variable
//! `WAMESH_SIMULATOR_*`; `wamesh simulator` and `wamesh dev` flatten them. Their defaults make
//! statuses visible to a person (sent after 0.5 s, delivered after 1.5 s, read after 4 s);
//! tests and benches set them to 0 (or use [`SimulatorConfig::default`]).
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use wamesh_runtime::{Secret, parse_duration};

use crate::knobs::{Behaviour, Delivery, WebhookTarget};
use crate::limits::SendLimits;
use crate::templates::{Template, TemplateDef};
use crate::webhook::Identity;
use crate::{SimulatorConfig, record};

/// Every knob of the simulated Meta.
#[derive(Debug, Clone, Args)]
pub struct SimulatorOptions {
    /// Messages per second per business number, and a second's worth at once; over it: 130429.
    #[arg(long, env = "WAMESH_SIMULATOR_THROUGHPUT", default_value_t = 80.0)]
    pub sim_throughput: f64,
    /// Messages to one recipient in a burst; over it: 131056.
    #[arg(long, env = "WAMESH_SIMULATOR_PAIR_BURST", default_value_t = 45.0)]
    pub sim_pair_burst: f64,
    /// One more message to the same recipient every this long.
    #[arg(long, env = "WAMESH_SIMULATOR_PAIR_INTERVAL", default_value = "6s", value_parser = parse_duration)]
    pub sim_pair_interval: Duration,

    /// Where status and message webhooks go, e.g. http://127.0.0.1:8080/api/webhooks/whatsapp
    /// (unset: none are sent; they are counted as skipped).
    #[arg(long, env = "WAMESH_SIMULATOR_WEBHOOK_URL")]
    pub sim_webhook_url: Option<String>,
    /// The app secret webhooks are signed with (X-Hub-Signature-256).
    #[arg(long, env = "WAMESH_SIMULATOR_APP_SECRET", hide_env_values = true)]
    pub sim_app_secret: Option<String>,
    /// The WABA id webhooks carry (`entry[].id`).
    #[arg(
        long,
        env = "WAMESH_SIMULATOR_WABA_ID",
        default_value = "100000000000001"
    )]
    pub sim_waba_id: String,
    /// The business's display phone number webhooks carry.
    #[arg(
        long,
        env = "WAMESH_SIMULATOR_DISPLAY_PHONE_NUMBER",
        default_value = "15550001234"
    )]
    pub sim_display_phone_number: String,

    /// Every send's answer waits this long.
    #[arg(long, env = "WAMESH_SIMULATOR_LATENCY", default_value = "0ms", value_parser = parse_duration)]
    pub sim_latency: Duration,
    /// Plus a random extra of up to this.
    #[arg(long, env = "WAMESH_SIMULATOR_LATENCY_JITTER", default_value = "0ms", value_parser = parse_duration)]
    pub sim_latency_jitter: Duration,
    /// Share (0-1) of sends answered with a transient error instead (nothing accepted).
    #[arg(long, env = "WAMESH_SIMULATOR_ERROR_RATE", default_value_t = 0.0)]
    pub sim_error_rate: f64,
    /// That error's code (131000: Meta's "Something went wrong").
    #[arg(long, env = "WAMESH_SIMULATOR_ERROR_CODE", default_value_t = 131000)]
    pub sim_error_code: i64,
    /// That error's HTTP status.
    #[arg(
        long,
        env = "WAMESH_SIMULATOR_ERROR_HTTP_STATUS",
        default_value_t = 500
    )]
    pub sim_error_http_status: u16,
    /// Share (0-1) of accepted sends whose answer is lost (the connection closes unanswered).
    #[arg(long, env = "WAMESH_SIMULATOR_DROP_RATE", default_value_t = 0.0)]
    pub sim_drop_rate: f64,
    /// `sent` follows an accepted send after this long.
    #[arg(long, env = "WAMESH_SIMULATOR_SENT_AFTER", default_value = "500ms", value_parser = parse_duration)]
    pub sim_sent_after: Duration,
    /// `delivered` after this long (from acceptance).
    #[arg(long, env = "WAMESH_SIMULATOR_DELIVERED_AFTER", default_value = "1500ms", value_parser = parse_duration)]
    pub sim_delivered_after: Duration,
    /// `read` after this long (from acceptance).
    #[arg(long, env = "WAMESH_SIMULATOR_READ_AFTER", default_value = "4s", value_parser = parse_duration)]
    pub sim_read_after: Duration,
    /// Share (0-1) of delivered messages that are read.
    #[arg(long, env = "WAMESH_SIMULATOR_READ_PROBABILITY", default_value_t = 1.0)]
    pub sim_read_probability: f64,
    /// The customer service window.
    #[arg(long, env = "WAMESH_SIMULATOR_WINDOW", default_value = "1440m", value_parser = parse_duration)]
    pub sim_window: Duration,
    /// false: free-form messages are delivered even outside the window (load tests).
    #[arg(long, env = "WAMESH_SIMULATOR_ENFORCE_WINDOW", default_value_t = true, action = clap::ArgAction::Set)]
    pub sim_enforce_window: bool,
    /// wa_ids that cannot receive (accepted, then failed with 131026), comma-separated.
    #[arg(long, env = "WAMESH_SIMULATOR_UNDELIVERABLE", value_delimiter = ',')]
    pub sim_undeliverable: Vec<String>,
    /// A JSON file of templates: [{name, language, status, category, components}].
    #[arg(long, env = "WAMESH_SIMULATOR_TEMPLATES_FILE")]
    pub sim_templates_file: Option<PathBuf>,
    /// Sends the record keeps before dropping the oldest.
    #[arg(long, env = "WAMESH_SIMULATOR_RECORD_LIMIT", default_value_t = record::DEFAULT_RECORD_LIMIT)]
    pub sim_record_limit: usize,

    /// Statuses (or user messages) in one webhook at most.
    #[arg(long, env = "WAMESH_SIMULATOR_WEBHOOK_BATCH", default_value_t = 100)]
    pub sim_webhook_batch: usize,
    /// How long a due update waits for others to share its webhook.
    #[arg(long, env = "WAMESH_SIMULATOR_WEBHOOK_FLUSH", default_value = "50ms", value_parser = parse_duration)]
    pub sim_webhook_flush: Duration,
    /// Webhook POSTs in flight at once.
    #[arg(
        long,
        env = "WAMESH_SIMULATOR_WEBHOOK_CONCURRENCY",
        default_value_t = 4
    )]
    pub sim_webhook_concurrency: usize,
    /// Updates queued at most; beyond it they are dropped (and counted).
    #[arg(
        long,
        env = "WAMESH_SIMULATOR_WEBHOOK_QUEUE",
        default_value_t = 1_000_000
    )]
    pub sim_webhook_queue: usize,
    /// First wait before a failed webhook is sent again (doubling each time).
    #[arg(long, env = "WAMESH_SIMULATOR_WEBHOOK_RETRY_INITIAL", default_value = "1s", value_parser = parse_duration)]
    pub sim_webhook_retry_initial: Duration,
    /// Longest wait between attempts.
    #[arg(long, env = "WAMESH_SIMULATOR_WEBHOOK_RETRY_MAX", default_value = "60s", value_parser = parse_duration)]
    pub sim_webhook_retry_max: Duration,
}

impl SimulatorOptions {
    pub fn limits(&self) -> SendLimits {
        SendLimits {
            throughput_per_s: self.sim_throughput,
            throughput_burst: self.sim_throughput,
            pair_burst: self.sim_pair_burst,
            pair_interval: self.sim_pair_interval,
        }
    }

    /// The configuration these options give, accepting `access_tokens`; the error names the
    /// flag (and its variable) that is wrong.
    pub fn config(&self, access_tokens: Vec<Secret>) -> anyhow::Result<SimulatorConfig> {
        let limits = self.limits();
        limits
            .validate()
            .map_err(|e| anyhow::anyhow!("--sim-* limits (WAMESH_SIMULATOR_*): {e}"))?;
        let behaviour = Behaviour {
            latency: self.sim_latency,
            latency_jitter: self.sim_latency_jitter,
            error_rate: self.sim_error_rate,
            error_code: self.sim_error_code,
            error_http_status: self.sim_error_http_status,
            drop_rate: self.sim_drop_rate,
            sent_after: self.sim_sent_after,
            delivered_after: self.sim_delivered_after,
            read_after: self.sim_read_after,
            read_probability: self.sim_read_probability,
            window: self.sim_window,
            enforce_window: self.sim_enforce_window,
        };
        behaviour
            .validate()
            .map_err(|e| anyhow::anyhow!("--sim-{} (WAMESH_SIMULATOR_*): {e}", flag_of(&e)))?;
        let delivery = Delivery {
            batch_max: self.sim_webhook_batch,
            flush_interval: self.sim_webhook_flush,
            concurrency: self.sim_webhook_concurrency,
            queue_limit: self.sim_webhook_queue,
            retry_initial: self.sim_webhook_retry_initial,
            retry_max: self.sim_webhook_retry_max,
        };
        delivery
            .validate()
            .map_err(|e| anyhow::anyhow!("--sim-webhook-* (WAMESH_SIMULATOR_WEBHOOK_*): {e}"))?;
        let webhook = match (&self.sim_webhook_url, &self.sim_app_secret) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                let target = WebhookTarget {
                    url: url.clone(),
                    app_secret: Secret::new(secret.clone()),
                };
                target.validate().map_err(|e| {
                    anyhow::anyhow!(
                        "WAMESH_SIMULATOR_WEBHOOK_URL / WAMESH_SIMULATOR_APP_SECRET: {e}"
                    )
                })?;
                Some(target)
            }
            (Some(_), None) => anyhow::bail!(
                "WAMESH_SIMULATOR_WEBHOOK_URL is set but WAMESH_SIMULATOR_APP_SECRET (--sim-app-secret) is not: webhooks must be signed"
            ),
            (None, Some(_)) => anyhow::bail!(
                "WAMESH_SIMULATOR_APP_SECRET is set but WAMESH_SIMULATOR_WEBHOOK_URL (--sim-webhook-url) is not"
            ),
        };
        if self.sim_record_limit == 0 {
            anyhow::bail!("--sim-record-limit (WAMESH_SIMULATOR_RECORD_LIMIT) must be at least 1");
        }
        Ok(SimulatorConfig {
            access_tokens,
            limits,
            webhook,
            identity: Identity {
                waba_id: self.sim_waba_id.clone(),
                display_phone_number: self.sim_display_phone_number.clone(),
            },
            behaviour,
            delivery,
            templates: self.templates()?,
            undeliverable: self.sim_undeliverable.clone(),
            record_limit: self.sim_record_limit,
        })
    }

    fn templates(&self) -> anyhow::Result<Vec<Template>> {
        let Some(path) = &self.sim_templates_file else {
            return Ok(Vec::new());
        };
        let context = || format!("WAMESH_SIMULATOR_TEMPLATES_FILE {}", path.display());
        let text = std::fs::read_to_string(path).with_context(context)?;
        let defs: Vec<TemplateDef> = serde_json::from_str(&text).with_context(context)?;
        defs.into_iter()
            .map(|def| Template::new(def).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()
            .with_context(context)
    }
}

/// The flag a [`Behaviour::validate`] error is about (its message starts with the field).
fn flag_of(error: &str) -> String {
    error
        .split_whitespace()
        .next()
        .unwrap_or("")
        .replace('_', "-")
}
