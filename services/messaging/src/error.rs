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
