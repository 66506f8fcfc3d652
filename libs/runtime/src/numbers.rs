//! The WhatsApp business numbers (and the Meta apps behind them) that wamesh serves.
//!
//! One default comes from `WAMESH_APP_SECRET`, `WAMESH_VERIFY_TOKEN` and `WAMESH_ACCESS_TOKEN`
//! (with optional `WAMESH_PHONE_NUMBER_ID` / `WAMESH_WABA_ID`); more come from the JSON file
//! named by `WAMESH_NUMBERS_FILE` (for Kubernetes: a mounted Secret):
//!
//! ```json
//! [{"phone_number_id": "1234", "waba_id": "5678", "app_secret": "...", "verify_token": "...",
//!   "access_token": "...", "throughput": 1000, "tier": 10000}]
//! ```
//!
//! `throughput` (messages a second: 80 by default, 1,000 once Meta upgraded the number, 20 for
//! a number shared with the Business app) and `tier` (the messaging limit: 250, 2,000, 10,000,
//! 100,000 users per 24 h, or 0 for unlimited) are optional; without them rate-limit's own
//! policies apply.
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::Secret;

/// One business number and the credentials of the app it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessNumber {
    /// Meta's phone number id; `None` for the default, which serves any number.
    pub phone_number_id: Option<String>,
    pub waba_id: Option<String>,
    /// Signs the webhooks of this number's app.
    pub app_secret: Secret,
    /// Answers Meta's verify handshake.
    pub verify_token: Secret,
    /// Calls the Graph API for this number (sending).
    pub access_token: Option<Secret>,
    /// Meta's throughput level for this number, messages a second.
    pub throughput: Option<f64>,
    /// Meta's messaging-limit tier: users reached outside the window per 24 h (0: unlimited).
    pub tier: Option<u64>,
}

impl BusinessNumber {
    /// A short label for logs and the delivery log: the phone number id or `"default"`.
    pub fn label(&self) -> &str {
        self.phone_number_id.as_deref().unwrap_or("default")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    phone_number_id: String,
    #[serde(default)]
    waba_id: Option<String>,
    app_secret: String,
    verify_token: String,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    throughput: Option<f64>,
    #[serde(default)]
    tier: Option<u64>,
}

/// Reads a numbers file; every entry needs a phone number id, an app secret and a verify token.
pub fn load_file(path: &Path) -> anyhow::Result<Vec<BusinessNumber>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_file(&text).with_context(|| format!("in {}", path.display()))
}

fn parse_file(text: &str) -> anyhow::Result<Vec<BusinessNumber>> {
    let entries: Vec<FileEntry> =
        serde_json::from_str(text).context("not a JSON array of business numbers")?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            anyhow::ensure!(
                !e.phone_number_id.is_empty(),
                "entry {i}: phone_number_id is empty"
            );
            anyhow::ensure!(!e.app_secret.is_empty(), "entry {i}: app_secret is empty");
            anyhow::ensure!(
                !e.verify_token.is_empty(),
                "entry {i}: verify_token is empty"
            );
            if let Some(t) = e.throughput {
                anyhow::ensure!(
                    t.is_finite() && t > 0.0,
                    "entry {i}: throughput must be a positive number of messages a second"
                );
            }
            Ok(BusinessNumber {
                phone_number_id: Some(e.phone_number_id),
                waba_id: e.waba_id,
                app_secret: Secret::new(e.app_secret),
                verify_token: Secret::new(e.verify_token),
                access_token: e.access_token.map(Secret::new),
                throughput: e.throughput,
                tier: e.tier,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_names_what_is_wrong() {
        let numbers = parse_file(
            r#"[{"phone_number_id":"1","app_secret":"s","verify_token":"v","access_token":"t","throughput":1000,"tier":2000}]"#,
        )
        .unwrap();
        assert_eq!(numbers[0].label(), "1");
        assert_eq!(
            (numbers[0].throughput, numbers[0].tier),
            (Some(1000.0), Some(2000))
        );
        let err = parse_file(
            r#"[{"phone_number_id":"1","app_secret":"s","verify_token":"v","throughput":0}]"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("throughput must be a positive"));
        assert_eq!(numbers[0].access_token.as_ref().unwrap().expose(), "t");
        let err = parse_file(r#"[{"phone_number_id":"1","app_secret":"","verify_token":"v"}]"#)
            .unwrap_err();
        assert!(format!("{err:#}").contains("app_secret is empty"));
        let err = parse_file(
            r#"[{"phone_number_id":"1","app_secret":"s","verify_token":"v","secret":"x"}]"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"));
    }
}
