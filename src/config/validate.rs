//! Turns the raw file plus command-line overrides into a validated [`Config`],
//! naming the key of every bad value.

use super::file::{RawBackend, RawConfig};
use super::*;
use std::path::Path;
use thiserror::Error;

/// Busy polling's window unless configured: long enough to cover a
/// relayed round trip of a small query on a shared machine.
/// Largest Query or Parse by default: far above what drivers send (ORMs'
/// largest multi-row INSERTs are a few MB), far below Postgres' 1 GiB, which
/// pgbaton would have to hold whole for each such client.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Client bytes held across all sessions by default: eight clients at once
/// at the largest message.
pub const DEFAULT_MAX_CLIENT_MEMORY: usize = 512 << 20;
const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(200);
/// Shorter windows would not cover even a quick reply.
const MIN_BUSY_POLL: Duration = Duration::from_micros(10);
/// Beyond this, spinning costs more than the sleep it saves.
const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file: {0}")]
    Toml(String),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Command-line values that replace the file's.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    /// `NAME=HOST:PORT`; when given, they replace the file's backends.
    pub backends: Vec<String>,
    pub auth: Option<String>,
    /// When given, they replace the file's admin users.
    pub admin_users: Vec<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    /// `--cluster-store`, `--node-id`.
    pub cluster_store: Option<String>,
    pub node_id: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:6432";

pub(super) fn build(mut raw: RawConfig, o: &Overrides) -> Result<Config, ConfigError> {
    apply_overrides(&mut raw, o)?;

    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text
        .parse()
        .map_err(|e| invalid("listen", format!("{listen_text:?} is not HOST:PORT ({e})")))?;

    let auth = match raw.auth.as_deref().unwrap_or("scram-sha-256") {
        "trust" => ClientAuth::Trust,
        "scram-sha-256" => ClientAuth::ScramSha256,
        other => {
            return Err(invalid(
                "auth",
                format!("{other:?}: expected \"trust\" or \"scram-sha-256\""),
            ))
        }
    };

    let threads = raw.threads.unwrap_or(1);
    if !(1..=256).contains(&threads) {
        return Err(invalid("threads", "must be between 1 and 256"));
    }
    let busy_poll = match &raw.busy_poll {
        None => DEFAULT_BUSY_POLL,
        Some(s) => parse_duration(s)
            .filter(|d| d.is_zero() || (MIN_BUSY_POLL..=MAX_BUSY_POLL).contains(d))
            .ok_or_else(|| {
                invalid(
                    "busy_poll",
                    format!("{s:?}: expected \"0\" (off) or from \"10us\" to \"1ms\""),
                )
            })?,
    };
    let (max_clients, max_startup_clients, admin_reserved_clients) = client_limits(&raw)?;

    let (shutdown_timeout, connect_timeout, migration_wait, cutover_budget, drain_on_timeout) =
        timing(&raw)?;

    let (max_message_size, max_client_memory) = message_limits(&raw)?;

    let log_format = match raw.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log_format",
                format!("{other:?}: expected \"text\" or \"json\""),
            ))
        }
    };

    let tls = raw.tls.map(|t| TlsFiles {
        cert: PathBuf::from(t.cert),
        key: PathBuf::from(t.key),
    });

    let backends = backends(raw.backends)?;

    let users = users(raw.users)?;

    let admin_users = raw.admin_users.unwrap_or_default();

    Ok(Config {
        listen,
        max_clients,
        max_startup_clients,
        admin_reserved_clients,
        auth,
        admin_users,
        tls,
        backends,
        users,
        shutdown_timeout,
        connect_timeout,
        max_message_size,
        max_client_memory,
        log_format,
        migration_wait,
        cutover_budget,
        drain_on_timeout,
        scale_out_hook: raw.scale_out_hook.filter(|h| !h.trim().is_empty()),
        threads,
        busy_poll,
        cluster: super::cluster::build(raw.cluster)?,
    })
}

/// A duration under `key`, or an error naming it.
pub(super) fn parse_duration_key(key: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).ok_or_else(|| {
        invalid(
            key,
            format!("{s:?} is not a duration like \"10s\" or \"500ms\""),
        )
    })
}

