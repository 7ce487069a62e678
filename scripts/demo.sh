#!/usr/bin/env bash
# Builds pgbaton and runs `pgbaton demo`: two throwaway local PostgreSQL
# servers behind a proxy on 127.0.0.1:6432. Installs PostgreSQL and protoc when
# missing.
# The first build takes a few minutes; cargo shows its progress.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh build
cargo build --release --bin pgbaton
exec target/release/pgbaton demo "$@"
