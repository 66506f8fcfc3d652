//! wamesh end to end: the real gateway and messaging, started in-process on port 0 over a fresh
//! database per test, driven only through their edges (signed webhooks over HTTP, messaging's
//! gRPC reads). Storage-relevant tests run on both backends: `postgres::<test>` and
//! `sqlite::<test>` in each module.
//!
//! - [`harness`]: starting and stopping a mesh, signed POSTs, GETs, the gRPC client.
//! - [`payloads`]: webhook bodies built for the tests; [`reads`]: gRPC read helpers.
//! - [`corpus`]: every payload of the shared corpus, stored and read back.
//! - [`rejections`]: bad signatures, sizes, bodies and envelopes; nothing of them stored.
//! - [`delivery`]: escaped unicode, concurrent retries, out-of-order statuses, big batches,
//!   several business numbers.
//! - [`conversations`]: pagination and the customer service window.
//! - [`endpoints`]: the verify handshake, health, readiness and metrics.
//! - [`outages`]: messaging or its database down, then back.
//! - [`events`]: the event log over gRPC, live and resumed from a cursor across restarts.
//! - [`analytics_api`]: the gateway's operator API over a real analytics service: keys, the
//!   overview's exact counts, time series, templates, alerts, export, and every refusal.
//! - [`sending`]: `SendMessage` to the simulated Meta and back: content, the window, templates,
//!   retries, rate limits, delivery tracking, and a crash in the middle of a load.

/// Generates `mod postgres` and `mod sqlite`, each with one test per listed
/// `async fn name(backend: Backend)` of the calling module.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        on_both_backends!(@backend postgres, Postgres; $($name),*);
        on_both_backends!(@backend sqlite, Sqlite; $($name),*);
    };
    (@backend $module:ident, $backend:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::harness::Backend::$backend).await
                }
            )*
        }
    };
}

mod harness;
mod payloads;
mod reads;

mod analytics_api;
mod conversations;
mod corpus;
mod delivery;
mod endpoints;
mod events;
mod outages;
mod rejections;
mod sending;
