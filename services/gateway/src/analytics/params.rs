//! The operator API's query parameters, checked before analytics is asked, each turned into
//! a typed value and the routes' requests assembled from them. A refusal names the parameter.
//!
//! Rules every route shares: a parameter the route does not take is refused (a typo must not
//! fall back to a default unnoticed), so is one given twice; an empty value counts as absent.
//! What only analytics can judge (a metric's or a sort column's name) is passed on, and its
//! refusal comes back as a 400 with analytics' own message.
use axum::extract::Query;
use axum::http::Uri;
use wamesh_proto::analytics::v1 as pb;

use crate::error::ApiError;
use crate::rfc3339;

/// The longest free-text value (template name, metric...) passed on.
const MAX_TEXT: usize = 256;
/// A phone number id is all digits, and short.
const MAX_NUMBER_ID: usize = 32;

/// The parameters of one request.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Reads the query of `uri`, refusing a parameter not in `known` or one given twice.
    pub fn from_uri(uri: &Uri, known: &[&str]) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::parameter("query", e.body_text()))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::parameter(
                    shorten(name),
                    format!(
                        "not a parameter of this route (it takes {})",
                        known.join(", ")
                    ),
                ));
            }
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::parameter(name.clone(), "given more than once"));
            }
        }
        Ok(Self { pairs })
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, v)| n == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// A value echoed in a message, cut short.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

/// A period ending now, as analytics names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedPeriod {
    Day,
    Week,
    Month,
}

impl NamedPeriod {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "24h" => Some(Self::Day),
            "7d" => Some(Self::Week),
            "30d" => Some(Self::Month),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
        }
    }

    pub fn length_ms(self) -> i64 {
        let days = match self {
            Self::Day => 1,
            Self::Week => 7,
            Self::Month => 30,
        };
        days * 86_400_000
    }
}

/// What time a question covers: `period=24h|7d|30d` (the default is 24h), or `from` and `to`
/// (each Unix ms or RFC 3339), `from` before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Named(NamedPeriod),
    Range { from_ms: i64, to_ms: i64 },
}

impl Window {
    pub fn parse(params: &Params) -> Result<Self, ApiError> {
        let (period, from, to) = (params.get("period"), params.get("from"), params.get("to"));
        match (period, from.or(to)) {
            (Some(_), Some(_)) => Err(ApiError::parameter(
                "period",
                "give either period or from and to, not both",
            )),
            (Some(name), None) => NamedPeriod::parse(name).map(Self::Named).ok_or_else(|| {
                ApiError::parameter(
                    "period",
                    format!("{:?} is not one of 24h, 7d, 30d", shorten(name)),
                )
            }),
            (None, None) => Ok(Self::Named(NamedPeriod::Day)),
            (None, Some(_)) => {
                let (from_ms, to_ms) = (time("from", from)?, time("to", to)?);
                if from_ms >= to_ms {
                    return Err(ApiError::parameter(
                        "from",
                        format!("must be before to ({from_ms} >= {to_ms})"),
                    ));
                }
                Ok(Self::Range { from_ms, to_ms })
            }
        }
    }

    /// As analytics takes a period (a named one is resolved by analytics' clock).
    pub fn period(self) -> pb::Period {
        pb::Period {
            period: Some(match self {
                Self::Named(named) => pb::period::Period::Named(named.name().to_owned()),
                Self::Range { .. } => pb::period::Period::Range(self.range(0)),
            }),
        }
    }

    /// As a range; a named period ends at `now_ms`.
    pub fn range(self, now_ms: i64) -> pb::TimeRange {
        let (from_unix_ms, to_unix_ms) = match self {
            Self::Named(named) => (now_ms - named.length_ms(), now_ms),
            Self::Range { from_ms, to_ms } => (from_ms, to_ms),
        };
        pb::TimeRange {
            from_unix_ms,
            to_unix_ms,
        }
    }
}

