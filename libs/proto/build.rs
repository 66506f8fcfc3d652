//! Compiles every `.proto` under `proto/` once, without protoc (protox), and writes the
//! descriptor set that gRPC reflection serves.
use std::{env, path::PathBuf};

use protox::prost::Message as _;

const PROTOS: &[&str] = &[
    "wamesh/analytics/v1/analytics.proto",
    "wamesh/messaging/v1/messaging.proto",
    "wamesh/ratelimit/v1/ratelimit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("wamesh_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
