//! The Graph API client: `POST {base}/{version}/{phone_number_id}/messages`, and what its answer
//! means for the message.
//!
//! A send ends in one of three ways that the sender must tell apart: Meta accepted the message
//! ([`Accepted`], with its wamid); it surely did not and may or may not be retried
//! ([`ErrorClass::Transient`] or [`ErrorClass::Permanent`]); or nobody knows whether Meta has it
//! ([`ErrorClass::InDoubt`]: the request may have arrived and the answer was lost), which must
//! not be sent again blindly or the user gets it twice. The line between "never sent" and "no
//! answer" is drawn at the connection: a failure while connecting (refused, DNS, TLS handshake,
//! the connect timeout) never carried the request; anything after it may have.
//!
//! One client serves every business number (the token is per call) over keep-alive connections.
//! No error message carries the access token.
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};
use serde_json::Value;

use crate::envelope::{id_string, int_value};

/// Idle keep-alive connections kept per host: senders run hundreds of requests a second.
const POOL_IDLE_PER_HOST: usize = 256;
/// The longest connect allowed; see [`connect_timeout`].
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// Meta's answers are a few hundred bytes; anything past this is not Meta's and is not read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A Graph API client for the messages endpoint. Cheap to clone: clones share the pool.
#[derive(Debug, Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    /// `{base}/{version}`, without a trailing slash.
    prefix: Arc<str>,
}

/// Why a [`GraphClient`] cannot be built: the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Graph API client: {0}")]
pub struct GraphSetupError(pub String);

/// Meta took the message: 200 with its id. Not yet delivered: statuses tell the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// `messages[0].id`: the id every status webhook of this message carries.
    pub wamid: String,
    /// `contacts[0].wa_id`: the user's WhatsApp id (may differ from the number sent to).
    pub wa_id: Option<String>,
    /// `messages[0].message_status`: template pacing (`accepted`, `held_for_quality_assessment`).
    pub message_status: Option<String>,
}

/// Meta's error object: `{"error":{"message","type","code","error_subcode","error_data":
/// {"details"},"fbtrace_id"}}`. Branch on `code` and `details`, never on `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub code: i64,
    pub subcode: Option<i64>,
    /// Meta's `type`, e.g. `OAuthException`.
    pub error_type: String,
    pub message: String,
    /// `error_data.details`: what exactly was wrong.
    pub details: String,
    /// Meta's request id, for Meta's support.
    pub fbtrace_id: String,
}

/// Why a send did not end in [`Accepted`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Meta answered with its error object (any HTTP status).
    #[error("Graph API error {} (HTTP {http_status}): {}", error.code, error.message)]
    Api { http_status: u16, error: GraphError },
    /// An HTTP error answer that is not Meta's error shape (a proxy's 502 page...).
    #[error("the Graph API answered HTTP {status} without Meta's error object")]
    Http { status: u16 },
    /// The request never reached Meta (connection refused, DNS, TLS handshake, connect
    /// timeout): safe to retry.
    #[error("the request did not reach the Graph API: {0}")]
    NotSent(String),
    /// It may have reached Meta but no usable answer came back (a timeout after connecting, the
    /// connection closed or reset mid-answer, an unreadable 200 body): Meta may have the message.
    #[error("no usable answer from the Graph API (Meta may have the message): {0}")]
    NoAnswer(String),
    /// The request cannot be made at all (a phone number id that is not one, an access token
    /// that is no header value): sending it again would fail the same way.
    #[error("the request cannot be sent: {0}")]
    Invalid(String),
}

/// What a failed send calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry later, with backoff.
    Transient,
    /// Do not retry: the message fails.
    Permanent,
    /// Meta may have the message: do not resend until a status webhook (or its absence) tells.
    InDoubt,
}

/// The class of Meta's error `code`: transient 1, 2, 4, 80007, 130429, 131000, 131016, 131056
/// and 131057 (unknown, unavailable, rate limits, maintenance); every other code is permanent.
pub fn classify_code(code: i64) -> ErrorClass {
    match code {
        1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 131056 | 131057 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

impl SendError {
    /// What the failure calls for: Meta's errors by code; other HTTP errors transient when 5xx
    /// or 429; never sent, transient; no answer, in doubt.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api { error, .. } => classify_code(error.code),
            Self::Http { status } if *status >= 500 || *status == 429 => ErrorClass::Transient,
            Self::Http { .. } | Self::Invalid(_) => ErrorClass::Permanent,
            Self::NotSent(_) => ErrorClass::Transient,
            Self::NoAnswer(_) => ErrorClass::InDoubt,
        }
    }

    /// Meta's error code, when Meta answered with one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { error, .. } => Some(error.code),
            _ => None,
        }
    }
}

