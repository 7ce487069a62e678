//! Configuration: the TOML file model (`file`), command-line overrides, and the
//! validated [`Config`] that the rest of pgbaton receives. Config is plain data
//! handed down explicitly; nothing reads a global.

pub mod cluster;
mod duration;
mod file;
pub mod store_url;
mod validate;

pub use cluster::ClusterSettings;
pub use store_url::StoreUrl;

pub use duration::parse_duration;
pub use validate::{ConfigError, Overrides};

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The database name that opens the admin console.
pub const ADMIN_DATABASE: &str = "pgbaton";

/// How clients prove who they are to pgbaton.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Trust,
    ScramSha256,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Trust => "trust",
            ClientAuth::ScramSha256 => "scram-sha-256",
        }
    }
}

/// TLS towards one backend, like libpq's sslmode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerTls {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A password that never shows in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Serialized as part of the fleet's routing record in the store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: ServerTls,
    /// CA bundle for `verify-full`.
    pub ca_file: Option<PathBuf>,
    /// An independent cluster (not a physical copy of the others): moves to
    /// it are allowed, but not for sessions whose statements use type OIDs
    /// that only exist in their own cluster.
    pub foreign: bool,
    /// Being drained: new sessions avoid it and its sessions are moved away.
    pub draining: bool,
}

impl Backend {
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Plain password: checks clients with SCRAM and logs in to servers.
    pub password: Option<Secret>,
    /// A SCRAM secret as stored in pg_authid.rolpassword, for checking clients
    /// without knowing the password.
    pub scram_secret: Option<Secret>,
    /// What pgbaton sends to servers, when it differs from `password`.
    pub server_password: Option<Secret>,
}

impl User {
    /// The password pgbaton uses to log in to a server as this user.
    pub fn password_for_servers(&self) -> Option<&Secret> {
        self.server_password.as_ref().or(self.password.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration of one pgbaton process.
/// What a move does when no safe point comes before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Give up; the session keeps running on its source.
    Abort,
    /// Close the session with 57P01 (for drains).
    Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Authenticated clients at once (admin console sessions included).
    pub max_clients: usize,
    /// Clients still starting up (before authentication) at once; the
    /// oldest gives way to a newcomer.
    pub max_startup_clients: usize,
    /// Of `max_clients`, the slots only admin users may take.
    pub admin_reserved_clients: usize,
    pub auth: ClientAuth,
    pub admin_users: Vec<String>,
    pub tls: Option<TlsFiles>,
    /// In order; the first is the default for new sessions.
    pub backends: Vec<Backend>,
    pub users: Vec<User>,
    pub shutdown_timeout: Duration,
    pub connect_timeout: Duration,
    /// Largest Query or Parse accepted: pgbaton holds these whole. Other
    /// messages stream through and keep Postgres' own limit.
    pub max_message_size: usize,
    /// Bytes of client messages held at once across all sessions (beyond a
    /// small allowance each); a session that would exceed it is closed 53200.
    pub max_client_memory: usize,
    pub log_format: LogFormat,
    /// How long a move waits for a safe point unless told otherwise.
    pub migration_wait: Duration,
    /// Longest a cutover may hold its session (and every other move) once
    /// it has begun: past it the move is aborted and the session stays on
    /// its source. A source or target that hangs then costs one move this
    /// long, not every move the check's 30 s.
    pub cutover_budget: Duration,
    /// Drains: what happens to a session still pinned when the wait is over.
    pub drain_on_timeout: OnTimeout,
    /// SCALE OUT without a target runs this; it must start a server and print
    /// `NAME HOST:PORT` on its last line of output.
    pub scale_out_hook: Option<String>,
    /// Worker threads. 1 (the default) runs everything on one thread, like
    /// PgBouncer: no cross-thread wakeups on the relay's hot path, which on a
    /// small machine shared with Postgres costs more than it gains.
    pub threads: usize,
    /// The longest a worker thread spins for a socket to become readable
    /// before it sleeps (zero: never); see `net::busy_poll`.
    pub busy_poll: Duration,
    /// `[cluster]`: the replicas' shared store, this node's name, leases.
    pub cluster: ClusterSettings,
}

impl Config {
    /// Where new sessions go: the first backend that is not draining.
    pub fn default_backend(&self) -> &Backend {
        // Validation guarantees at least one backend.
        self.backends
            .iter()
            .find(|b| !b.draining)
            .unwrap_or(&self.backends[0])
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admin_users.iter().any(|u| u == user)
    }

    /// Reads a TOML file, applies overrides and validates.
    pub fn load(
        path: Option<&std::path::Path>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.to_path_buf(),
                    source: e,
                })?;
                file::parse(&text)?
            }
            None => file::RawConfig::default(),
        };
        validate::build(raw, overrides)
    }

    /// Parses TOML text (no file) with overrides; used by tests and `check`.
    pub fn from_toml(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        validate::build(file::parse(text)?, overrides)
    }
}
