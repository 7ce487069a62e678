#!/usr/bin/env bash
# Builds pgbaton and runs `pgbaton demo`: two throwaway local PostgreSQL
# servers behind a proxy on 127.0.0.1:6432. Installs PostgreSQL when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh
exec cargo run --release --quiet -- demo "$@"