/// A time parameter: Unix ms (digits only) or RFC 3339.
fn time(name: &'static str, value: Option<&str>) -> Result<i64, ApiError> {
    let other = if name == "from" { "to" } else { "from" };
    let value = value.ok_or_else(|| {
        ApiError::parameter(name, format!("required with {other} (Unix ms or RFC 3339)"))
    })?;
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map_err(|_| ApiError::parameter(name, "too large for Unix milliseconds"));
    }
    rfc3339::parse(value).ok_or_else(|| {
        ApiError::parameter(
            name,
            format!(
                "{:?} is neither Unix milliseconds nor an RFC 3339 time like 2026-11-30T09:00:00Z (write + as %2B)",
                shorten(value)
            ),
        )
    })
}

/// `number`: a business phone number id, or empty for all.
fn number(params: &Params) -> Result<String, ApiError> {
    let Some(id) = params.get("number") else {
        return Ok(String::new());
    };
    if id.len() > MAX_NUMBER_ID || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::parameter(
            "number",
            format!("{:?} is not a phone number id (digits)", shorten(id)),
        ));
    }
    Ok(id.to_owned())
}

/// Free text passed on as is (empty when absent).
fn text(params: &Params, name: &'static str) -> Result<String, ApiError> {
    let value = params.get(name).unwrap_or_default();
    if value.chars().count() > MAX_TEXT {
        return Err(ApiError::parameter(
            name,
            format!("longer than {MAX_TEXT} characters"),
        ));
    }
    Ok(value.to_owned())
}

/// A whole number (`None` when absent).
fn whole<T: std::str::FromStr>(params: &Params, name: &'static str) -> Result<Option<T>, ApiError> {
    params
        .get(name)
        .map(|value| {
            value.parse().map_err(|_| {
                ApiError::parameter(
                    name,
                    format!("{:?} is not a whole number in range", shorten(value)),
                )
            })
        })
        .transpose()
}

/// One of a few words, or `default` when absent.
fn choice<T: Copy>(
    params: &Params,
    name: &'static str,
    choices: &[(&str, T)],
    default: T,
) -> Result<T, ApiError> {
    let Some(value) = params.get(name) else {
        return Ok(default);
    };
    choices
        .iter()
        .find(|(word, _)| *word == value)
        .map(|(_, choice)| *choice)
        .ok_or_else(|| {
            let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
            ApiError::parameter(
                name,
                format!("{:?} is not one of {}", shorten(value), words.join(", ")),
            )
        })
}

fn granularity(params: &Params) -> Result<pb::Granularity, ApiError> {
    choice(
        params,
        "granularity",
        &[
            ("hour", pb::Granularity::Hour),
            ("day", pb::Granularity::Day),
        ],
        pb::Granularity::Hour,
    )
}

/// `GET /api/analytics/overview`.
pub const OVERVIEW: &[&str] = &["period", "from", "to", "number"];

pub fn overview(params: &Params) -> Result<pb::GetOverviewRequest, ApiError> {
    Ok(pb::GetOverviewRequest {
        period: Some(Window::parse(params)?.period()),
        business_phone_number_id: number(params)?,
    })
}

/// `GET /api/analytics/timeseries`.
pub const TIME_SERIES: &[&str] = &[
    "metric",
    "granularity",
    "period",
    "from",
    "to",
    "number",
    "template",
    "pricing_category",
    "direction",
    "message_type",
    "error_code",
];

pub fn time_series(params: &Params, now_ms: i64) -> Result<pb::GetTimeSeriesRequest, ApiError> {
    let metric = text(params, "metric")?;
    if metric.is_empty() {
        return Err(ApiError::parameter(
            "metric",
            "required (messages_in, messages_out, delivered, read, failed, delivery_rate, ...)",
        ));
    }
    let direction = choice(
        params,
        "direction",
        &[("inbound", "inbound"), ("outbound", "outbound")],
        "",
    )?;
    Ok(pb::GetTimeSeriesRequest {
        metric,
        granularity: granularity(params)? as i32,
        range: Some(Window::parse(params)?.range(now_ms)),
        filters: Some(pb::Filters {
            business_phone_number_id: number(params)?,
            template_name: text(params, "template")?,
            pricing_category: text(params, "pricing_category")?,
            direction: direction.to_owned(),
            message_type: text(params, "message_type")?,
            error_code: whole(params, "error_code")?.unwrap_or(0),
        }),
    })
}

