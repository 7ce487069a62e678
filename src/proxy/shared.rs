//! State shared by every session of one proxy: configuration, TLS set-up,
//! client secrets, the cancel registry and counters. Passed down as an `Arc`;
//! there are no globals, so one process can run several proxies (tests do).

use super::admission::Admission;
use crate::auth::scram::StoredSecret;
use crate::cancel::CancelRegistry;
use crate::config::{Backend, Config};
use crate::migration::history::History;
use crate::migration::identity::Identity;
use crate::net::tls::{self, TlsError};
use crate::session::budget::MemoryBudget;
use crate::session::registry::SessionRegistry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Counters shown by SHOW STATS.
#[derive(Debug, Default)]
pub struct Stats {
    pub sessions_total: AtomicU64,
    pub sessions_active: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub cancels_forwarded: AtomicU64,
    pub server_connect_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Shared {
    config: RwLock<Arc<Config>>,
    pub tls_acceptor: Option<TlsAcceptor>,
    connectors: RwLock<HashMap<String, Option<TlsConnector>>>,
    /// SCRAM secrets of configured users, derived once at start.
    pub secrets: HashMap<String, StoredSecret>,
    /// Salts the mock secrets of unknown users (see `StoredSecret::mock`).
    pub mock_nonce: [u8; 32],
    /// The iteration count of mock secrets: most configured users'.
    pub mock_iterations: u32,
    /// Client bytes held across sessions (`max_client_memory`, fixed at
    /// start).
    pub client_memory: Arc<MemoryBudget>,
    /// Clients starting up and authenticated, against their limits.
    pub admission: Arc<Admission>,
    pub cancel: CancelRegistry,
    pub sessions: SessionRegistry,
    pub stats: Stats,
    next_session: AtomicU64,
    unreachable: std::sync::Mutex<std::collections::HashSet<String>>,
    identities: std::sync::Mutex<HashMap<String, Identity>>,
    /// Moves, for SHOW MIGRATIONS.
    pub history: History,
    /// Where the configuration came from, for RELOAD and SIGHUP.
    source: std::sync::Mutex<Option<(std::path::PathBuf, crate::config::Overrides)>>,
    /// Pre-stagings at once: a mass move must not open a thousand server
    /// connections (and forks) in the same instant. Each is CPU-bound in
    /// Postgres; on 2 cores, 4 and 6 moved 1000 sessions equally fast
    /// (8.5–9.3 s), 16 was slower with longer pauses.
    pub prestage_slots: Arc<tokio::sync::Semaphore>,
    /// Cutovers take it exclusively; pre-stagings and the exits of old
    /// server connections share it. A cutover thus runs alone, never beside
    /// the forks and logins of pre-staging, which on 2 cores stretched the
    /// pause p99 of a 1000-session move from under 5 ms to over 20 ms.
    /// Waiting for it does not hold the client (it keeps working until its
    /// turn); only the cutover itself does. The lock is fair, so cutovers
    /// and pre-staging take turns.
    pub move_gate: Arc<tokio::sync::RwLock<()>>,
    /// Cutovers queue here for their turn, one at a time, so that only the
    /// one holding it ever waits on `move_gate` (and bounds that wait).
    pub cutover_turn: Arc<tokio::sync::Mutex<()>>,
    /// Carries the drain deadline once the proxy is stopping.
    pub(crate) shutdown_tx: Arc<tokio::sync::watch::Sender<Option<tokio::time::Instant>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("pgbaton was started without --config: there is no file to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Move(#[from] crate::migration::MoveError),
}

impl Shared {
    pub fn new(config: Config) -> Result<Shared, TlsError> {
        let tls_acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let mut connectors = HashMap::new();
        for b in &config.backends {
            connectors.insert(b.name.clone(), tls::connector(b)?);
        }
        let secrets: HashMap<String, StoredSecret> = config
            .users
            .iter()
            .filter_map(|u| {
                let secret = match (&u.scram_secret, &u.password) {
                    (Some(s), _) => StoredSecret::parse(s.expose())?,
                    (None, Some(p)) => StoredSecret::generate(p.expose().as_bytes()),
                    (None, None) => return None,
                };
                Some((u.name.clone(), secret))
            })
            .collect();
        let client_memory = MemoryBudget::new(config.max_client_memory);
        let mock_iterations = crate::auth::scram::usual_iterations(secrets.values());
        Ok(Shared {
            client_memory,
            admission: Default::default(),
            config: RwLock::new(Arc::new(config)),
            tls_acceptor,
            connectors: RwLock::new(connectors),
            secrets,
            mock_nonce: rand::random(),
            mock_iterations,
            cancel: CancelRegistry::default(),
            sessions: SessionRegistry::default(),
            stats: Stats::default(),
            next_session: AtomicU64::new(1),
            unreachable: Default::default(),
            identities: Default::default(),
            history: History::default(),
            source: Default::default(),
            prestage_slots: Arc::new(tokio::sync::Semaphore::new(4)),
            move_gate: Arc::new(tokio::sync::RwLock::new(())),
            cutover_turn: Arc::new(tokio::sync::Mutex::new(())),
            shutdown_tx: Arc::new(tokio::sync::watch::channel(None).0),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn connector(&self, backend: &str) -> Option<TlsConnector> {
        self.connectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(backend)
            .cloned()
            .flatten()
    }

    /// `ok`, or `unreachable` when the last attempt to log in to it failed
    /// for a reason on the server's side of the network.
    pub fn backend_status(&self, backend: &str) -> &'static str {
        if self
            .unreachable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(backend)
        {
            "unreachable"
        } else {
            "ok"
        }
    }

    pub fn note_backend_reachable(&self, backend: &str, reachable: bool) {
        let mut set = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        if reachable {
            set.remove(backend);
        } else {
            set.insert(backend.to_string());
        }
    }

    pub fn identity_cache(&self, backend: &str) -> Option<Identity> {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(backend)
            .cloned()
    }

    pub fn remember_identity(&self, backend: &str, id: Identity) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(backend.to_string(), id);
    }

    /// Replaces the configuration (RELOAD, SCALE OUT). New backends get
    /// their TLS connector; sessions keep the server they have.
    pub fn set_config(&self, config: Config) -> Result<(), TlsError> {
        let mut connectors = self.connectors.write().unwrap_or_else(|p| p.into_inner());
        for b in &config.backends {
            if !connectors.contains_key(&b.name) {
                connectors.insert(b.name.clone(), tls::connector(b)?);
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// Makes `name` the default for new sessions (first in the list),
    /// adding it when it is new.
    pub fn make_default(&self, backend: Backend) -> Result<(), TlsError> {
        let mut config = (*self.config()).clone();
        config.backends.retain(|b| b.name != backend.name);
        config.backends.insert(0, backend);
        self.set_config(config)
    }

    /// Remembers the file and flags the configuration came from.
    pub fn set_source(&self, path: std::path::PathBuf, overrides: crate::config::Overrides) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some((path, overrides));
    }

    /// Re-reads the configuration and starts draining every backend marked
    /// `draining`. Returns each drained backend with the moves started. The
    /// listen address and TLS files are read at start only.
    pub fn reload(self: &Arc<Self>) -> Result<Vec<(String, usize)>, ReloadError> {
        let (path, overrides) = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NoFile)?;
        let mut config = Config::load(Some(&path), &overrides)?;
        let old = self.config();
        config.listen = old.listen;
        self.set_config(config)?;
        let config = self.config();
        let to = config.default_backend().name.clone();
        let mut drained = Vec::new();
        for b in config.backends.iter().filter(|b| b.draining) {
            let n = crate::migration::fleet::move_all(
                self,
                Some(&b.name),
                &to,
                crate::migration::Origin::Drain,
                None,
            )?;
            tracing::info!(backend = %b.name, sessions = n, to = %to, "draining");
            drained.push((b.name.clone(), n));
        }
        Ok(drained)
    }

    /// Starts the graceful shutdown (SIGTERM, SHUTDOWN).
    pub fn request_shutdown(&self) {
        let deadline = tokio::time::Instant::now() + self.config().shutdown_timeout;
        self.shutdown_tx.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
