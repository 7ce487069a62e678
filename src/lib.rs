//! # pgbaton
//!
//! A PostgreSQL wire-protocol proxy that keeps client sessions alive while it
//! moves them between servers.
//!
//! ## Layout
//! - [`protocol`]: sans-IO framing, message tags, startup packets and the
//!   messages pgbaton writes itself. No tokio.
//! - [`config`]: the TOML model, command-line overrides, validation.
//! - [`auth`]: server-side SCRAM-SHA-256 math for authenticating clients.
//! - [`net`]: plain-or-TLS streams and rustls set-up for both directions.
//! - [`server`]: server connections: connect, TLS, log in with pgbaton's own
//!   credentials, cancel requests.
//! - [`session`]: one task per client: handshake, client auth, protocol
//!   tracker (safe points) and the relay loop.
//! - [`migration`]: moving a session: pre-stage, safe point, check, replay,
//!   verify, swap.
//! - [`cancel`]: virtual cancel keys mapped to the current server connection.
//! - [`proxy`]: the listener, session limits, graceful shutdown.
//! - [`localpg`]: throwaway local Postgres servers for `pgbaton demo` and tests.
//! - [`ledger`]: what each session's state is, from the wire and the server.
//! - [`sql`]: SQL lexer and classifier, and the `/* pgbaton: */` command.
//! - [`admin`]: the admin console (database `pgbaton`), one file per command.
//! - [`demo`]: the embedded demo.
//! - [`cli`]: command-line definitions.
//! - [`output`]: lines for a terminal that never panic on a closed stdout.

pub mod admin;
pub mod auth;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod demo;
pub mod ledger;
pub mod localpg;
pub mod migration;
pub mod net;
pub mod output;
pub mod protocol;
pub mod proxy;
pub mod server;
pub mod session;
pub mod sql;