/// `GET /api/analytics/templates`.
pub const TEMPLATES: &[&str] = &["period", "from", "to", "number", "sort", "order", "limit"];

pub fn templates(params: &Params) -> Result<pb::GetTemplatePerformanceRequest, ApiError> {
    Ok(pb::GetTemplatePerformanceRequest {
        period: Some(Window::parse(params)?.period()),
        business_phone_number_id: number(params)?,
        sort_by: text(params, "sort")?,
        ascending: choice(params, "order", &[("asc", true), ("desc", false)], false)?,
        limit: whole(params, "limit")?.unwrap_or(0),
    })
}

/// `GET /api/analytics/alerts`.
pub const ALERTS: &[&str] = &["firing", "limit"];

pub fn alerts(params: &Params) -> Result<pb::ListAlertsRequest, ApiError> {
    Ok(pb::ListAlertsRequest {
        firing_only: choice(params, "firing", &[("true", true), ("false", false)], false)?,
        limit: whole(params, "limit")?.unwrap_or(0),
    })
}

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    Rollups,
    Templates,
    Messages,
}

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

/// `GET /api/analytics/export`.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub dataset: Dataset,
    pub format: Format,
    pub range: pb::TimeRange,
    pub granularity: pb::Granularity,
    pub number: String,
}

pub const EXPORT: &[&str] = &[
    "dataset",
    "format",
    "period",
    "from",
    "to",
    "granularity",
    "number",
];

impl Export {
    pub fn parse(params: &Params, now_ms: i64) -> Result<Self, ApiError> {
        if params.get("dataset").is_none() {
            return Err(ApiError::parameter(
                "dataset",
                "required: rollups, templates or messages",
            ));
        }
        let datasets = [
            ("rollups", Dataset::Rollups),
            ("templates", Dataset::Templates),
            ("messages", Dataset::Messages),
        ];
        let formats = [("csv", Format::Csv), ("json", Format::JsonLines)];
        Ok(Self {
            dataset: choice(params, "dataset", &datasets, Dataset::Rollups)?,
            format: choice(params, "format", &formats, Format::Csv)?,
            range: Window::parse(params)?.range(now_ms),
            granularity: granularity(params)?,
            number: number(params)?,
        })
    }

