//! Meta's error answer: `{"error":{"message","type","code","error_data":{"messaging_product",
//! "details"},"fbtrace_id"}}`. Clients branch on `code` and `details`, so both are exact.
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
