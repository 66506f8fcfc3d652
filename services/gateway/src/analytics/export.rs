//! `GET /api/analytics/export`: the chunks of analytics' `Export` stream, passed into the HTTP
//! body as they come (never the whole export in memory; HTTP/2 flow control on the gRPC side
//! and TCP on the HTTP side hold analytics back when the client reads slowly).
//!
//! The first chunk is awaited before answering, so a refusal analytics only finds once it has
//! started (a bad range, UNIMPLEMENTED) is still a proper HTTP error. After the 200 has gone
//! out, a broken stream can only be told by cutting the body short: the connection is closed
//! without the end of the chunked body, and the cause is logged.
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use tonic::Streaming;
use wamesh_proto::analytics::v1::ExportChunk;

use super::params::{self, Dataset, Format, Params};
use super::{ask, client, now_ms};
use crate::AppState;
use crate::error::ApiError;
use crate::rfc3339;

/// How long analytics may take to produce a chunk (the first one included) before the export
/// is given up.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

#[tracing::instrument(skip_all)]
pub async fn export(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let export = params::Export::parse(&Params::from_uri(&uri, params::EXPORT)?, now_ms())?;
    let mut chunks = ask("Export", client(&state)?.export(export.request())).await?;
    let first = match tokio::time::timeout(CHUNK_TIMEOUT, next_chunk(&mut chunks)).await {
        Err(_) => return Err(ApiError::Unavailable("timed out")),
        Ok(first) => first.map_err(|status| ApiError::from_analytics("Export", &status))?,
    };
    let body = Body::from_stream(futures::stream::unfold(
        Some(Progress {
            chunks,
            first,
            bytes: 0,
            started: Instant::now(),
        }),
        step,
    ));
    let (content_type, extension) = match export.format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::JsonLines => ("application/x-ndjson", "ndjson"),
    };
    let filename = format!(
        "wamesh-{}-{}-{}.{extension}",
        dataset_name(export.dataset),
        compact_time(export.range.from_unix_ms),
        compact_time(export.range.to_unix_ms),
    );
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .map_err(|_| ApiError::Upstream)?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_DISPOSITION, disposition),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    Ok((headers, body).into_response())
}

/// The stream being passed on.
struct Progress {
    chunks: Streaming<ExportChunk>,
    /// The chunk read before answering, sent first.
    first: Option<Bytes>,
    bytes: u64,
    started: Instant,
}

/// The next piece of the body, or its end.
async fn step(progress: Option<Progress>) -> Option<(std::io::Result<Bytes>, Option<Progress>)> {
    let mut p = progress?;
    let next = match p.first.take() {
        Some(first) => Ok(Some(first)),
        None => match tokio::time::timeout(CHUNK_TIMEOUT, next_chunk(&mut p.chunks)).await {
            Ok(next) => next.map_err(|status| format!("{:?}: {}", status.code(), status.message())),
            Err(_) => Err(format!("no chunk within {CHUNK_TIMEOUT:?}")),
        },
    };
    match next {
        Ok(Some(data)) => {
            p.bytes += data.len() as u64;
            Some((Ok(data), Some(p)))
        }
        Ok(None) => {
            tracing::info!(
                bytes = p.bytes,
                seconds = p.started.elapsed().as_secs_f64(),
                "export sent"
            );
            None
        }
        Err(cause) => {
            tracing::warn!(
                bytes = p.bytes,
                cause,
                "export broken off; the body is cut short"
            );
            Some((Err(std::io::Error::other("the export broke off")), None))
        }
    }
}

/// The next non-empty chunk's bytes; `None` at the end.
async fn next_chunk(chunks: &mut Streaming<ExportChunk>) -> Result<Option<Bytes>, tonic::Status> {
    while let Some(chunk) = chunks.message().await? {
        if !chunk.data.is_empty() {
            return Ok(Some(Bytes::from(chunk.data)));
        }
    }
    Ok(None)
}

fn dataset_name(dataset: Dataset) -> &'static str {
    match dataset {
        Dataset::Rollups => "rollups",
        Dataset::Templates => "templates",
        Dataset::Messages => "messages",
    }
}

/// `20261130T090000Z`: a time as a file name may hold it.
fn compact_time(unix_ms: i64) -> String {
    let full = rfc3339::format(unix_ms);
    let seconds = full.get(..19).unwrap_or(&full);
    let mut compact: String = seconds
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    compact.push('Z');
    compact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_hold_compact_times() {
        assert_eq!(
            compact_time(20_787 * 86_400_000 + 9 * 3_600_000),
            "20261130T090000Z"
        );
    }
}
