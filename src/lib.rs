//! # pgbaton
//!
//! A PostgreSQL wire-protocol proxy that keeps client sessions alive while it
//! moves them between servers.
//!
//! ## Layers
//!
//! Each layer uses only those below it (`grep -rn 'use crate::' src`
//! shows it):
//!
//! ```text
//! admin       console commands (database `pgbaton`), one file per command
//! proxy       the composition root: listener, signals, RELOAD, shutdown
//! session     one client: handshake, auth, relay; asks migration to move it
//! cluster     the fleet: coordination store, membership, ranked election
//! routing     backends, default, draining, with a version (watch)
//! migration   a move as functions of a session's parts: stage, cut over
//! server      server connections: connect, TLS, login, the server side
//! ledger      what each session's state is, from the wire and the server
//! sql         SQL lexer and classifier, and the `/* pgbaton: */` command
//! protocol    sans-IO framing, message tags, pgbaton's own messages
//! net auth    streams and TLS set-up; SCRAM math
//! config cancel   the validated configuration; virtual cancel keys
//! ```
//!
//! Kept on purpose:
//! - config reads two facts of the leaves: Postgres' message size limit
//!   (`protocol`) and the SCRAM secret format (`auth`), to validate with.
//! - The fleet-wide moves (`session::fleet`) live with the sessions, not
//!   in the proxy, because a session's own `from=` comment starts one; the
//!   proxy and the console call them too.
//! - The proxy does not know its console: whoever builds it passes
//!   `admin::console` to [`proxy::Proxy::bind`].
//!
//! Beside the layers: [`localpg`] (throwaway local Postgres servers for
//! `pgbaton demo` and tests), [`demo`], [`cli`] (command-line definitions)
//! and [`output`] (lines for a terminal that never panic on a closed
//! stdout).

pub mod admin;
pub mod auth;
pub mod cancel;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod ledger;
pub mod localpg;
pub mod migration;
pub mod net;
pub mod output;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod server;
pub mod session;
pub mod sql;
