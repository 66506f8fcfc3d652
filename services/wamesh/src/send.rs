//! `wamesh send`: queues one message through messaging's `SendMessage` and, with `--watch`,
//! follows it to Meta and back: accepted (its wamid), then each status webhook as it arrives,
//! until it is read, fails or gives up.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tonic::transport::Channel;
use wamesh_proto::messaging::v1 as pb;
use wamesh_proto::messaging::v1::messaging_client::MessagingClient;

/// The business number `wamesh dev` sends from unless told otherwise (it serves any).
pub const DEV_PHONE_NUMBER_ID: &str = "100000000000002";

#[derive(Debug, Clone, Args)]
pub struct SendCommand {
    /// The user: a phone number in international format.
    #[arg(long)]
    pub to: String,
    /// A text message (the user must have written in the last 24 hours).
    #[arg(long, conflicts_with = "template")]
    pub text: Option<String>,
    /// A template message, e.g. hello_world (allowed outside the 24-hour window).
    #[arg(long)]
    pub template: Option<String>,
    #[arg(long, default_value = "en_US", requires = "template")]
    pub language: String,
    /// The template's body parameters, in order ({{1}}, {{2}}...).
    #[arg(long = "param", requires = "template")]
    pub params: Vec<String>,
    /// The business number that sends.
    #[arg(long, env = "WAMESH_PHONE_NUMBER_ID", default_value = DEV_PHONE_NUMBER_ID)]
    pub phone_number_id: String,
    /// The idempotency key (default: a new one); the same key is the same message.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(
        long,
        env = "WAMESH_MESSAGING_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub messaging_url: String,
    /// Follow the message until it is read, fails or gives up.
    #[arg(long)]
    pub watch: bool,
    /// How long --watch follows it at most.
    #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(args: SendCommand) -> anyhow::Result<()> {
    let content = match (&args.text, &args.template) {
        (Some(text), None) => pb::send_message_request::Content::Text(pb::TextContent {
            body: text.clone(),
            preview_url: false,
        }),
        (None, Some(name)) => pb::send_message_request::Content::Template(pb::TemplateContent {
            name: name.clone(),
            language: args.language.clone(),
            body: args
                .params
                .iter()
                .map(|p| pb::TemplateParameter {
                    name: String::new(),
                    value: Some(pb::template_parameter::Value::Text(p.clone())),
                })
                .collect(),
            ..Default::default()
        }),
        _ => anyhow::bail!("give --text or --template"),
    };
    let key = args
        .key
        .clone()
        .unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
    let channel = Channel::from_shared(args.messaging_url.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to messaging at {}", args.messaging_url))?;
    let mut messaging = MessagingClient::new(channel);
    let answer = messaging
        .send_message(pb::SendMessageRequest {
            business_phone_number_id: args.phone_number_id.clone(),
            to: args.to.clone(),
            idempotency_key: key.clone(),
            content: Some(content),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("SendMessage refused it ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let message = answer.message.context("SendMessage answered no message")?;
    println!(
        "message {} (key {key}){}: {}",
        message.id,
        if answer.duplicate {
            ", queued before"
        } else {
            ""
        },
        message.queue_state
    );
    if let Some(fallback) = &message.fallback {
        println!("  sent as {} ({})", fallback.sent_as, fallback.reason);
    }
    if args.watch {
        watch(&mut messaging, message, args.timeout).await?;
    }
    Ok(())
}

/// Prints what happens to the message until it settles or `timeout` passes.
async fn watch(
    messaging: &mut MessagingClient<Channel>,
    mut message: pb::OutboundMessage,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let (mut state, mut shown) = (message.queue_state.clone(), 0);
    loop {
        if message.queue_state != state {
            state = message.queue_state.clone();
            match state.as_str() {
                "sent" => println!(
                    "  accepted by Meta as {} after {} ms",
                    message.wamid,
                    message.accepted_at_unix_ms - message.queued_at_unix_ms
                ),
                other => println!("  {other}{}", error_text(&message)),
            }
        }
        for status in message.timeline.iter().skip(shown) {
            println!(
                "  {:<10} +{} ms{}",
                status.status,
                status.received_at_unix_ms - message.queued_at_unix_ms,
                status
                    .errors
                    .first()
                    .map(|e| format!(" ({}: {})", e.code, e.title))
                    .unwrap_or_default()
            );
        }
        shown = message.timeline.len();
        let settled = matches!(message.queue_state.as_str(), "failed" | "dead")
            || matches!(
                message.delivery_status.as_str(),
                "read" | "played" | "failed"
            );
        if settled {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "still {} after {timeout:?}",
            message.queue_state
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        message = messaging
            .get_outbound_message(pb::GetOutboundMessageRequest {
                key: Some(pb::get_outbound_message_request::Key::Id(message.id)),
            })
            .await?
            .into_inner();
    }
}

fn error_text(message: &pb::OutboundMessage) -> String {
    message
        .error
        .as_ref()
        .map(|e| format!(" ({}: {})", e.code, e.message))
        .unwrap_or_default()
}
