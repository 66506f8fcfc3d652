//! The thin gRPC adapter of `wamesh.analytics.v1.Analytics`: requests become domain questions
//! ([`crate::query`]), answers become protos.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use wamesh_proto::analytics::v1 as pb;

use crate::consumer::Progress;
use crate::error::AnalyticsError;
use crate::export;
use crate::query::{self, Percentiles, Range};
use crate::rollup::Grain;
use crate::store::peaks::UsagePeak;
use crate::store::{Selection, Store};

pub struct AnalyticsService {
    store: Arc<dyn Store>,
    progress: Arc<Progress>,
    interval_ms: i64,
    now_ms: fn() -> i64,
    /// The firing alerts and their changes, published by the alert evaluator.
    alerts: crate::alerts::Hub,
    health: crate::health::Health,
}

impl AnalyticsService {
    pub fn new(
        store: Arc<dyn Store>,
        progress: Arc<Progress>,
        interval_ms: i64,
        alerts: crate::alerts::Hub,
        health: crate::health::Health,
    ) -> Self {
        Self {
            store,
            progress,
            interval_ms,
            now_ms: crate::now_ms,
            alerts,
            health,
        }
    }

    fn range(&self, period: Option<&pb::Period>) -> Result<Range, AnalyticsError> {
        match period.and_then(|p| p.period.as_ref()) {
            Some(pb::period::Period::Named(name)) => {
                Ok(Range::named(name, (self.now_ms)(), self.interval_ms)?)
            }
            Some(pb::period::Period::Range(r)) => self.custom(Some(r)),
            None => Err(AnalyticsError::InvalidArgument(
                "period: required (24h, 7d, 30d or a range)".into(),
            )),
        }
    }