impl GraphClient {
    /// A client for `base_url` (`https://graph.facebook.com`, or the simulator's
    /// `http://127.0.0.1:8090`) and API `version` (`v23.0`); `timeout` bounds a whole call,
    /// from connecting to the last byte of the answer.
    pub fn new(base_url: &str, version: &str, timeout: Duration) -> Result<Self, GraphSetupError> {
        let base = base_url.trim_end_matches('/');
        let host = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .unwrap_or_default();
        if host.is_empty() || host.contains(['/', '?', '#']) || host.contains(char::is_whitespace) {
            return Err(GraphSetupError(format!(
                "the base URL {base_url:?} is not http(s)://host[:port]"
            )));
        }
        if !is_version(version) {
            return Err(GraphSetupError(format!(
                "the API version {version:?} is not like v23.0"
            )));
        }
        if timeout.is_zero() {
            return Err(GraphSetupError("the timeout must be more than zero".into()));
        }
        // reqwest is built without a default crypto provider; another caller may have
        // installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(connect_timeout(timeout))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            // A redirected POST would become a GET elsewhere: an answer, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GraphSetupError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            prefix: format!("{base}/{version}").into(),
        })
    }

    /// Sends one message: `POST {base}/{version}/{phone_number_id}/messages` with
    /// `Authorization: Bearer <access_token>`, `content-type: application/json`, `body` as given
    /// (the rendered [`crate::OutgoingMessage::to_graph_body`]) and the caller's extra
    /// `headers` (`traceparent`). Answers Meta's wamid, or why not (see [`SendError::class`]).
    pub async fn send_message(
        &self,
        phone_number_id: &str,
        access_token: &str,
        body: Vec<u8>,
        mut headers: HeaderMap,
    ) -> Result<Accepted, SendError> {
        if phone_number_id.is_empty()
            || !phone_number_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(SendError::Invalid(
                "the phone number id must be letters, digits, - or _".into(),
            ));
        }
        if access_token.trim().is_empty() {
            return Err(SendError::Invalid("the access token is empty".into()));
        }
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
                SendError::Invalid("the access token holds characters a header cannot".into())
            })?;
        authorization.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, authorization);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let url = format!("{}/{phone_number_id}/messages", self.prefix);
        let response = self
            .http
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status();
        let answer = read_answer(response).await;
        interpret(status, answer)
    }
}

/// The connect timeout: half the call's, at most 10 s. It must fire before the call's own
/// timeout, so that a timeout while connecting (nothing sent: `is_connect`) is never taken for
/// one after the request went out (in doubt).
fn connect_timeout(timeout: Duration) -> Duration {
    (timeout / 2).min(CONNECT_TIMEOUT_MAX)
}

fn is_version(version: &str) -> bool {
    let Some((major, minor)) = version
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    [major, minor]
        .iter()
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
}

/// A failure before any answer came: connecting (nothing was sent) or later (maybe sent).
fn transport_error(e: &reqwest::Error) -> SendError {
    let text = describe(e);
    if e.is_connect() || e.is_dns() {
        SendError::NotSent(text)
    } else if e.is_builder() {
        SendError::Invalid(text)
    } else {
        SendError::NoAnswer(text)
    }
}

/// The error and its causes, one line ("error sending request ...: connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The answer's body, at most [`MAX_ANSWER_BYTES`].
async fn read_answer(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What an answer means: Meta's error object (whatever the status), a 2xx with the message's
/// id, an unreadable 2xx (in doubt: Meta may have taken it), or another HTTP error.
fn interpret(
    status: reqwest::StatusCode,
    answer: Result<Vec<u8>, String>,
) -> Result<Accepted, SendError> {
    let json = answer
        .as_ref()
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok());
    if let Some(error) = json.as_ref().and_then(graph_error) {
        return Err(SendError::Api {
            http_status: status.as_u16(),
            error,
        });
    }
    if !status.is_success() {
        return Err(SendError::Http {
            status: status.as_u16(),
        });
    }
    let body = answer.map_err(|e| {
        SendError::NoAnswer(format!("HTTP {status} with an unreadable answer: {e}"))
    })?;
    json.as_ref().and_then(accepted).ok_or_else(|| {
        SendError::NoAnswer(format!(
            "HTTP {status} without a message id ({} bytes that are not Meta's answer)",
            body.len()
        ))
    })
}

fn graph_error(answer: &Value) -> Option<GraphError> {
    let error = answer.get("error")?;
    let text = |key: &str| {
        error
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(GraphError {
        code: error.get("code").and_then(int_value)?,
        subcode: error.get("error_subcode").and_then(int_value),
        error_type: text("type"),
        message: text("message"),
        details: error
            .pointer("/error_data/details")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        fbtrace_id: text("fbtrace_id"),
    })
}

fn accepted(answer: &Value) -> Option<Accepted> {
    let message = answer.pointer("/messages/0")?;
    Some(Accepted {
        wamid: id_string(message.get("id")).filter(|id| !id.is_empty())?,
        wa_id: id_string(answer.pointer("/contacts/0/wa_id")),
        message_status: message
            .get("message_status")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_codes_worth_a_retry_are_transient_and_the_rest_permanent() {
        for code in [1, 2, 4, 80007, 130429, 131000, 131016, 131056, 131057] {
            assert_eq!(classify_code(code), ErrorClass::Transient, "{code}");
        }
        for code in [
            0, 100, 190, 368, 130403, 131008, 131009, 131026, 131047, 131049, 131050, 131051,
            131053, 132000, 132001, 132012, 132015, 132016, 133010,
        ] {
            assert_eq!(classify_code(code), ErrorClass::Permanent, "{code}");
        }
    }

    #[test]
    fn the_connect_timeout_fires_before_the_call_timeout() {
        for secs in [1, 2, 10, 30, 120] {
            let timeout = Duration::from_secs(secs);
            assert!(connect_timeout(timeout) < timeout);
            assert!(connect_timeout(timeout) <= CONNECT_TIMEOUT_MAX);
        }
    }
}
