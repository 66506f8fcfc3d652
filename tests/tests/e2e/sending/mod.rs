//! Sending, end to end: `SendMessage` into messaging, out through rate-limit to the simulated
//! Meta, and back as signed status webhooks through the gateway. Real Postgres, Redis and
//! servers on port 0 (see [`harness`]).
//!
//! - [`content`]: every content type as Meta documents it; invalid content refused by field.
//! - [`rules`]: the window, template fallbacks, idempotency, retries, dead letters, the
//!   delivery timeline and the workers' report.
//! - [`limits`]: a number's throughput, a user's pair rate and the messaging-limit tier hold.
//! - [`crash`]: messaging killed in the middle of a load sends every message exactly once.
//! - [`analytics`]: analytics and messaging killed mid-stream count every event exactly once.
//! - [`alerts`]: Meta failing half of the sends fires one ERROR_RATE alert, which resolves
//!   once sends succeed again.
//! - [`scripted_day`]: a scripted day of traffic (known counts, latencies, failures, template
//!   clicks) reads back exactly through every analytics RPC and REST endpoint.
mod harness;

mod alerts;
mod analytics;
mod content;
mod crash;
mod limits;
mod rules;
mod scripted_day;
