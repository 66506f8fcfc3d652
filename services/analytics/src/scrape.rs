//! Error rates per service, read from the services' own Prometheus `/metrics`: every wamesh
//! server counts its requests labelled by `service` (`libs/runtime/src/metrics/`):
//!
//! - `http_server_requests_total{service, method, route, status}` (HTTP, e.g. the gateway);
//! - `rpc_server_requests_total{service, rpc_service, rpc_method, code}` (gRPC, e.g.
//!   messaging, ratelimit, analytics).
//!
//! [`Scraper::run`] reads every URL each interval (15 s by default) and keeps, per URL and
//! service, the cumulative totals it read with the time it read them, for the live window.
//! [`Scrapes::errors`] turns them into each service's requests and errors in the window: the
//! increase from the oldest sample inside it to the newest, a decrease (the service restarted)
//! counting from zero, as Prometheus' `increase` does.
//!
//! A server error is what the service failed at, not what the client got wrong: HTTP 5xx, and
//! the gRPC codes [`SERVER_ERROR_CODES`]. `INVALID_ARGUMENT`, `NOT_FOUND`,
//! `FAILED_PRECONDITION`, `UNAUTHENTICATED` and the like are client mistakes, counted in the
//! total but not as errors.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use wamesh_runtime::Shutdown;

use crate::health::Errors;

/// How often the URLs are read by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// How long one read of a `/metrics` may take.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The HTTP request counter of `wamesh_runtime::metrics::HttpMetricsLayer`.
const HTTP_REQUESTS: &str = "http_server_requests_total";
/// The gRPC call counter of `wamesh_runtime::metrics::GrpcMetricsLayer`.
const RPC_REQUESTS: &str = "rpc_server_requests_total";

/// The gRPC codes that are the service's failure rather than the client's mistake.
pub const SERVER_ERROR_CODES: [&str; 8] = [
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNIMPLEMENTED",
];

/// One service's cumulative counts as read at `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub total: u64,
    pub errors: u64,
}

/// What the scrapes hold: samples per (service, URL), and why each URL's last read failed.
#[derive(Debug, Default)]
struct State {
    /// Keyed by service then URL, so replicas of a service behind several URLs add up and one
    /// URL failing does not look like a reset of the others.
    samples: BTreeMap<(String, String), VecDeque<Sample>>,
    failures: BTreeMap<String, String>,
}

/// A handle on what the scraper read, for [`crate::health`].
#[derive(Debug, Clone, Default)]
pub struct Scrapes {
    state: Arc<Mutex<State>>,
    window_ms: i64,
}

impl Scrapes {
    pub fn new(window_ms: i64) -> Self {
        Self {
            state: Arc::default(),
            window_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every change is one insert.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records what `url` answered at `at_ms`: a sample per service it counts, or why not.
    pub fn record(&self, url: &str, at_ms: i64, read: Result<BTreeMap<String, Counts>, String>) {
        let cutoff = at_ms - self.window_ms;
        let mut state = self.lock();
        match read {
            Ok(services) => {
                state.failures.remove(url);
                for (service, counts) in services {
                    let samples = state.samples.entry((service, url.to_owned())).or_default();
                    samples.push_back(Sample {
                        at_ms,
                        total: counts.total,
                        errors: counts.errors,
                    });
                }
            }
            Err(why) => {
                state.failures.insert(url.to_owned(), why);
            }
        }
        for samples in state.samples.values_mut() {
            while samples.front().is_some_and(|s| s.at_ms < cutoff) {
                samples.pop_front();
            }
        }
        state.samples.retain(|_, samples| !samples.is_empty());
    }

    /// Each service's requests and errors in the window ending at `now_ms`, by service name;
    /// and `metrics <url>: <why>` for each URL whose last read failed.
    pub fn errors(&self, now_ms: i64) -> (Vec<Errors>, Vec<String>) {
        let state = self.lock();
        let mut by_service: BTreeMap<&str, Errors> = BTreeMap::new();
        for ((service, _), samples) in &state.samples {
            let inside: Vec<Sample> = samples
                .iter()
                .filter(|s| s.at_ms >= now_ms - self.window_ms && s.at_ms <= now_ms)
                .copied()
                .collect();
            let entry = by_service.entry(service).or_insert_with(|| Errors {
                service: service.clone(),
                total: 0,
                errors: 0,
            });
            entry.total += increase(inside.iter().map(|s| s.total));
            entry.errors += increase(inside.iter().map(|s| s.errors));
        }
        let unavailable = state
            .failures
            .iter()
            .map(|(url, why)| format!("metrics {url}: {why}"))
            .collect();
        (by_service.into_values().collect(), unavailable)
    }
}

/// How much a counter grew over `values` (oldest first): a decrease is a reset, after which
/// the counter counted from zero.
pub fn increase(values: impl IntoIterator<Item = u64>) -> u64 {
    let mut values = values.into_iter();
    let Some(mut previous) = values.next() else {
        return 0;
    };
    let mut grown = 0;
    for value in values {
        grown += if value >= previous {
            value - previous
        } else {
            value
        };
        previous = value;
    }
    grown
}

/// One service's cumulative requests and server errors in one read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub errors: u64,
}

/// One sample line of the text exposition: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Line<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The sample lines of a Prometheus text exposition; comments, blank lines and whatever does
/// not parse are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        parse_line(line)
    })
}

