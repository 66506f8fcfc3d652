//! A strict parser of the Prometheus text exposition format (version 0.0.4), for tests that
//! scrape `/metrics` and must prove it is what Prometheus will accept, not just text that
//! contains a name.
//!
//! Strict where Prometheus is: metric and label names by their grammar, label values quoted
//! with only `\\`, `\"` and `\n` escapes, values as floats (`NaN`, `+Inf`, `-Inf` included),
//! an optional integer timestamp, at most one `# TYPE` and one `# HELP` per family and both
//! before its samples, each family's lines together, no series twice, and the text ending with
//! a line feed. Beyond the grammar it checks what a family's type promises: counters are never
//! negative; every histogram series has `_sum`, `_count` and buckets ordered by `le`, cumulative,
//! ending with `le="+Inf"` equal to `_count`; summaries have `_sum` and `_count`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A family's declared type (`untyped` when no `# TYPE` line names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`x_bucket`, `x_sum`... for a histogram `x`).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    /// Whether every `(name, value)` pair of `labels` is among this sample's labels.
    pub fn has_labels(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// A metric family: its `# TYPE` and `# HELP` and its samples, in text order.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// A whole scrape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scrape {
    pub families: Vec<Family>,
}

/// Why a text is not valid exposition format: the line (1-based; 0 for the text as a whole)
/// and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

impl Scrape {
    /// The family called `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Every sample named `name` (a family's name, or `x_bucket`, `x_count`...) that has all
    /// of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(move |s| s.name == name && s.has_labels(labels))
    }

    /// The sum of the samples [`Scrape::samples`] finds (0 when there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name, labels).map(|s| s.value).sum()
    }

    /// The distinct values of label `label` among the samples named `name`.
    pub fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.samples(name, &[])
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

/// Parses a whole scrape, or says the first thing wrong with it.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(error(0, "the text does not end with a line feed"));
    }
    let mut parser = Parser::default();
    for (i, line) in text.lines().enumerate() {
        parser.line(i + 1, line)?;
    }
    for family in &parser.scrape.families {
        check_family(family).map_err(|m| error(0, format!("{}: {m}", family.name)))?;
    }
    Ok(parser.scrape)
}

#[derive(Default)]
struct Parser {
    scrape: Scrape,
    /// Every series seen, as (sample name, labels).
    series: BTreeSet<(String, BTreeMap<String, String>)>,
    /// Whether the current family had its `# TYPE`.
    typed: bool,
}

