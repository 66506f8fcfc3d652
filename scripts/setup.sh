#!/usr/bin/env bash
# One-time set-up of a fresh Debian machine with Rust installed: the system packages wamesh's
# build and tests need (a C compiler for ring and SQLite, PostgreSQL, Redis), started; then a
# release build of the `wamesh` binary.
set -euo pipefail
cd "$(dirname "$0")/.."
# The release build goes where `cargo run --release` (the README's next command) looks for it:
# the default target directory, unless CARGO_TARGET_DIR says otherwise.

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
  else
    echo "Please install: ${need[*]} (sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
fi
source scripts/services.sh
ensure_postgres
ensure_redis
cargo build --release --locked -p wamesh
echo "Set-up done. Run the mesh: cargo run --release -p wamesh -- dev"
