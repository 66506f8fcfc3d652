//! `Export`: rollups, template performance or message facts of a range as CSV (a header, then
//! one row per line) or JSON lines, produced page by page so an export of any size streams in
//! bounded memory. Users appear only as their keyed hash.
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::facts::Fact;
use crate::query::{self, Range};
use crate::rollup::{DAY_MS, Grain};
use crate::store::{RollupRow, Store, StoreError};

/// Facts read per page.
const FACT_PAGE: u32 = 1_000;
/// Bytes gathered before a chunk is sent.
const CHUNK_BYTES: usize = 64 * 1024;

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    Rollups(Grain),
    Templates,
    Messages,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// One export: writes its chunks to `out` until done, the receiver goes, or the store fails
/// (then the error is the last item).
pub async fn run(
    store: Arc<dyn Store>,
    dataset: Dataset,
    format: Format,
    range: Range,
    number: Option<String>,
    out: mpsc::Sender<Result<Vec<u8>, StoreError>>,
) {
    let mut writer = Writer {
        format,
        columns: columns(dataset),
        buffer: Vec::new(),
        out,
    };
    let result = async {
        writer.header();
        match dataset {
            Dataset::Rollups(grain) => rollups(&*store, grain, range, number, &mut writer).await,
            Dataset::Templates => templates(&*store, range, number, &mut writer).await,
            Dataset::Messages => messages(&*store, range, number, &mut writer).await,
        }
    }
    .await;
    match result {
        Ok(()) => {
            writer.flush().await;
        }
        Err(e) => {
            let _ = writer.out.send(Err(e)).await;
        }
    }
}

/// The columns of each dataset, in order.
pub fn columns(dataset: Dataset) -> &'static [&'static str] {
    match dataset {
        Dataset::Rollups(_) => &[
            "bucket_start",
            "bucket_start_ms",
            "grain",
            "business_phone_number_id",
            "direction",
            "message_type",
            "template",
            "pricing_category",
            "error_code",
            "messages_in",
            "messages_out",
            "delivered",
            "read",
            "failed",
            "rejected",
            "replied",
            "clicked",
        ],
        Dataset::Templates => &[
            "template",
            "sent",
            "delivered",
            "read",
            "replied",
            "clicked",
            "failed",
            "delivery_rate",
            "read_rate",
            "reply_rate",
            "click_rate",
            "median_time_to_delivered_ms",
            "failures_by_code",
        ],
        Dataset::Messages => &[
            "key",
            "wamid",
            "business_phone_number_id",
            "user_hash",
            "direction",
            "message_type",
            "template",
            "pricing_category",
            "at_ms",
            "delivered_ms",
            "read_ms",
            "failed_ms",
            "error_code",
            "replied",
            "clicked",
        ],
    }
}

/// Rollup rows bucket by bucket (a day of buckets per read).
async fn rollups(
    store: &dyn Store,
    grain: Grain,
    range: Range,
    number: Option<String>,
    w: &mut Writer,
) -> Result<(), StoreError> {
    let mut from = match grain {
        Grain::Hour => range.from_ms,
        Grain::Day => range.from_ms.div_euclid(DAY_MS) * DAY_MS,
    };
    while from < range.to_ms {
        let to = (from + DAY_MS).min(range.to_ms);
        for row in store
            .rollup_rows(grain, from, to, number.as_deref())
            .await?
        {
            w.row(rollup_values(&row)).await;
        }
        from = to;
    }
    Ok(())
}

fn rollup_values(r: &RollupRow) -> Vec<Value> {
    let c = &r.counts;
    vec![
        json!(rfc3339(r.bucket_ms)),
        json!(r.bucket_ms),
        json!(r.grain.as_str()),
        json!(r.dims.number),
        json!(r.dims.direction),
        json!(r.dims.message_type),
        json!(r.dims.template),
        json!(r.dims.pricing_category),
        json!(r.dims.error_code),
        json!(c.messages_in),
        json!(c.messages_out),
        json!(c.delivered),
        json!(c.read),
        json!(c.failed),
        json!(c.rejected),
        json!(c.replied),
        json!(c.clicked),
    ]
}