/// The timeouts, and what a drain does when one passes.
fn timing(
    raw: &RawConfig,
) -> Result<(Duration, Duration, Duration, Duration, OnTimeout), ConfigError> {
    let duration = |key: &str, v: &Option<String>, default: u64| match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) => parse_duration(s).ok_or_else(|| {
            invalid(
                key,
                format!("{s:?} is not a duration like \"30s\" or \"500ms\""),
            )
        }),
    };
    let shutdown_timeout = duration("shutdown_timeout", &raw.shutdown_timeout, 30)?;
    let connect_timeout = duration("connect_timeout", &raw.connect_timeout, 10)?;
    let migration_wait = duration("migration_wait", &raw.migration_wait, 30)?;
    let cutover_budget = duration("cutover_budget", &raw.cutover_budget, 2)?;
    if cutover_budget.is_zero() {
        return Err(invalid(
            "cutover_budget",
            "must be more than zero: every cutover needs a round trip",
        ));
    }
    let drain_on_timeout = match raw.drain_on_timeout.as_deref().unwrap_or("abort") {
        "abort" => OnTimeout::Abort,
        "disconnect" => OnTimeout::Disconnect,
        other => {
            return Err(invalid(
                "drain_on_timeout",
                format!("{other:?}: expected \"abort\" or \"disconnect\""),
            ))
        }
    };
    Ok((
        shutdown_timeout,
        connect_timeout,
        migration_wait,
        cutover_budget,
        drain_on_timeout,
    ))
}

/// Command-line flags win over the file.
fn apply_overrides(raw: &mut RawConfig, o: &Overrides) -> Result<(), ConfigError> {
    if let Some(l) = &o.listen {
        raw.listen = Some(l.clone());
    }
    if let Some(a) = &o.auth {
        raw.auth = Some(a.clone());
    }
    if !o.admin_users.is_empty() {
        raw.admin_users = Some(o.admin_users.clone());
    }
    if !o.backends.is_empty() {
        raw.backends = o
            .backends
            .iter()
            .map(|b| backend_flag(b))
            .collect::<Result<_, _>>()?;
    }
    match (&o.tls_cert, &o.tls_key) {
        (Some(cert), Some(key)) => {
            raw.tls = Some(super::file::RawTls {
                cert: cert.clone(),
                key: key.clone(),
            })
        }
        (None, None) => {}
        _ => return Err(invalid("tls", "--tls-cert and --tls-key go together")),
    }
    if o.cluster_store.is_some() || o.node_id.is_some() {
        let cluster = raw.cluster.get_or_insert_with(Default::default);
        if let Some(store) = &o.cluster_store {
            cluster.store = Some(store.clone());
        }
        if let Some(id) = &o.node_id {
            cluster.node_id = Some(id.clone());
        }
    }
    Ok(())
}

/// `max_clients`, `max_startup_clients` and `admin_reserved_clients`.
fn client_limits(raw: &RawConfig) -> Result<(usize, usize, usize), ConfigError> {
    let max_clients = raw.max_clients.unwrap_or(1000);
    if max_clients == 0 {
        return Err(invalid("max_clients", "must be at least 1"));
    }
    let max_startup_clients = raw.max_startup_clients.unwrap_or(100);
    if max_startup_clients == 0 {
        return Err(invalid("max_startup_clients", "must be at least 1"));
    }
    // Kept only when there are admin users to use them (3 by default, as
    // Postgres' superuser_reserved_connections; never all of max_clients).
    let admin_reserved_clients = match raw.admin_reserved_clients {
        Some(n) if n >= max_clients => {
            return Err(invalid(
                "admin_reserved_clients",
                "must be less than max_clients",
            ))
        }
        Some(n) => n,
        None if raw.admin_users.as_ref().is_some_and(|a| !a.is_empty()) => 3.min(max_clients - 1),
        None => 0,
    };
    Ok((max_clients, max_startup_clients, admin_reserved_clients))
}

