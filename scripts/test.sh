#!/usr/bin/env bash
# Runs pgbaton's whole test suite: unit tests, and integration tests against
# real throwaway PostgreSQL servers that the harness starts (as the `postgres`
# OS user when run as root). Installs PostgreSQL first when it is missing.
#
# To test against servers you already run (e.g. dockerized), set
#   PGBATON_TEST_SERVERS=127.0.0.1:5432,127.0.0.1:5433
# with PGBATON_TEST_USER / PGBATON_TEST_PASSWORD for their superuser.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh test
cargo test --all-targets "$@"
