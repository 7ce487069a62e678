#!/bin/sh
# Runs once, when a postgres container initialises its data directory
# (/docker-entrypoint-initdb.d): creates the roles pgbaton logs in as, with
# the container's POSTGRES_PASSWORD, which docker/pgbaton.toml repeats.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v pw="$POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE app LOGIN PASSWORD :'pw';
GRANT CREATE ON SCHEMA public TO app;
CREATE ROLE admin LOGIN PASSWORD :'pw' IN ROLE pg_monitor, pg_signal_backend;
SQL