fn parse_line(line: &str) -> Option<Line<'_>> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim();
            let (value, after) = quoted(rest[eq + 1..].trim_start())?;
            labels.push((key, value));
            rest = after.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Line {
        name,
        labels,
        value,
    })
}

/// A `"..."` label value with `\\`, `\"` and `\n` escapes, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let mut value = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// Each service's cumulative requests and server errors in a text exposition.
pub fn counts(text: &str) -> BTreeMap<String, Counts> {
    let mut services: BTreeMap<String, Counts> = BTreeMap::new();
    for line in parse(text) {
        let failed = match line.name {
            HTTP_REQUESTS => line.label("status").is_some_and(|s| s.starts_with('5')),
            RPC_REQUESTS => line
                .label("code")
                .is_some_and(|c| SERVER_ERROR_CODES.contains(&c)),
            _ => continue,
        };
        let Some(service) = line.label("service") else {
            continue;
        };
        if !line.value.is_finite() || line.value < 0.0 {
            continue;
        }
        let value = line.value as u64;
        let counts = services.entry(service.to_owned()).or_default();
        counts.total += value;
        if failed {
            counts.errors += value;
        }
    }
    services
}

/// Reads the URLs every `interval` into [`Scrapes`].
pub struct Scraper {
    urls: Vec<String>,
    interval: Duration,
    scrapes: Scrapes,
    http: Result<reqwest::Client, String>,
}

impl Scraper {
    pub fn new(urls: Vec<String>, interval: Duration, scrapes: Scrapes) -> Self {
        // reqwest is built without a default crypto provider; another caller may have
        // installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(READ_TIMEOUT)
            .connect_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Self {
            urls,
            interval,
            scrapes,
            http,
        }
    }

