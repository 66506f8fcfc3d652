//! analytics' one error type, mapped once to gRPC codes. Clients get a stable message; the
//! cause of an internal failure is logged, not sent.
use tonic::Status;

use crate::query::QueryError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AnalyticsError> for Status {
    fn from(e: AnalyticsError) -> Self {
        match e {
            AnalyticsError::InvalidArgument(m) => Status::invalid_argument(m),
            AnalyticsError::Query(q) => Status::invalid_argument(q.to_string()),
            AnalyticsError::Store(StoreError::Unavailable(cause)) => {
                tracing::warn!(error = %cause, "analytics store unavailable");
                Status::unavailable("the analytics database is unavailable")
            }
            AnalyticsError::Store(cause) => {
                tracing::error!(error = %cause, "analytics store failed");
                Status::internal("analytics could not read its rollups")
            }
        }
    }
}
