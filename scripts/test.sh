#!/usr/bin/env bash
# The README's test command: every test of wamesh, against real PostgreSQL and Redis.
#   1. makes sure PostgreSQL and Redis answer (starting them when installed but stopped);
#   2. drops the databases earlier test runs left behind;
#   3. rustfmt, and clippy with warnings as errors, over every crate and target;
#   4. the deployment files against their schemas (scripts/validate-deploy.sh);
#   5. every test of the workspace (cargo-nextest when installed, else cargo test).
set -euo pipefail
cd "$(dirname "$0")/.."
# Builds are cached outside the clone, so CI and fresh clones do not build cold each time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wamesh-target}"
export WAMESH_TEST_DATABASE_URL="${WAMESH_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

source scripts/services.sh
ensure_postgres
ensure_redis

corpus="${WAMESH_CORPUS_DIR:-../shared/corpus/webhooks/pywa}"
if [ ! -d "$corpus" ]; then
  echo "MISSING: the webhook corpus at $corpus (set WAMESH_CORPUS_DIR)" >&2
  exit 1
fi
export WAMESH_CORPUS_DIR="$(cd "$corpus" && pwd)"

if command -v psql >/dev/null 2>&1; then
  for db in $(psql "$WAMESH_TEST_DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'wamesh_test_%'"); do
    psql "$WAMESH_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  done
fi
rm -f "${TMPDIR:-/tmp}"/wamesh-test-*.db*

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash scripts/validate-deploy.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