    pub fn request(&self) -> pb::ExportRequest {
        pb::ExportRequest {
            dataset: match self.dataset {
                Dataset::Rollups => pb::ExportDataset::Rollups,
                Dataset::Templates => pb::ExportDataset::Templates,
                Dataset::Messages => pb::ExportDataset::Messages,
            } as i32,
            format: match self.format {
                Format::Csv => pb::ExportFormat::Csv,
                Format::JsonLines => pb::ExportFormat::Json,
            } as i32,
            range: Some(self.range),
            granularity: self.granularity as i32,
            business_phone_number_id: self.number.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str, known: &[&str]) -> Result<Params, ApiError> {
        let uri: Uri = format!("/x?{query}").parse().unwrap();
        Params::from_uri(&uri, known)
    }

    /// The parameter a refusal names.
    fn refused<T: std::fmt::Debug>(result: Result<T, ApiError>) -> String {
        match result {
            Err(ApiError::InvalidParameter { parameter, .. }) => parameter,
            other => panic!("expected a refused parameter, got {other:?}"),
        }
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        assert_eq!(refused(params("perod=7d", OVERVIEW)), "perod");
        assert_eq!(refused(params("period=7d&period=30d", OVERVIEW)), "period");
        let p = params("period=&number=", OVERVIEW).unwrap();
        assert_eq!(p.get("period"), None, "empty counts as absent");
    }

    #[test]
    fn windows_are_named_or_ranges_in_ms_or_rfc3339() {
        let window = |q: &str| Window::parse(&params(q, OVERVIEW).unwrap());
        assert_eq!(window("").unwrap(), Window::Named(NamedPeriod::Day));
        assert_eq!(
            window("period=30d").unwrap(),
            Window::Named(NamedPeriod::Month)
        );
        assert_eq!(
            window("from=1000&to=2026-11-30T00:00:00%2B01:00").unwrap(),
            Window::Range {
                from_ms: 1000,
                to_ms: 1_795_993_200_000
            }
        );
        assert_eq!(refused(window("period=1y")), "period");
        assert_eq!(refused(window("period=7d&from=1")), "period");
        assert_eq!(refused(window("from=2000&to=1000")), "from");
        assert_eq!(refused(window("from=1000&to=1000")), "from");
        assert_eq!(refused(window("from=1000")), "to");
        assert_eq!(refused(window("to=1000")), "from");
        assert_eq!(refused(window("from=yesterday&to=1000")), "from");
        assert_eq!(refused(window("from=1&to=99999999999999999999")), "to");
    }

    #[test]
    fn named_windows_become_ranges_ending_now() {
        let range = Window::Named(NamedPeriod::Week).range(10 * 86_400_000);
        assert_eq!(
            (range.from_unix_ms, range.to_unix_ms),
            (3 * 86_400_000, 10 * 86_400_000)
        );
    }

    #[test]
    fn each_route_names_its_bad_parameter() {
        let p = |q: &str, known| params(q, known).unwrap();
        assert_eq!(refused(overview(&p("number=+1555", OVERVIEW))), "number");
        assert_eq!(refused(time_series(&p("", TIME_SERIES), 0)), "metric");
        assert_eq!(
            refused(time_series(
                &p("metric=read&granularity=week", TIME_SERIES),
                0
            )),
            "granularity"
        );
        assert_eq!(
            refused(time_series(&p("metric=read&direction=up", TIME_SERIES), 0)),
            "direction"
        );
        assert_eq!(
            refused(time_series(&p("metric=read&error_code=x", TIME_SERIES), 0)),
            "error_code"
        );
        assert_eq!(refused(templates(&p("limit=ten", TEMPLATES))), "limit");
        assert_eq!(refused(templates(&p("limit=-1", TEMPLATES))), "limit");
        assert_eq!(refused(templates(&p("order=up", TEMPLATES))), "order");
        assert_eq!(refused(alerts(&p("firing=yes", ALERTS))), "firing");
        assert_eq!(refused(Export::parse(&p("", EXPORT), 0)), "dataset");
        assert_eq!(
            refused(Export::parse(&p("dataset=rollups&format=xml", EXPORT), 0)),
            "format"
        );
        assert_eq!(
            refused(Export::parse(&p("dataset=users", EXPORT), 0)),
            "dataset"
        );
    }

    #[test]
    fn good_parameters_become_the_request() {
        let p = params(
            "metric=delivered&granularity=day&from=0&to=86400000&number=106&template=promo&direction=outbound&error_code=131026",
            TIME_SERIES,
        )
        .unwrap();
        let request = time_series(&p, 0).unwrap();
        assert_eq!(request.granularity, pb::Granularity::Day as i32);
        assert_eq!(request.range.unwrap().to_unix_ms, 86_400_000);
        let filters = request.filters.unwrap();
        assert_eq!(filters.business_phone_number_id, "106");
        assert_eq!(filters.template_name, "promo");
        assert_eq!(filters.direction, "outbound");
        assert_eq!(filters.error_code, 131_026);

        let p = params("sort=name&order=asc&limit=5&period=7d", TEMPLATES).unwrap();
        let request = templates(&p).unwrap();
        assert_eq!(
            (request.sort_by.as_str(), request.ascending, request.limit),
            ("name", true, 5)
        );

        let p = params("dataset=messages&format=json&period=24h", EXPORT).unwrap();
        let export = Export::parse(&p, 86_400_000).unwrap();
        assert_eq!(
            (export.dataset, export.format),
            (Dataset::Messages, Format::JsonLines)
        );
        assert_eq!(export.range.from_unix_ms, 0);
    }
}
