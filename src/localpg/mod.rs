//! Throwaway local PostgreSQL servers, for `pgbaton demo` and the integration tests.
//!
//! # Layout
//! - `binaries` — finds the server binaries (`PG_BINDIR`, `pg_config --bindir`, Debian's layout).
//! - `runas`    — runs the tools as the right OS user (`postgres` when we are root) with a clean env.
//! - `template` — the per-process `initdb` template, stale-dir cleanup, and the tree copy.
//! - `conf`     — writes `pg_hba.conf` and the per-server `pgbaton.conf`.
//! - `ports`    — picks free loopback ports and keeps this process from handing one out twice.
//! - `cluster`  — [`LocalPostgres`]: start, stop, restart, drop.
//! - `replica`  — streaming standbys and promotion.
//! - `psql`     — running setup SQL through `psql` over the unix socket.
//! - `error`    — [`LocalPgError`].
//!
//! Every server lives in its own directory `$TMPDIR/pgbaton-<pid>-<n>` (data dir, socket dir, log)
//! and listens on 127.0.0.1 on an ephemeral port; dropping the [`LocalPostgres`] stops it and
//! removes the directory. `initdb` runs once per process (per superuser name), and each server
//! starts from a copy of that template, which is much faster than an `initdb` per server.
//!
//! All calls block (they wait for child processes); from async code call them inside
//! `tokio::task::spawn_blocking`.

mod binaries;
mod cluster;
mod conf;
mod error;
mod ports;
mod psql;
mod replica;
mod runas;
mod template;

pub use binaries::PgBinaries;
pub use cluster::LocalPostgres;
pub use error::LocalPgError;

/// The `pg_hba.conf` method for TCP (`host`) connections to the server.
///
/// Unix-socket connections are always `trust`, so setup through [`LocalPostgres::psql`] never
/// needs a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostAuth {
    /// No password asked.
    #[default]
    Trust,
    /// MD5 challenge. The server is also set to `password_encryption = md5`, because a role whose
    /// password is stored as a SCRAM verifier would silently be authenticated with SCRAM instead.
    Md5,
    /// SCRAM-SHA-256 (the PostgreSQL default since version 14).
    ScramSha256,
    /// Cleartext password.
    Password,
}

impl HostAuth {
    /// The method keyword as written in `pg_hba.conf`.
    pub fn hba_method(self) -> &'static str {
        match self {
            HostAuth::Trust => "trust",
            HostAuth::Md5 => "md5",
            HostAuth::ScramSha256 => "scram-sha-256",
            HostAuth::Password => "password",
        }
    }
}

/// How to set up a [`LocalPostgres`].
#[derive(Debug, Clone)]
pub struct LocalPgOptions {
    /// Method for TCP connections; default [`HostAuth::Trust`].
    pub host_auth: HostAuth,
    /// Bootstrap superuser name given to `initdb`; default `postgres`.
    pub superuser: String,
    /// Extra `postgresql.conf` settings, written after the defaults so they win, e.g.
    /// `("max_connections", "300")`. Give plain values: each is written single-quoted (which
    /// PostgreSQL accepts for every setting type), so no quoting is needed.
    pub extra_conf: Vec<(String, String)>,
}

impl Default for LocalPgOptions {
    fn default() -> Self {
        LocalPgOptions {
            host_auth: HostAuth::Trust,
            superuser: "postgres".to_owned(),
            extra_conf: Vec::new(),
        }
    }
}
