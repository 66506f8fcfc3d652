//! Meta's error answer: `{"error":{"message","type","code","error_data":{"messaging_product",
//! "details"},"fbtrace_id"}}`. Clients branch on `code` and `details`, so both are exact. The
//! same errors ride in `failed` statuses as `{code, title, message, error_data:{details}, href}`.
//! It is the crate's one error type: the `/_sim/*` endpoints answer bad input with it too (100).
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// One refusal, as Meta would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    pub http_status: StatusCode,
    pub code: i64,
    pub kind: &'static str,
    pub title: &'static str,
    pub details: String,
}

impl GraphError {
    /// 190: the access token is missing or not one of ours (HTTP 401).
    pub fn bad_token(details: &str) -> Self {
        Self {
            http_status: StatusCode::UNAUTHORIZED,
            code: 190,
            kind: "OAuthException",
            title: "Invalid OAuth access token - Cannot parse access token",
            details: details.to_owned(),
        }
    }

    /// 100: a parameter is malformed or breaks one of Meta's limits.
    pub fn invalid_parameter(details: impl Into<String>) -> Self {
        Self {
            http_status: StatusCode::BAD_REQUEST,
            code: 100,
            kind: "OAuthException",
            title: "Invalid parameter",
            details: details.into(),
        }
    }

    /// 131008: a required parameter is missing.
    pub fn missing_parameter(details: impl Into<String>) -> Self {
        Self {
            http_status: StatusCode::BAD_REQUEST,
            code: 131008,
            kind: "OAuthException",
            title: "Required parameter is missing",
            details: details.into(),
        }
    }

    /// 131051: a message type Meta does not send.
    pub fn unsupported_type(details: impl Into<String>) -> Self {
        Self {
            http_status: StatusCode::BAD_REQUEST,
            code: 131051,
            kind: "OAuthException",
            title: "Unsupported message type",
            details: details.into(),
        }
    }

    /// 130429: the business number's throughput is used up.
    pub fn throughput() -> Self {
        Self {
            http_status: StatusCode::BAD_REQUEST,
            code: 130429,
            kind: "OAuthException",
            title: "Rate limit hit",
            details: "Cloud API message throughput has been reached.".to_owned(),
        }
    }

    /// 131056: too many messages to the same user in a short time.
    pub fn pair_rate() -> Self {
        Self {
            http_status: StatusCode::BAD_REQUEST,
            code: 131056,
            kind: "OAuthException",
            title: "(Business Account, Consumer Account) pair rate limit hit",
            details: "Message failed to send because there were too many messages sent from this \
                      phone number to the same phone number in a short period of time."
                .to_owned(),
        }
    }

    /// 132001: no template of that name in that language, or one Meta would not send
    /// (rejected, pending).
    pub fn template_missing(details: impl Into<String>) -> Self {
        Self::refusal(
            132001,
            "Template name does not exist in the translation",
            details,
        )
    }

    /// 132000: the send's parameters do not fit the template's placeholders.
    pub fn template_parameters(details: impl Into<String>) -> Self {
        Self::refusal(
            132000,
            "Number of parameters does not match the expected number of params",
            details,
        )
    }

    /// 132015: the template is paused (its quality fell).
    pub fn template_paused(details: impl Into<String>) -> Self {
        Self::refusal(132015, "Template is Paused", details)
    }

    /// 132016: the template is disabled for good.
    pub fn template_disabled(details: impl Into<String>) -> Self {
        Self::refusal(132016, "Template is Disabled", details)
    }

    /// A transient failure (the configured error rate): by default 131000 with HTTP 500,
    /// Meta's "Something went wrong"; the sender is expected to retry.
    pub fn transient(code: i64, http_status: StatusCode) -> Self {
        let title = match code {
            1 => "API Unknown",
            2 => "API Service",
            131000 => "Something went wrong",
            131016 => "Service unavailable",
            131057 => "Account in maintenance mode",
            _ => "Simulated transient error",
        };
        Self {
            http_status,
            code,
            kind: "OAuthException",
            title,
            details: "The simulator failed this request on purpose (its error rate).".to_owned(),
        }
    }

    /// 131047: a free-form message outside the 24-hour window. Meta accepts the send and
    /// reports this in a `failed` status.
    pub fn outside_window() -> Self {
        Self::refusal(
            131047,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer \
             last replied to this number.",
        )
    }

    /// 131026: the recipient cannot receive the message; reported in a `failed` status.
    pub fn undeliverable() -> Self {
        Self::refusal(131026, "Message undeliverable", "Message Undeliverable.")
    }

    fn refusal(code: i64, title: &'static str, details: impl Into<String>) -> Self {
        Self {
            http_status: StatusCode::BAD_REQUEST,
            code,
            kind: "OAuthException",
            title,
            details: details.into(),
        }
    }

    /// The error as a `failed` status carries it: `{code, title, message, error_data, href}`.
    pub fn status_error(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": self.details},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        })
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {
            "message": format!("(#{}) {}", self.code, self.title),
            "type": self.kind,
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": format!("sim{:016x}", rand::random::<u64>()),
        }})
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        (self.http_status, Json(self.body())).into_response()
    }
}
