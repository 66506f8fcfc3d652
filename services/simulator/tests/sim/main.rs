//! The simulator over real HTTP on port 0, with a real "gateway" (an axum server on port 0 that
//! checks every webhook's signature) receiving its webhooks. One test binary, a module per
//! behaviour.
mod harness;

mod knobs;
mod record;
mod send;
mod templates;
mod users;
mod webhooks;
mod window;