/// `max_message_size` and `max_client_memory`.
fn message_limits(raw: &RawConfig) -> Result<(usize, usize), ConfigError> {
    let max_message_size = raw.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
    if !(1024..=crate::protocol::codec::PG_LARGE_MESSAGE_LIMIT).contains(&max_message_size) {
        return Err(invalid(
            "max_message_size",
            "must be from 1024 bytes to 1073741823 (Postgres' own limit)",
        ));
    }
    let max_client_memory = raw.max_client_memory.unwrap_or(DEFAULT_MAX_CLIENT_MEMORY);
    if max_client_memory < max_message_size {
        return Err(invalid(
            "max_client_memory",
            "must be at least max_message_size, or no client could send its largest message",
        ));
    }
    Ok((max_message_size, max_client_memory))
}

/// The `[[backends]]`, checked: at least one, not all draining, names unique.
fn backends(raw: Vec<super::file::RawBackend>) -> Result<Vec<Backend>, ConfigError> {
    if raw.iter().all(|b| b.draining == Some(true)) && !raw.is_empty() {
        return Err(invalid(
            "backends",
            "every backend is draining: new sessions would have nowhere to go",
        ));
    }
    if raw.is_empty() {
        return Err(invalid(
            "backends",
            "at least one backend is needed ([[backends]] in the file or --backend NAME=HOST:PORT)",
        ));
    }
    let mut backends = Vec::with_capacity(raw.len());
    for (i, b) in raw.into_iter().enumerate() {
        let backend = backend(i, b)?;
        if backends.iter().any(|x: &Backend| x.name == backend.name) {
            return Err(invalid(
                format!("backends[{i}].name"),
                format!("duplicate name {:?}", backend.name),
            ));
        }
        backends.push(backend);
    }
    Ok(backends)
}

