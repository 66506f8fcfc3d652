//! The operator API over analytics: each route checks its query ([`params`]), asks analytics
//! over gRPC, and answers JSON ([`views`]) or, for the export, a stream ([`export`]). Every
//! route sits behind the operator key check ([`crate::operators`]).
//!
//! - `GET /api/analytics/overview?period=24h|7d|30d` (or `from`/`to`), `number`
//! - `GET /api/analytics/timeseries?metric=..&granularity=hour|day&from=..&to=..` and the
//!   filters `number`, `template`, `pricing_category`, `direction`, `message_type`, `error_code`
//! - `GET /api/analytics/templates?period=..&sort=..&order=asc|desc&limit=..`
//! - `GET /api/analytics/alerts?firing=true&limit=..`
//! - `GET /api/analytics/export?dataset=rollups|templates|messages&format=csv|json&from=..&to=..`
//!
//! Answers: 400 for a bad parameter (named) or a question analytics refuses, 401 without a
//! valid key, 501 for what analytics does not implement yet, 502 when it fails, 503 when it is
//! not configured, unreachable or too slow (see [`ApiError::from_analytics`]).
pub mod export;
pub mod params;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::routing::get;
use axum::{Json, Router, middleware};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use wamesh_proto::analytics::v1::analytics_client::AnalyticsClient;
use wamesh_telemetry::GrpcTraceInterceptor;

use crate::AppState;
use crate::error::ApiError;
use crate::operators::{self, OperatorKeys};
use params::Params;

/// An analytics client that carries the caller's trace context.
pub type Analytics = AnalyticsClient<InterceptedService<Channel, GrpcTraceInterceptor>>;

/// How long a read (overview, time series, templates, alerts) may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of analytics at `url`, dialled lazily: the gateway starts while analytics is down
/// (its routes answer 503 until it is up).
pub fn connect(url: &str) -> anyhow::Result<Analytics> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .connect_lazy();
    Ok(
        AnalyticsClient::with_interceptor(channel, GrpcTraceInterceptor)
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// The operator routes, each behind the key check.
pub fn router(keys: Arc<OperatorKeys>) -> Router<AppState> {
    Router::new()
        .route("/api/analytics/overview", get(overview))
        .route("/api/analytics/timeseries", get(time_series))
        .route("/api/analytics/templates", get(templates))
        .route("/api/analytics/alerts", get(alerts))
        .route("/api/analytics/export", get(export::export))
        .route_layer(middleware::from_fn_with_state(keys, operators::require_key))
}

#[tracing::instrument(skip_all)]
async fn overview(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<views::Overview>, ApiError> {
    let request = params::overview(&Params::from_uri(&uri, params::OVERVIEW)?)?;
    let overview = ask("GetOverview", client(&state)?.get_overview(request)).await?;
    Ok(Json(overview.into()))
}

#[tracing::instrument(skip_all)]
async fn time_series(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<views::TimeSeries>, ApiError> {
    let request = params::time_series(&Params::from_uri(&uri, params::TIME_SERIES)?, now_ms())?;
    let series = ask("GetTimeSeries", client(&state)?.get_time_series(request)).await?;
    Ok(Json(series.into()))
}

#[tracing::instrument(skip_all)]
async fn templates(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<views::TemplatePerformance>, ApiError> {
    let request = params::templates(&Params::from_uri(&uri, params::TEMPLATES)?)?;
    let performance = ask(
        "GetTemplatePerformance",
        client(&state)?.get_template_performance(request),
    )
    .await?;
    Ok(Json(performance.into()))
}

#[tracing::instrument(skip_all)]
async fn alerts(State(state): State<AppState>, uri: Uri) -> Result<Json<views::Alerts>, ApiError> {
    let request = params::alerts(&Params::from_uri(&uri, params::ALERTS)?)?;
    let alerts = ask("ListAlerts", client(&state)?.list_alerts(request)).await?;
    Ok(Json(alerts.into()))
}

/// analytics' client, or 503 when the gateway has none.
fn client(state: &AppState) -> Result<Analytics, ApiError> {
    state.analytics.clone().ok_or(ApiError::NotConfigured)
}

/// One call to analytics, within [`ASK_TIMEOUT`], its refusal mapped to the operator API's.
#[tracing::instrument(skip(call))]
async fn ask<T>(
    rpc: &'static str,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(ApiError::from_analytics(rpc, &status)),
        Err(_) => {
            tracing::warn!(rpc, timeout = ?ASK_TIMEOUT, "analytics did not answer in time");
            Err(ApiError::Unavailable("timed out"))
        }
    }
}

/// Unix ms now: where a named period ends for routes that send analytics a range.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