impl Parser {
    fn line(&mut self, n: usize, line: &str) -> Result<(), ParseError> {
        let line = line.trim_matches([' ', '\t']);
        if line.is_empty() {
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix('#') {
            return self.comment(n, comment.trim_start_matches([' ', '\t']));
        }
        let sample = sample(line).map_err(|m| error(n, m))?;
        if !self
            .series
            .insert((sample.name.clone(), sample.labels.clone()))
        {
            return Err(error(n, format!("series {} appears twice", sample.name)));
        }
        let family = self.family_of(n, &sample.name)?;
        if family.kind == Kind::Counter && (sample.value.is_nan() || sample.value < 0.0) {
            return Err(error(
                n,
                format!("counter {} is {}", sample.name, sample.value),
            ));
        }
        family.samples.push(sample);
        Ok(())
    }

    fn comment(&mut self, n: usize, comment: &str) -> Result<(), ParseError> {
        let mut words = comment.splitn(3, [' ', '\t']);
        let keyword = words.next().unwrap_or_default();
        if keyword != "TYPE" && keyword != "HELP" {
            return Ok(()); // a plain comment
        }
        let name = words.next().unwrap_or_default();
        if !is_metric_name(name) {
            return Err(error(
                n,
                format!("# {keyword} names no valid metric: {name:?}"),
            ));
        }
        let rest = words.next().unwrap_or_default();
        let family = self.open(n, name)?;
        if keyword == "HELP" {
            if family.help.is_some() {
                return Err(error(n, format!("a second # HELP for {name}")));
            }
            family.help = Some(unescape(rest, false).map_err(|m| error(n, m))?);
            return Ok(());
        }
        let kind = match rest.trim_matches([' ', '\t']) {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            other => return Err(error(n, format!("unknown type {other:?} for {name}"))),
        };
        if self.typed {
            return Err(error(n, format!("a second # TYPE for {name}")));
        }
        self.typed = true;
        self.current_mut().kind = kind;
        Ok(())
    }

    /// The family `name` for a `# HELP` or `# TYPE` line: the current one while it has no
    /// samples, else a new one.
    fn open(&mut self, n: usize, name: &str) -> Result<&mut Family, ParseError> {
        if let Some(current) = self.scrape.families.last()
            && current.name == name
        {
            if !current.samples.is_empty() {
                return Err(error(
                    n,
                    format!("# HELP or # TYPE of {name} after its samples"),
                ));
            }
            return Ok(self.current_mut());
        }
        self.start(n, name)?;
        Ok(self.current_mut())
    }

    /// The family a sample belongs to: the current one when the name fits it, else a new
    /// untyped one.
    fn family_of(&mut self, n: usize, sample: &str) -> Result<&mut Family, ParseError> {
        if let Some(current) = self.scrape.families.last()
            && belongs(current, sample)
        {
            return Ok(self.current_mut());
        }
        self.start(n, sample)?;
        Ok(self.current_mut())
    }

    fn start(&mut self, n: usize, name: &str) -> Result<(), ParseError> {
        let owner = self
            .scrape
            .families
            .iter()
            .find(|f| f.name == name || belongs(f, name));
        if let Some(owner) = owner {
            return Err(error(
                n,
                format!("{name} comes apart from the other lines of {}", owner.name),
            ));
        }
        self.scrape.families.push(Family {
            name: name.to_owned(),
            kind: Kind::Untyped,
            help: None,
            samples: Vec::new(),
        });
        self.typed = false;
        Ok(())
    }

    fn current_mut(&mut self) -> &mut Family {
        self.scrape
            .families
            .last_mut()
            .expect("a family was started")
    }
}

/// Whether a sample named `sample` is one of `family`'s.
fn belongs(family: &Family, sample: &str) -> bool {
    if sample == family.name {
        return family.kind != Kind::Histogram;
    }
    let Some(suffix) = sample.strip_prefix(family.name.as_str()) else {
        return false;
    };
    match family.kind {
        Kind::Histogram => ["_bucket", "_sum", "_count"].contains(&suffix),
        Kind::Summary => ["_sum", "_count"].contains(&suffix),
        _ => false,
    }
}

/// What a family's type promises, over all its samples.
fn check_family(family: &Family) -> Result<(), String> {
    let base = |s: &Sample| {
        let mut labels = s.labels.clone();
        labels.remove("le");
        labels.remove("quantile");
        labels
    };
    let named = |suffix: &str| format!("{}{suffix}", family.name);
    match family.kind {
        Kind::Histogram => {
            let mut groups: BTreeMap<BTreeMap<String, String>, Vec<&Sample>> = BTreeMap::new();
            for s in &family.samples {
                groups.entry(base(s)).or_default().push(s);
            }
            for (labels, samples) in groups {
                let get = |name: String| samples.iter().find(|s| s.name == name).map(|s| s.value);
                let count = get(named("_count")).ok_or(format!("no _count for {labels:?}"))?;
                get(named("_sum")).ok_or(format!("no _sum for {labels:?}"))?;
                let mut previous: Option<(f64, f64)> = None;
                for bucket in samples.iter().filter(|s| s.name == named("_bucket")) {
                    let le = bucket
                        .labels
                        .get("le")
                        .ok_or("a bucket without le")?
                        .as_str();
                    let le = float(le).map_err(|e| format!("le {le:?}: {e}"))?;
                    if let Some((last_le, last_count)) = previous
                        && (le <= last_le || bucket.value < last_count)
                    {
                        return Err(format!(
                            "buckets of {labels:?} are not ordered by le and cumulative"
                        ));
                    }
                    previous = Some((le, bucket.value));
                }
                match previous {
                    Some((le, total)) if le == f64::INFINITY && total == count => {}
                    _ => {
                        return Err(format!(
                            "the last bucket of {labels:?} is not le=\"+Inf\" equal to _count"
                        ));
                    }
                }
            }
        }
        Kind::Summary => {
            for s in family.samples.iter().filter(|s| s.name == family.name) {
                if !s.labels.contains_key("quantile") {
                    return Err("a summary sample without quantile".to_owned());
                }
                let labels = base(s);
                for suffix in ["_sum", "_count"] {
                    let found = family
                        .samples
                        .iter()
                        .any(|t| t.name == named(suffix) && base(t) == labels);
                    if !found {
                        return Err(format!("no {suffix} for {labels:?}"));
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `name{labels} value [timestamp]`.
fn sample(line: &str) -> Result<Sample, String> {
    let end = line
        .find(['{', ' ', '\t'])
        .ok_or("a sample without a value")?;
    let name = &line[..end];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[end..];
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = label_set(inside, &mut labels)?;
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields.next().ok_or("a sample without a value")?;
    let value = float(value).map_err(|e| format!("value {value:?}: {e}"))?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("timestamp {t:?} is not an integer"))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Reads `name="value",...}` into `labels`; answers what follows the `}`.
fn label_set<'a>(
    mut text: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        text = text.trim_start_matches([' ', '\t']);
        if let Some(rest) = text.strip_prefix('}') {
            if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
                return Err("no space between the labels and the value".to_owned());
            }
            return Ok(rest);
        }
        let eq = text.find('=').ok_or("a label without =")?;
        let name = text[..eq].trim_end_matches([' ', '\t']);
        if !is_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        let quoted = text[eq + 1..]
            .trim_start_matches([' ', '\t'])
            .strip_prefix('"')
            .ok_or(format!("the value of label {name} is not quoted"))?;
        let close = closing_quote(quoted).ok_or(format!("label {name}'s value is not closed"))?;
        let value = unescape(&quoted[..close], true)?;
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} is given twice"));
        }
        text = quoted[close + 1..].trim_start_matches([' ', '\t']);
        if let Some(rest) = text.strip_prefix(',') {
            text = rest;
        } else if !text.starts_with('}') {
            return Err(format!("expected , or }} after label {name}"));
        }
    }
}

/// The index of the quote that closes a label value (escaped quotes skipped).
fn closing_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Label values escape `\\`, `\"` and `\n`; `# HELP` text only `\\` and `\n`.
fn unescape(text: &str, label: bool) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if label => out.push('"'),
            Some(other) => return Err(format!("invalid escape \\{other} in {text:?}")),
            None => return Err(format!("a lone \\ at the end of {text:?}")),
        }
    }
    Ok(out)
}

/// A value as Prometheus reads it: a float, `NaN`, `+Inf` or `-Inf`.
fn float(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text
            .chars()
            .any(|c| c.is_ascii_alphabetic() && !"eE".contains(c)) =>
        {
            Err("not a number".to_owned())
        }
        _ => text.parse::<f64>().map_err(|e| e.to_string()),
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests;
