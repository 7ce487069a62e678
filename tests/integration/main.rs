//! Integration tests: real Postgres servers started by the harness, pgbaton
//! started in-process on port 0, real clients (tokio-postgres, psql, pgbench,
//! and a raw protocol client for exact message sequences).
//!
//! One test binary, so everything links once.

mod harness;

mod auth;
mod cancel;
mod errors;
mod relay;
mod startup;
