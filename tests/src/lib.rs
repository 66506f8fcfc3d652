//! wamesh-e2e: black-box end-to-end tests of wamesh. Everything lives in one test binary,
//! `tests/e2e/main.rs`: a harness that starts the real gateway and messaging in-process on port 0
//! with a fresh database per test (Postgres or SQLite), and test modules that drive them only
//! through their public edges: signed webhooks over HTTP, and messaging's gRPC reads.
