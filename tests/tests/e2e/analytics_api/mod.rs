//! The operator API over analytics (`/api/analytics/...`): a real analytics service on port 0
//! over a fresh Postgres database holding a known day of traffic (committed through its real
//! store), the real gateway in front of it with an operator key, driven over HTTP only.
//!
//! - [`harness`]: the day of traffic, starting analytics and the gateway, GETs.
//! - [`keys`]: operator keys in either header, and a gateway with none (fail closed).
//! - [`reads`]: the overview's exact counts, time series, templates, alerts.
//! - [`refusals`]: bad parameters (named, before analytics is asked), analytics' refusals,
//!   analytics not configured or down.
//! - [`export`]: CSV and JSON lines streamed through.
mod export;
mod harness;
mod keys;
mod reads;
mod refusals;
