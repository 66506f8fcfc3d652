//! The gateway's one error type, mapped to HTTP once. Every error answers
//! `{"error": "<what is wrong>"}`; Meta retries anything but 200, so 5xx means "try again" and
//! 4xx means "this will never be accepted".
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wamesh_whatsapp::{PayloadError, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("no app secret is configured, so no webhook can be verified (set WAMESH_APP_SECRET)")]
    NoAppSecret,
    #[error("the body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Payload(#[from] PayloadError),
    #[error("the verify handshake needs hub.mode=subscribe, hub.verify_token and hub.challenge")]
    HandshakeIncomplete,
    #[error("the verify token does not match")]
    HandshakeRefused,
    #[error("messaging could not store the webhook ({0}); retry later")]
    Unavailable(&'static str),
    #[error("messaging failed to store the webhook; see its logs")]
    Failed,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Signature(SignatureError::Missing) => StatusCode::UNAUTHORIZED,
            Self::Signature(_) | Self::NoAppSecret | Self::HandshakeRefused => {
                StatusCode::FORBIDDEN
            }
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Payload(_) | Self::HandshakeIncomplete => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Signature(SignatureError::Missing) => "unsigned",
            Self::Signature(_) | Self::NoAppSecret => "bad_signature",
            Self::TooLarge(_) => "too_large",
            Self::Payload(_) => "malformed",
            Self::HandshakeIncomplete | Self::HandshakeRefused => "handshake_refused",
            Self::Unavailable(_) => "unavailable",
            Self::Failed => "failed",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}
