//! What the composition root holds beside the sessions' [`Env`]: where the
//! configuration came from (for RELOAD and SIGHUP) and the shutdown signal.
//! RELOAD and SCALE OUT change the configuration and the routing here.

use crate::config::{Backend, Config};
use crate::net::busy_poll::BusyPoll;
use crate::net::tls::TlsError;
use crate::session::env::Env;
use std::sync::Arc;

pub struct Shared {
    pub env: Arc<Env>,
    /// This replica's membership and election (a fleet of one on the
    /// default in-memory store).
    pub cluster: crate::cluster::Cluster,
    /// Where the configuration came from, for RELOAD and SIGHUP.
    source: std::sync::Mutex<Option<(std::path::PathBuf, crate::config::Overrides)>>,
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
    pub fn new(
        config: Config,
        busy_poll: BusyPoll,
        cluster: crate::cluster::Cluster,
    ) -> Result<Shared, TlsError> {
        Ok(Shared {
            env: Arc::new(Env::new(config, 0, busy_poll)?),
            cluster,
            source: Default::default(),
            shutdown_tx: Arc::new(tokio::sync::watch::channel(None).0),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.env.config()
    }

    /// SCALE OUT: makes `backend` the default for new sessions, adding it
    /// when it is new.
    pub fn make_default(&self, backend: Backend) -> Result<(), TlsError> {
        self.env.connectors.add(&backend)?;
        let routing = self.env.routing.update(|r| r.scaled_out(backend));
        tracing::info!(default = %routing.default, version = routing.version, "routing changed");
        Ok(())
    }

    /// Remembers the file and flags the configuration came from.
    pub fn set_source(&self, path: std::path::PathBuf, overrides: crate::config::Overrides) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some((path, overrides));
    }

    /// Re-reads the configuration and starts draining every backend marked
    /// `draining`. Returns each drained backend with the moves started. The
    /// listen address and TLS files are read at start only. Backends and
    /// the default that SCALE OUT set stay (see [`crate::routing`]).
    pub fn reload(&self) -> Result<Vec<(String, usize)>, ReloadError> {
        let (path, overrides) = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NoFile)?;
        let mut config = Config::load(Some(&path), &overrides)?;
        config.listen = self.env.config().listen;
        self.env.set_config(config)?;
        let config = self.env.config();
        let routing = self.env.routing.update(|r| r.reloaded(&config));
        tracing::info!(default = %routing.default, version = routing.version, "routing changed");
        let to = routing.default.clone();
        let mut drained = Vec::new();
        for name in &routing.draining {
            let n = crate::session::fleet::move_all(
                &self.env,
                Some(name),
                &to,
                crate::migration::Origin::Drain,
                None,
            )?;
            tracing::info!(backend = %name, sessions = n, to = %to, "draining");
            drained.push((name.clone(), n));
        }
        Ok(drained)
    }

    /// Starts the graceful shutdown (SIGTERM, SHUTDOWN).
    pub fn request_shutdown(&self) {
        let deadline = tokio::time::Instant::now() + self.env.config().shutdown_timeout;
        self.shutdown_tx.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
    }
}
