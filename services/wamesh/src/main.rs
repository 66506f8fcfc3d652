//! `wamesh`: the one binary. Reads the command line, sets up telemetry, runs the command until
//! it ends or a signal stops it, then flushes telemetry. Everything else is library code.
#![forbid(unsafe_code)]

use clap::Parser;

/// mimalloc: the services allocate per request; glibc's malloc showed up at ~15% of CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use wamesh::{cli, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    // rustls is built without a default crypto provider (TLS to Postgres, OTLP); use ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = wamesh_telemetry::init(&wamesh_telemetry::TelemetryConfig::from_env(
        cli.command.service_name(),
    ))?;
    let result = run::command(cli.command).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "wamesh stopped with an error");
    }
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    result
}
