//! Integration tests: real Postgres servers started by the harness, pgbaton
//! started in-process on port 0, real clients (tokio-postgres, psql, pgbench,
//! and a raw protocol client for exact message sequences).
//!
//! One test binary, so everything links once.

mod harness;

mod admin;
mod admission;
mod auth;
mod cancel;
mod clients;
mod demo;
mod drain;
mod dry_run;
mod errors;
mod fleet;
mod fleet_plans;
mod lazy_prepare;
mod ledger;
mod logging;
mod migrate;
mod migrate_check;
mod migrate_failures;
mod migrate_from;
mod migrate_turns;
mod pids;
mod pipeline_errors;
mod relay;
mod routing;
mod shutdown;
mod startup;
mod store;
mod switchover;
mod tls;