    /// Reads every URL at once, then again every interval, until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        if self.urls.is_empty() {
            return;
        }
        // Each read borrows the scraper; `async move` takes the reference, not the scraper.
        let this = &self;
        loop {
            let reads = this.urls.iter().map(|url| async move {
                let read = this.read(url).await;
                this.scrapes.record(url, crate::now_ms(), read);
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = futures::future::join_all(reads) => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn read(&self, url: &str) -> Result<BTreeMap<String, Counts>, String> {
        let http = self.http.as_ref().map_err(Clone::clone)?;
        let response = http.get(url).send().await.map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let text = response.text().await.map_err(|e| describe(&e))?;
        Ok(counts(&text))
    }
}

/// A reqwest error with its causes, which say what actually went wrong.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_server_requests_total requests
# TYPE http_server_requests_total counter
http_server_requests_total{service="gateway",method="POST",route="/api/webhooks/whatsapp",status="200"} 90
http_server_requests_total{service="gateway",method="GET",route="other",status="404"} 4
http_server_requests_total{service="gateway",method="POST",route="/api/webhooks/whatsapp",status="503"} 6
rpc_server_requests_total{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="OK"} 40
rpc_server_requests_total{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="INVALID_ARGUMENT"} 5
rpc_server_requests_total{service="messaging",rpc_service="wamesh.messaging.v1.Messaging",rpc_method="SendMessage",code="INTERNAL"} 3
rpc_server_requests_total{service="messaging",rpc_service="other",rpc_method="other",code="UNIMPLEMENTED"} 2
rpc_server_duration_seconds_bucket{service="messaging",rpc_service="x",rpc_method="y",le="+Inf"} 50
this line is { nonsense
http_server_requests_total{service="broken} 1
"#;

    #[test]
    fn lines_parse_with_labels_escapes_and_timestamps() {
        let line = parse_line(r#"a_total{x="1",y="q\"uo\\te\nd",} 2.5e3 1700000000000"#).unwrap();
        assert_eq!(line.name, "a_total");
        assert_eq!(
            line.labels,
            [("x", "1".to_owned()), ("y", "q\"uo\\te\nd".to_owned())]
        );
        assert_eq!(line.value, 2500.0);
        let bare = parse_line("up 1").unwrap();
        assert_eq!((bare.name, bare.labels.len(), bare.value), ("up", 0, 1.0));
        assert_eq!(parse_line("le{a=\"1\"} +Inf").unwrap().value, f64::INFINITY);
        for bad in [
            "novalue",
            "x{a=\"1\"}",
            "x{a=1} 2",
            "x{a=\"1\" 2",
            "x abc",
            "{a=\"1\"} 2",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn counts_per_service_take_5xx_and_server_codes_as_errors() {
        let counts = counts(TEXT);
        assert_eq!(
            counts,
            BTreeMap::from([
                (
                    "gateway".to_owned(),
                    Counts {
                        total: 100,
                        errors: 6
                    }
                ),
                (
                    "messaging".to_owned(),
                    Counts {
                        total: 50,
                        errors: 5
                    }
                ),
            ])
        );
        assert!(super::counts("# only a comment\n\ngarbage\n").is_empty());
    }

    #[test]
    fn increase_counts_a_decrease_as_a_reset_from_zero() {
        assert_eq!(increase([]), 0);
        assert_eq!(increase([7]), 0);
        assert_eq!(increase([7, 7, 10, 15]), 8);
        // Restarted between 15 and 4: 4 since the restart, then 2 more.
        assert_eq!(increase([10, 15, 4, 6]), 5 + 4 + 2);
        assert_eq!(increase([10, 0]), 0);
    }

    fn read(total: u64, errors: u64) -> Result<BTreeMap<String, Counts>, String> {
        Ok(BTreeMap::from([(
            "gateway".to_owned(),
            Counts { total, errors },
        )]))
    }

    #[test]
    fn the_window_runs_from_its_oldest_sample_inside_to_the_newest() {
        let scrapes = Scrapes::new(60_000);
        scrapes.record("http://a/metrics", 0, read(100, 10));
        scrapes.record("http://a/metrics", 30_000, read(150, 12));
        scrapes.record("http://a/metrics", 60_000, read(200, 20));
        // At 60 s the sample at 0 is exactly on the window's edge: still inside.
        let (errors, unavailable) = scrapes.errors(60_000);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].total, errors[0].errors), (100, 10));
        assert!(unavailable.is_empty());
        // A millisecond later it is out.
        let (errors, _) = scrapes.errors(60_001);
        assert_eq!((errors[0].total, errors[0].errors), (50, 8));
        // One sample left in the window: the service is seen, nothing counted.
        let (errors, _) = scrapes.errors(120_000);
        assert_eq!(errors[0].service, "gateway");
        assert_eq!((errors[0].total, errors[0].errors), (0, 0));
        // Recording drops what fell out of the window.
        scrapes.record("http://a/metrics", 200_000, read(5, 1));
        let (errors, _) = scrapes.errors(200_000);
        assert_eq!((errors[0].total, errors[0].errors), (0, 0));
    }

    #[test]
    fn replicas_add_up_and_a_failed_read_is_named() {
        let scrapes = Scrapes::new(60_000);
        scrapes.record("http://a/metrics", 0, read(100, 10));
        scrapes.record("http://b/metrics", 0, read(7, 0));
        scrapes.record("http://a/metrics", 10_000, read(130, 11));
        // b restarted: 3 since.
        scrapes.record("http://b/metrics", 10_000, read(3, 1));
        scrapes.record("http://c/metrics", 10_000, Err("cannot connect".into()));
        let (errors, unavailable) = scrapes.errors(10_000);
        assert_eq!((errors[0].total, errors[0].errors), (33, 2));
        assert_eq!(unavailable, ["metrics http://c/metrics: cannot connect"]);
        scrapes.record("http://c/metrics", 20_000, read(1, 0));
        assert!(scrapes.errors(20_000).1.is_empty());
    }
}
