//! What every wamesh service needs to run, written once:
//!
//! - [`shutdown`]: SIGTERM/SIGINT into a [`Shutdown`] token passed to every server and worker,
//!   and the drain deadline.
//! - [`duration`]: `10s` / `500ms` / `2m` as flags and env give durations.
//! - [`batch`]: many concurrent calls turned into few batches (group commit, forwarding).
//! - [`grpc`]: serving a set of tonic routes with health, reflection and trace propagation.
//! - [`metrics`]: the Prometheus recorder and the `/metrics` route.
//! - [`numbers`]: the WhatsApp business numbers and apps wamesh serves, from env and a file.
//! - [`secret`]: a string that never prints itself.
#![forbid(unsafe_code)]

pub mod batch;
pub mod duration;
pub mod grpc;
pub mod metrics;
pub mod numbers;
pub mod secret;
pub mod shutdown;

pub use duration::parse_duration;
pub use numbers::BusinessNumber;
pub use secret::Secret;
pub use shutdown::{Shutdown, wait_for_signal};