async fn templates(
    store: &dyn Store,
    range: Range,
    number: Option<String>,
    w: &mut Writer,
) -> Result<(), StoreError> {
    let list = query::templates(store, range, number, "name", true, 0)
        .await?
        .unwrap_or_default();
    for t in list {
        let c = t.counts;
        let failures: Vec<String> = t
            .failures_by_code
            .iter()
            .map(|(code, n)| format!("{code}:{n}"))
            .collect();
        w.row(vec![
            json!(t.template),
            json!(c.messages_out),
            json!(c.delivered),
            json!(c.read),
            json!(c.replied),
            json!(c.clicked),
            json!(c.failed),
            json!(t.rate(c.delivered)),
            json!(t.rate(c.read)),
            json!(t.rate(c.replied)),
            json!(t.rate(c.clicked)),
            json!(t.median_time_to_delivered_ms),
            json!(failures.join(" ")),
        ])
        .await;
    }
    Ok(())
}

/// Message facts in time order, a page at a time.
async fn messages(
    store: &dyn Store,
    range: Range,
    number: Option<String>,
    w: &mut Writer,
) -> Result<(), StoreError> {
    let mut after: Option<(i64, String)> = None;
    loop {
        let page = store
            .facts_page(
                range.from_ms,
                range.to_ms,
                number.as_deref(),
                after.clone(),
                FACT_PAGE,
            )
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = Some((last.at_ms.or(last.failed_ms).unwrap_or(0), last.key.clone()));
        let full = page.len() == FACT_PAGE as usize;
        for fact in &page {
            w.row(fact_values(fact)).await;
        }
        if !full {
            return Ok(());
        }
    }
}

fn fact_values(f: &Fact) -> Vec<Value> {
    vec![
        json!(f.key),
        json!(f.wamid),
        json!(f.number),
        json!(format!("{:016x}", f.user)),
        json!(f.direction.as_str()),
        json!(f.message_type),
        json!(f.template),
        json!(f.pricing_category),
        json!(f.at_ms),
        json!(f.delivered_ms),
        json!(f.read_ms),
        json!(f.failed_ms),
        json!(f.error_code),
        json!(f.replied),
        json!(f.clicked),
    ]
}

/// Formats rows and sends them in chunks.
struct Writer {
    format: Format,
    columns: &'static [&'static str],
    buffer: Vec<u8>,
    out: mpsc::Sender<Result<Vec<u8>, StoreError>>,
}

impl Writer {
    fn header(&mut self) {
        if self.format == Format::Csv {
            self.buffer
                .extend_from_slice(self.columns.join(",").as_bytes());
            self.buffer.push(b'\n');
        }
    }

    async fn row(&mut self, values: Vec<Value>) {
        match self.format {
            Format::Csv => {
                let cells: Vec<String> = values.iter().map(csv_cell).collect();
                self.buffer.extend_from_slice(cells.join(",").as_bytes());
            }
            Format::Json => {
                let object: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .map(|c| (*c).to_owned())
                    .zip(values)
                    .collect();
                self.buffer
                    .extend_from_slice(Value::Object(object).to_string().as_bytes());
            }
        }
        self.buffer.push(b'\n');
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush().await;
        }
    }

    async fn flush(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.out.send(Ok(std::mem::take(&mut self.buffer))).await;
        }
    }
}

/// A CSV cell (RFC 4180): quoted when it holds a comma, quote or line break; null is empty.
fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => return String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// `2026-12-03T14:00:00Z` for a Unix ms time (UTC; days from the civil calendar).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_307_927_500), "2026-12-03T14:25:27Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn csv_cells_are_quoted_only_when_they_must_be() {
        assert_eq!(csv_cell(&json!("plain")), "plain");
        assert_eq!(csv_cell(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_cell(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell(&json!(null)), "");
        assert_eq!(csv_cell(&json!(42)), "42");
        assert_eq!(csv_cell(&json!(true)), "true");
    }
}