    fn custom(&self, range: Option<&pb::TimeRange>) -> Result<Range, AnalyticsError> {
        let r = range.ok_or_else(|| AnalyticsError::InvalidArgument("range: required".into()))?;
        Ok(Range::custom(
            r.from_unix_ms,
            r.to_unix_ms,
            self.interval_ms,
        )?)
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn time_range(r: Range) -> pb::TimeRange {
    pb::TimeRange {
        from_unix_ms: r.from_ms,
        to_unix_ms: r.to_ms,
    }
}

fn percentiles(p: Percentiles) -> pb::Percentiles {
    pb::Percentiles {
        count: p.count,
        p50_ms: p.p50,
        p90_ms: p.p90,
        p95_ms: p.p95,
        p99_ms: p.p99,
    }
}

fn codes(list: &[(i64, i64)]) -> Vec<pb::CodeCount> {
    list.iter()
        .map(|(code, count)| pb::CodeCount {
            code: *code,
            count: (*count).max(0) as u64,
        })
        .collect()
}

fn rate_limit_peak(p: &UsagePeak) -> pb::RateLimitPeak {
    pb::RateLimitPeak {
        scope: p.scope.clone(),
        key: p.key.clone(),
        usage_ratio: p.usage_ratio,
        at_unix_ms: p.at_ms,
    }
}

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

type ServiceStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl pb::analytics_server::Analytics for AnalyticsService {
    #[tracing::instrument(skip_all)]
    async fn get_overview(
        &self,
        request: Request<pb::GetOverviewRequest>,
    ) -> Result<Response<pb::Overview>, Status> {
        let request = request.into_inner();
        let range = self.range(request.period.as_ref())?;
        let o = query::overview(
            &*self.store,
            range,
            non_empty(request.business_phone_number_id),
        )
        .await
        .map_err(AnalyticsError::from)?;
        let m = &o.messages;
        Ok(Response::new(pb::Overview {
            range: Some(time_range(range)),
            messages_in: count(m.messages_in),
            messages_out: count(m.messages_out),
            delivered: count(m.delivered),
            read: count(m.read),
            failed: count(m.failed),
            delivery_rate: o.delivery_rate(),
            read_rate: o.read_rate(),
            error_rate: o.error_rate(),
            failures_by_code: codes(&o.failures_by_code),
            delivery_time: Some(percentiles(o.delivery_time)),
            response_time: Some(percentiles(o.response_time)),
            active_users: o.active_users,
            response_rate: o.response_rate(),
            user_response_rate: o.user_response_rate(),
            engagement_score: o.engagement_score(),
            sessions: count(o.conversations.sessions),
            average_session_ms: o.average_session_ms(),
            rate_limit_peaks: o.rate_limit_peaks.iter().map(rate_limit_peak).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Result<Response<pb::TimeSeries>, Status> {
        let request = request.into_inner();
        let grain = match pb::Granularity::try_from(request.granularity) {
            Ok(pb::Granularity::Day) => Grain::Day,
            Ok(pb::Granularity::Hour | pb::Granularity::Unspecified) => Grain::Hour,
            Err(_) => {
                return Err(AnalyticsError::InvalidArgument(format!(
                    "granularity: {} is not HOUR or DAY",
                    request.granularity
                ))
                .into());
            }
        };
        let range = self.custom(request.range.as_ref())?;
        let f = request.filters.unwrap_or_default();
        let selection = Selection {
            number: non_empty(f.business_phone_number_id),
            template: non_empty(f.template_name),
            pricing_category: non_empty(f.pricing_category),
            direction: non_empty(f.direction),
            message_type: non_empty(f.message_type),
            error_code: (f.error_code != 0).then_some(f.error_code),
            ..Selection::default()
        };
        let points = query::time_series(
            &*self.store,
            &request.metric,
            grain,
            self.interval_ms,
            range,
            selection,
        )
        .await
        .map_err(AnalyticsError::from)?
        .map_err(AnalyticsError::from)?;
        Ok(Response::new(pb::TimeSeries {
            metric: request.metric,
            granularity: match grain {
                Grain::Hour => pb::Granularity::Hour,
                Grain::Day => pb::Granularity::Day,
            } as i32,
            points: points
                .into_iter()
                .map(|(at, value)| pb::Point {
                    at_unix_ms: at,
                    value,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_template_performance(
        &self,
        request: Request<pb::GetTemplatePerformanceRequest>,
    ) -> Result<Response<pb::TemplatePerformance>, Status> {
        let request = request.into_inner();
        let range = self.range(request.period.as_ref())?;
        let list = query::templates(
            &*self.store,
            range,
            non_empty(request.business_phone_number_id),
            &request.sort_by,
            request.ascending,
            request.limit as usize,
        )
        .await
        .map_err(AnalyticsError::from)?
        .map_err(AnalyticsError::from)?;
        let templates = list
            .into_iter()
            .map(|t| pb::TemplateStats {
                delivery_rate: t.rate(t.counts.delivered),
                read_rate: t.rate(t.counts.read),
                reply_rate: t.rate(t.counts.replied),
                click_rate: t.rate(t.counts.clicked),
                sent: count(t.counts.messages_out),
                delivered: count(t.counts.delivered),
                read: count(t.counts.read),
                replied: count(t.counts.replied),
                clicked: count(t.counts.clicked),
                failed: count(t.counts.failed),
                failures_by_code: codes(&t.failures_by_code),
                median_time_to_delivered_ms: t.median_time_to_delivered_ms,
                template_name: t.template,
            })
            .collect();
        Ok(Response::new(pb::TemplatePerformance {
            range: Some(time_range(range)),
            templates,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_system_health(
        &self,
        _: Request<pb::GetSystemHealthRequest>,
    ) -> Result<Response<pb::SystemHealth>, Status> {
        let report = self.health.report((self.now_ms)()).await;
        Ok(Response::new(pb::SystemHealth {
            webhook_processing: Some(percentiles(report.webhook_processing)),
            errors: report
                .errors
                .into_iter()
                .map(|e| pb::ServiceErrors {
                    service: e.service,
                    total: e.total,
                    errors: e.errors,
                    error_rate: query::ratio(e.errors as i64, e.total as i64),
                })
                .collect(),
            queue_depth: report.queue_depth,
            oldest_queued_age_ms: report.oldest_queued_age_ms,
            rate_limit: report
                .rate_limit
                .into_iter()
                .map(|(scope, key, usage_ratio, warning)| pb::RateLimitUsage {
                    scope,
                    key,
                    usage_ratio,
                    warning,
                })
                .collect(),
            unavailable: report.unavailable,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_alerts(
        &self,
        request: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let request = request.into_inner();
        let limit = crate::alerts::list_limit(request.limit)?;
        let alerts = self
            .store
            .list_alerts(request.firing_only, limit)
            .await
            .map_err(AnalyticsError::from)?;
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: alerts.iter().map(pb::Alert::from).collect(),
        }))
    }

    type StreamAlertsStream = ServiceStream<pb::AlertChange>;

    #[tracing::instrument(skip_all)]
    async fn stream_alerts(
        &self,
        _: Request<pb::StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        // A subscriber that falls behind ends with ABORTED (call again for a fresh snapshot)
        // rather than silently miss a change.
        let changes = self.alerts.subscribe().map(|change| {
            change
                .map(pb::AlertChange::from)
                .map_err(|lagged| Status::aborted(lagged.to_string()))
        });
        Ok(Response::new(Box::pin(changes)))
    }

    type ExportStream = ServiceStream<pb::ExportChunk>;

    #[tracing::instrument(skip_all)]
    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let request = request.into_inner();
        let grain = match pb::Granularity::try_from(request.granularity) {
            Ok(pb::Granularity::Day) => Grain::Day,
            Ok(_) => Grain::Hour,
            Err(_) => {
                return Err(AnalyticsError::InvalidArgument(format!(
                    "granularity: {} is not HOUR or DAY",
                    request.granularity
                ))
                .into());
            }
        };
        let dataset = match pb::ExportDataset::try_from(request.dataset) {
            Ok(pb::ExportDataset::Rollups) => export::Dataset::Rollups(grain),
            Ok(pb::ExportDataset::Templates) => export::Dataset::Templates,
            Ok(pb::ExportDataset::Messages) => export::Dataset::Messages,
            _ => {
                return Err(AnalyticsError::InvalidArgument(
                    "dataset: one of ROLLUPS, TEMPLATES, MESSAGES".into(),
                )
                .into());
            }
        };
        let format = match pb::ExportFormat::try_from(request.format) {
            Ok(pb::ExportFormat::Csv) => export::Format::Csv,
            Ok(pb::ExportFormat::Json) => export::Format::Json,
            _ => {
                return Err(
                    AnalyticsError::InvalidArgument("format: one of CSV, JSON".into()).into(),
                );
            }
        };
        let range = self.custom(request.range.as_ref())?;
        let (chunks, stream) = tokio::sync::mpsc::channel(4);
        tokio::spawn(export::run(
            self.store.clone(),
            dataset,
            format,
            range,
            non_empty(request.business_phone_number_id),
            chunks,
        ));
        let stream = tokio_stream::wrappers::ReceiverStream::new(stream).map(|chunk| {
            chunk
                .map(|data| pb::ExportChunk { data })
                .map_err(|e| Status::from(AnalyticsError::from(e)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_consumer_status(
        &self,
        _: Request<pb::GetConsumerStatusRequest>,
    ) -> Result<Response<pb::ConsumerStatus>, Status> {
        Ok(Response::new(pb::ConsumerStatus {
            cursor: self.progress.cursor.load(Ordering::Relaxed),
            events_applied: self.progress.events_applied.load(Ordering::Relaxed),
            connected: self.progress.connected.load(Ordering::Relaxed),
        }))
    }
}
