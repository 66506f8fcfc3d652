//! [`TelemetryConfig`]: what [`crate::init`] installs, built by the caller.

/// Settings for [`crate::init`].
///
/// Built by callers (tests fill the fields directly); only [`TelemetryConfig::from_env`]
/// reads the process environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// `service.name` resource attribute of exported spans.
    pub service_name: String,
    /// OTLP gRPC collector endpoint, e.g. `http://otel-collector:4317`.
    /// `None` keeps tracing in-process: spans get trace ids and propagate, nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// Ratio of new root traces to sample, in `0.0..=1.0`. Default `1.0`.
    pub sampler_ratio: f64,
    /// Follow the caller's decision (a sampled parent from `traceparent` is always sampled, an
    /// unsampled one never), sampling only new traces by ratio. Default `true`.
    pub parent_based: bool,
    /// `true`: one JSON object per log line; `false`: human-readable text.
    pub json_logs: bool,
    /// `RUST_LOG`-style filter for logs and spans, e.g. `info,wamesh_messaging=debug`.
    pub log_filter: String,
}

impl TelemetryConfig {
    /// Defaults for `service_name`: no exporter, sample everything, JSON logs, filter `info`.
    pub fn new(service_name: &str) -> Self {
        Self {
            service_name: service_name.to_owned(),
            otlp_endpoint: None,
            sampler_ratio: 1.0,
            parent_based: true,
            json_logs: true,
            log_filter: "info".to_owned(),
        }
    }

    /// Reads the standard variables on top of [`TelemetryConfig::new`]:
    ///
    /// | variable | field |
    /// |---|---|
    /// | `OTEL_EXPORTER_OTLP_ENDPOINT` | `otlp_endpoint` (empty means none) |
    /// | `OTEL_SERVICE_NAME` | `service_name` (overrides the argument) |
    /// | `OTEL_TRACES_SAMPLER` | `always_on`, `always_off`, `traceidratio` and their `parentbased_` forms (unknown: the default, `parentbased_always_on`) |
    /// | `OTEL_TRACES_SAMPLER_ARG` | `sampler_ratio` for the `traceidratio` samplers (clamped to `0..=1`; unparsable keeps `1.0`) |
    /// | `RUST_LOG` | `log_filter` |
    /// | `WAMESH_LOG_FORMAT` | `json_logs`: `text` turns JSON off; anything else keeps JSON |
    pub fn from_env(service_name: &str) -> Self {
        Self::from_lookup(service_name, |key| std::env::var(key).ok())
    }

    /// [`TelemetryConfig::from_env`] with the environment passed in, so tests need no `set_var`.
    fn from_lookup(service_name: &str, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |key: &str| {
            var(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut config = Self::new(service_name);
        if let Some(name) = var("OTEL_SERVICE_NAME") {
            config.service_name = name;
        }
        config.otlp_endpoint = var("OTEL_EXPORTER_OTLP_ENDPOINT");
        let ratio = var("OTEL_TRACES_SAMPLER_ARG")
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(1.0, |r| r.clamp(0.0, 1.0));
        let sampler = var("OTEL_TRACES_SAMPLER").map(|s| s.to_ascii_lowercase());
        let (parent_based, root) = match sampler.as_deref() {
            Some(s) => s
                .strip_prefix("parentbased_")
                .map_or((false, s), |root| (true, root)),
            None => (true, "traceidratio"),
        };
        (config.parent_based, config.sampler_ratio) = match root {
            "always_on" => (parent_based, 1.0),
            "always_off" => (parent_based, 0.0),
            "traceidratio" => (parent_based, ratio),
            _ => (true, 1.0),
        };
        if let Some(filter) = var("RUST_LOG") {
            config.log_filter = filter;
        }
        if let Some(format) = var("WAMESH_LOG_FORMAT") {
            config.json_logs = !format.eq_ignore_ascii_case("text");
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults_without_variables() {
        let config = TelemetryConfig::from_lookup("gateway", lookup(&[]));
        assert_eq!(config, TelemetryConfig::new("gateway"));
        assert_eq!(config.log_filter, "info");
        assert!(config.json_logs);
        assert_eq!(config.sampler_ratio, 1.0);
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn variables_override_defaults() {
        let config = TelemetryConfig::from_lookup(
            "gateway",
            lookup(&[
                ("OTEL_SERVICE_NAME", "edge"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("RUST_LOG", "debug"),
                ("WAMESH_LOG_FORMAT", "TEXT"),
            ]),
        );
        assert_eq!(config.service_name, "edge");
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(config.sampler_ratio, 0.25);
        assert_eq!(config.log_filter, "debug");
        assert!(!config.json_logs);
    }

    #[test]
    fn bad_values_fall_back() {
        let config = TelemetryConfig::from_lookup(
            "gateway",
            lookup(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
                ("OTEL_TRACES_SAMPLER_ARG", "lots"),
                ("WAMESH_LOG_FORMAT", "json"),
            ]),
        );
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(config.sampler_ratio, 1.0);
        assert!(config.json_logs);
        let clamped =
            TelemetryConfig::from_lookup("g", lookup(&[("OTEL_TRACES_SAMPLER_ARG", "7")]));
        assert_eq!(clamped.sampler_ratio, 1.0);
    }

    #[test]
    fn the_standard_samplers_are_understood() {
        let sampler = |name: Option<&'static str>, ratio: Option<&'static str>| {
            let config = TelemetryConfig::from_lookup("g", move |key| match key {
                "OTEL_TRACES_SAMPLER" => name.map(str::to_owned),
                "OTEL_TRACES_SAMPLER_ARG" => ratio.map(str::to_owned),
                _ => None,
            });
            (config.parent_based, config.sampler_ratio)
        };
        let quarter = Some("0.25");
        assert_eq!(
            sampler(None, quarter),
            (true, 0.25),
            "a ratio alone: parent-based"
        );
        assert_eq!(sampler(Some("traceidratio"), quarter), (false, 0.25));
        assert_eq!(
            sampler(Some("parentbased_traceidratio"), quarter),
            (true, 0.25)
        );
        assert_eq!(sampler(Some("always_off"), None), (false, 0.0));
        assert_eq!(sampler(Some("parentbased_always_off"), None), (true, 0.0));
        assert_eq!(sampler(Some("always_on"), None), (false, 1.0));
        assert_eq!(
            sampler(Some("jaeger_remote"), quarter),
            (true, 1.0),
            "an unknown sampler: the default"
        );
    }
}