/// The `[[users]]`, checked: names unique, SCRAM secrets readable.
fn users(raw: Vec<super::file::RawUser>) -> Result<Vec<User>, ConfigError> {
    let mut users: Vec<User> = Vec::with_capacity(raw.len());
    for (i, u) in raw.into_iter().enumerate() {
        if u.name.is_empty() {
            return Err(invalid(format!("users[{i}].name"), "must not be empty"));
        }
        if users.iter().any(|x| x.name == u.name) {
            return Err(invalid(
                format!("users[{i}].name"),
                format!("duplicate user {:?}", u.name),
            ));
        }
        if let Some(s) = &u.scram_secret {
            if crate::auth::scram::StoredSecret::parse(s).is_none() {
                return Err(invalid(
                    format!("users[{i}].scram_secret"),
                    "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as in pg_authid",
                ));
            }
        }
        users.push(User {
            name: u.name,
            password: u.password.map(Secret::new),
            scram_secret: u.scram_secret.map(Secret::new),
            server_password: u.server_password.map(Secret::new),
        });
    }
    Ok(users)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn backend(i: usize, b: RawBackend) -> Result<Backend, ConfigError> {
    if !valid_name(&b.name) {
        return Err(invalid(
            format!("backends[{i}].name"),
            format!("{:?}: use letters, digits, '_' or '-' (at most 63)", b.name),
        ));
    }
    if b.host.is_empty() {
        return Err(invalid(format!("backends[{i}].host"), "must not be empty"));
    }
    let tls = match b.tls.as_deref().unwrap_or("prefer") {
        "disable" => ServerTls::Disable,
        "prefer" => ServerTls::Prefer,
        "require" => ServerTls::Require,
        "verify-full" => ServerTls::VerifyFull,
        other => {
            return Err(invalid(
                format!("backends[{i}].tls"),
                format!("{other:?}: expected disable, prefer, require or verify-full"),
            ))
        }
    };
    let ca_file = b.ca_file.map(PathBuf::from);
    if tls == ServerTls::VerifyFull && ca_file.is_none() {
        return Err(invalid(
            format!("backends[{i}].ca_file"),
            "verify-full needs a CA file",
        ));
    }
    if let Some(ca) = &ca_file {
        if !Path::new(ca).exists() {
            return Err(invalid(
                format!("backends[{i}].ca_file"),
                format!("{} does not exist", ca.display()),
            ));
        }
    }
    Ok(Backend {
        name: b.name,
        host: b.host,
        port: b.port.unwrap_or(5432),
        tls,
        ca_file,
        foreign: b.foreign.unwrap_or(false),
        draining: b.draining.unwrap_or(false),
    })
}

/// `NAME=HOST:PORT`, with `[v6]:port` allowed.
fn backend_flag(s: &str) -> Result<RawBackend, ConfigError> {
    let bad = || invalid("--backend", format!("{s:?} is not NAME=HOST:PORT"));
    let (name, addr) = s.split_once('=').ok_or_else(bad)?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(RawBackend {
        name: name.to_string(),
        host: host.to_string(),
        port: Some(port),
        // Flag-only backends are usually local test servers; prefer TLS
        // like libpq does and fall back to plain text.
        tls: None,
        ca_file: None,
        foreign: None,
        draining: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(backends: &[&str]) -> Overrides {
        Overrides {
            backends: backends.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn flag_only_config() {
        let c = Config::from_toml("", &flags(&["pg1=127.0.0.1:5432", "pg2=[::1]:5433"])).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.auth, ClientAuth::ScramSha256);
        assert_eq!(c.default_backend().name, "pg1");
        assert_eq!(c.backend("pg2").unwrap().host, "::1");
        assert_eq!(c.backend("pg2").unwrap().addr(), "[::1]:5433");
    }

    #[test]
    fn flags_override_the_file() {
        let text = r#"
            listen = "127.0.0.1:7000"
            auth = "trust"
            [[backends]]
            name = "a"
            host = "db"
        "#;
        let mut o = flags(&["b=127.0.0.1:1"]);
        o.listen = Some("127.0.0.1:7001".into());
        let c = Config::from_toml(text, &o).unwrap();
        assert_eq!(c.listen.port(), 7001);
        assert_eq!(c.auth, ClientAuth::Trust);
        assert_eq!(c.backends.len(), 1);
        assert_eq!(c.default_backend().name, "b");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml("listne = \"x\"", &flags(&["a=h:1"])).unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
        let e = Config::from_toml("auth = \"md5\"", &flags(&["a=h:1"])).unwrap_err();
        assert!(e.to_string().contains("`auth`"), "{e}");
        let e = Config::from_toml(
            "[[backends]]\nname=\"a\"\nhost=\"h\"\ntls=\"maybe\"",
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("backends[0].tls"), "{e}");
        let e = Config::from_toml("", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("backends"), "{e}");
        let e = Config::from_toml("", &flags(&["nope"])).unwrap_err();
        assert!(e.to_string().contains("--backend"), "{e}");
        let e = Config::from_toml("shutdown_timeout = \"soon\"", &flags(&["a=h:1"])).unwrap_err();
        assert!(e.to_string().contains("shutdown_timeout"), "{e}");
        let e = Config::from_toml(
            "[[users]]\nname=\"u\"\nscram_secret=\"x\"",
            &flags(&["a=h:1"]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("users[0].scram_secret"), "{e}");
    }

    #[test]
    fn busy_poll_is_a_short_duration() {
        let a = flags(&["a=h:1"]);
        let c = Config::from_toml("", &a).unwrap();
        assert_eq!(c.busy_poll, Duration::from_micros(200));
        let c = Config::from_toml("busy_poll = \"50us\"", &a).unwrap();
        assert_eq!(c.busy_poll, Duration::from_micros(50));
        let c = Config::from_toml("busy_poll = \"0\"", &a).unwrap();
        assert_eq!(c.busy_poll, Duration::ZERO);
        for bad in ["\"2ms\"", "\"5us\"", "\"fast\"", "\"-1us\""] {
            let e = Config::from_toml(&format!("busy_poll = {bad}"), &a).unwrap_err();
            assert!(e.to_string().contains("`busy_poll`"), "{e}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Config::from_toml(
            "[[users]]\nname=\"u\"\npassword=\"hunter2\"",
            &flags(&["a=h:1"]),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn the_example_file_is_valid() {
        let text = include_str!("../../examples/pgbaton.toml");
        let c = Config::from_toml(text, &Overrides::default()).unwrap();
        assert!(c.backends.len() >= 2);
    }
}
