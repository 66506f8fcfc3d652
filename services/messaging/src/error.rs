//! messaging's one error type, mapped to gRPC codes in one place. Clients get a clear, stable
//! message; database causes are logged here and never sent.
use std::sync::Arc;

use tonic::Status;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// The request is wrong; the message names the field or the problem.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but cannot be done in the present state (a closed window, a
    /// template that cannot be sent); the message says why.
    #[error("{0}")]
    FailedPrecondition(String),
    /// What the request would create exists (a template; an idempotency key used for another
    /// message).
    #[error("{0}")]
    AlreadyExists(String),
    /// A broken invariant of ours; the cause is logged, not sent.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
}

impl From<StoreError> for MessagingError {
    fn from(e: StoreError) -> Self {
        Self::Store(Arc::new(e))
    }
}

impl From<MessagingError> for Status {
    fn from(e: MessagingError) -> Self {
        match e {
            MessagingError::InvalidArgument(m) => Status::invalid_argument(m),
            MessagingError::NotFound(m) => Status::not_found(m),
            MessagingError::FailedPrecondition(m) => Status::failed_precondition(m),
            MessagingError::AlreadyExists(m) => Status::already_exists(m),
            MessagingError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                Status::internal("messaging failed this request; see messaging's logs")
            }
            MessagingError::Store(e) => match e.as_ref() {
                StoreError::Unavailable(cause) => {
                    tracing::warn!(error = %cause, "database unavailable");
                    Status::unavailable("the message store is unavailable; retry later")
                }
                other => {
                    tracing::error!(error = %other, "storage failure");
                    Status::internal("the message store failed; see messaging's logs")
                }
            },
        }
    }
}
