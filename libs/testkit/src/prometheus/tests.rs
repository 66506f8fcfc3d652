//! The parser against the format's own examples and against what Prometheus refuses.
use super::*;

const VALID: &str = r#"# HELP http_requests_total The total number of requests, with a \\ and a\nline.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
http_requests_total{path="C:\\dir",quote="say \"hi\"",nl="a\nb",} 0

# A plain comment.
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
# TYPE temperature gauge
temperature -3.5
temperature{room="x"} NaN
# TYPE rpc_duration_seconds histogram
rpc_duration_seconds_bucket{le="0.05"} 24054
rpc_duration_seconds_bucket{le="0.1"} 33444
rpc_duration_seconds_bucket{le="+Inf"} 144320
rpc_duration_seconds_sum 53423
rpc_duration_seconds_count 144320
# TYPE rpc_quantiles summary
rpc_quantiles{quantile="0.5"} 4773
rpc_quantiles{quantile="0.99"} 76656
rpc_quantiles_sum 1.7560473e+07
rpc_quantiles_count 2693
"#;

#[test]
fn parses_every_part_of_the_format() {
    let scrape = parse(VALID).unwrap();
    let names: Vec<&str> = scrape.families.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http_requests_total",
            "msdos_file_access_time_seconds",
            "temperature",
            "rpc_duration_seconds",
            "rpc_quantiles"
        ]
    );
    let requests = scrape.family("http_requests_total").unwrap();
    assert_eq!(requests.kind, Kind::Counter);
    assert_eq!(
        requests.help.as_deref(),
        Some("The total number of requests, with a \\ and a\nline.")
    );
    assert_eq!(requests.samples[0].timestamp_ms, Some(1_395_066_363_000));
    assert_eq!(
        scrape.sum("http_requests_total", &[("method", "post")]),
        1030.0
    );
    let escaped = &requests.samples[2].labels;
    assert_eq!(escaped["path"], "C:\\dir");
    assert_eq!(escaped["quote"], "say \"hi\"");
    assert_eq!(escaped["nl"], "a\nb");
    assert_eq!(
        scrape
            .family("msdos_file_access_time_seconds")
            .unwrap()
            .kind,
        Kind::Untyped
    );
    assert!(scrape.sum("temperature", &[("room", "x")]).is_nan());
    assert_eq!(scrape.sum("rpc_duration_seconds_count", &[]), 144_320.0);
    assert_eq!(scrape.family("rpc_quantiles").unwrap().samples.len(), 4);
    assert_eq!(
        scrape.label_values("http_requests_total", "code"),
        BTreeSet::from(["200".to_owned(), "400".to_owned()])
    );
}

#[test]
fn refuses_what_prometheus_refuses_and_names_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("a 1", "line feed"),
        ("1a 1\n", "metric name"),
        ("a{1b=\"x\"} 1\n", "label name"),
        ("a{b=x} 1\n", "not quoted"),
        ("a{b=\"x} 1\n", "not closed"),
        ("a{b=\"\\t\"} 1\n", "escape"),
        ("a{b=\"x\",b=\"y\"} 1\n", "twice"),
        ("a{b=\"x\"}1\n", "space"),
        ("a one\n", "value"),
        ("a 1 2.5\n", "timestamp"),
        ("a 1 2 3\n", "unexpected"),
        ("a\n", "without a value"),
        ("a 1\na 2\n", "appears twice"),
        ("a 1\nb 1\na{x=\"y\"} 1\n", "apart"),
        ("# TYPE a counter\n# TYPE a gauge\na 1\n", "second # TYPE"),
        ("a 1\n# TYPE a counter\n", "after its samples"),
        ("# TYPE a countr\n", "unknown type"),
        ("# TYPE a counter\na -1\n", "counter"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n",
            "+Inf",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n",
            "cumulative",
        ),
        (
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n",
            "_sum",
        ),
        (
            "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\n",
            "_count",
        ),
    ];
    for (text, needle) in cases {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains(needle), "{text:?}: {e:?} should say {needle:?}");
    }
}

#[test]
fn an_empty_scrape_is_valid() {
    assert_eq!(parse("").unwrap(), Scrape::default());
}
