//! The gateway's errors, each mapped to HTTP once.
//!
//! - [`GatewayError`]: the webhook routes. Every error answers `{"error": "<what is wrong>"}`;
//!   Meta retries anything but 200, so 5xx means "try again" and 4xx means "this will never be
//!   accepted".
//! - [`ApiError`]: the operator API. `{"error": {"code", "message"}}`, and analytics' gRPC codes
//!   mapped in [`ApiError::from_analytics`].
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

/// An error of the operator API (`/api/analytics/...`). Unlike a webhook's refusal (read by
/// Meta, which only looks at the status), it answers a stable, machine-readable code beside the
/// message: `{"error": {"code": "...", "message": "...", "parameter": "..."}}`, `parameter`
/// only for a bad query parameter. A 401 carries `WWW-Authenticate: Bearer`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "a valid operator API key is required: `Authorization: Bearer <key>` or `X-API-Key: <key>`"
    )]
    Unauthenticated,
    #[error(
        "no operator API key is configured, so every operator request is refused (set WAMESH_OPERATOR_API_KEYS)"
    )]
    NoApiKeys,
    /// A query parameter that is unknown, repeated or malformed; refused before analytics is asked.
    #[error("{parameter}: {reason}")]
    InvalidParameter { parameter: String, reason: String },
    /// analytics refused the question; its message names what is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("analytics is not configured on this gateway (set WAMESH_ANALYTICS_URL)")]
    NotConfigured,
    #[error("analytics is unavailable ({0}); retry later")]
    Unavailable(&'static str),
    /// analytics answered UNIMPLEMENTED for this RPC (it is still being built).
    #[error("analytics does not implement {0} yet")]
    NotImplemented(&'static str),
    #[error("analytics failed to answer; see the gateway's logs")]
    Upstream,
}

impl ApiError {
    /// A bad query parameter, named.
    pub fn parameter(parameter: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            parameter: parameter.into(),
            reason: reason.into(),
        }
    }

    /// analytics' gRPC status as the operator API answers it; the one place its codes are
    /// mapped. `rpc` names the call, for UNIMPLEMENTED and for the logs.
    pub fn from_analytics(rpc: &'static str, status: &tonic::Status) -> Self {
        match status.code() {
            tonic::Code::InvalidArgument => Self::InvalidArgument(status.message().to_owned()),
            tonic::Code::Unimplemented => Self::NotImplemented(rpc),
            tonic::Code::Unavailable => {
                tracing::warn!(rpc, message = status.message(), "analytics is unavailable");
                Self::Unavailable("unreachable")
            }
            tonic::Code::DeadlineExceeded => {
                tracing::warn!(rpc, message = status.message(), "analytics timed out");
                Self::Unavailable("timed out")
            }
            code => {
                tracing::error!(rpc, ?code, message = status.message(), "analytics failed");
                Self::Upstream
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated | Self::NoApiKeys => StatusCode::UNAUTHORIZED,
            Self::InvalidParameter { .. } | Self::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Self::NotConfigured | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated | Self::NoApiKeys => "unauthenticated",
            Self::InvalidParameter { .. } | Self::InvalidArgument(_) => "invalid_argument",
            Self::NotConfigured => "not_configured",
            Self::Unavailable(_) => "unavailable",
            Self::NotImplemented(_) => "not_implemented",
            Self::Upstream => "bad_gateway",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let Self::InvalidParameter { parameter, .. } = &self {
            error["parameter"] = parameter.as_str().into();
        }
        let body = Json(serde_json::json!({ "error": error }));
        if self.status() == StatusCode::UNAUTHORIZED {
            let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer")];
            (self.status(), challenge, body).into_response()
        } else {
            (self.status(), body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    #[test]
    fn analytics_codes_map_once_to_http() {
        let http =
            |code| ApiError::from_analytics("ListAlerts", &Status::new(code, "why")).status();
        assert_eq!(http(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            http(Code::DeadlineExceeded),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http(Code::Unimplemented), StatusCode::NOT_IMPLEMENTED);
        for other in [
            Code::Internal,
            Code::Unknown,
            Code::NotFound,
            Code::DataLoss,
        ] {
            assert_eq!(http(other), StatusCode::BAD_GATEWAY, "{other:?}");
        }
    }

    #[test]
    fn messages_are_analytics_own_only_for_invalid_arguments() {
        let status = Status::invalid_argument("metric: \"x\" is not a metric");
        let refused = ApiError::from_analytics("GetTimeSeries", &status);
        assert_eq!(refused.to_string(), "metric: \"x\" is not a metric");
        let failed = ApiError::from_analytics("GetOverview", &Status::internal("pool timed out"));
        assert!(
            !failed.to_string().contains("pool"),
            "the cause is logged, not sent"
        );
        let missing = ApiError::from_analytics("ListAlerts", &Status::unimplemented("later"));
        assert_eq!(
            missing.to_string(),
            "analytics does not implement ListAlerts yet"
        );
        assert_eq!(missing.code(), "not_implemented");
    }
}
