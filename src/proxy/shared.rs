//! What the composition root holds beside the sessions' [`Env`]: where the
//! configuration came from (for RELOAD and SIGHUP) and the shutdown signal.
//! RELOAD changes the configuration here and proposes the routing.

use crate::cluster::plans::Draft;
use crate::cluster::records::MoveSpec;
use crate::config::Config;
use crate::net::busy_poll::BusyPoll;
use crate::net::tls::TlsError;
use crate::routing::Routing;
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
    #[error("RELOAD refused, nothing applied: {0}")]
    Refused(String),
    #[error("{message}")]
    Plan {
        code: crate::protocol::SqlState,
        message: String,
    },
}

/// What a RELOAD did.
#[derive(Debug)]
pub struct Reloaded {
    /// The plan it proposed, when the routing changed or backends drain.
    pub plan: Option<String>,
    /// Said when the plan is not decided yet.
    pub notice: Option<String>,
    /// Backends draining, with this replica's sessions on each.
    pub drained: Vec<(String, usize)>,
}

impl Shared {
    pub fn new(
        config: Config,
        busy_poll: BusyPoll,
        cluster: crate::cluster::Cluster,
    ) -> Result<Shared, TlsError> {
        Ok(Shared {
            env: Arc::new(Env::new(
                config,
                cluster.number,
                busy_poll,
                cluster.plans.clone(),
            )?),
            cluster,
            source: Default::default(),
            shutdown_tx: Arc::new(tokio::sync::watch::channel(None).0),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.env.config()
    }

    /// Remembers the file and flags the configuration came from.
    pub fn set_source(&self, path: std::path::PathBuf, overrides: crate::config::Overrides) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some((path, overrides));
    }

    /// Re-reads the configuration. The settings of this replica apply at
    /// once; its backend list is proposed to the fleet as a routing change
    /// (with the backends and default SCALE OUT set kept, see
    /// [`crate::routing`]), and backends marked `draining` get a plan that
    /// moves their sessions to the default. Refused, with nothing applied
    /// or written, when the file gives a backend another address or removes
    /// one that sessions run on. The listen address and TLS files are read
    /// at start only.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (path, overrides) = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(ReloadError::NoFile)?;
        let mut config = Config::load(Some(&path), &overrides)?;
        config.listen = self.env.config().listen;
        let current = self.env.routing.current();
        let next = current.reloaded(&config);
        let mut sessions = self.env.plans.state().sessions();
        let me = self.env.plans.me().to_string();
        for b in &current.backends {
            let here = self.env.sessions.count_on(&b.name);
            let list = sessions.entry(b.name.clone()).or_default();
            list.retain(|(node, _)| *node != me);
            list.push((me.clone(), here));
        }
        if let Some(why) = current.refuse(&next, &sessions) {
            return Err(ReloadError::Refused(why));
        }
        self.env.set_config(config)?;
        let changed = Routing {
            version: current.version,
            ..next.clone()
        } != *current;
        let drained: Vec<(String, usize)> = next
            .draining
            .iter()
            .map(|b| (b.clone(), self.env.sessions.count_on(b)))
            .collect();
        if !changed && drained.is_empty() {
            return Ok(Reloaded {
                plan: None,
                notice: None,
                drained,
            });
        }
        let moves = (!drained.is_empty()).then(|| MoveSpec {
            from: next.draining.iter().cloned().collect(),
            to: next.default.clone(),
            origin: "drain".into(),
            wait_ms: None,
        });
        let draft = Draft {
            id: self.env.plans.new_id(),
            what: match (&moves, changed) {
                (Some(m), _) => format!("RELOAD at {me}: drain {} to {}", m.from.join(", "), m.to),
                (None, _) => format!("RELOAD at {me}: routing change"),
            },
            routing_rev: current.version,
            routing: changed.then_some(next),
            moves,
        };
        let (plan, notice) = crate::session::fleet::propose(&self.env, draft)
            .await
            .map_err(|(code, message)| ReloadError::Plan { code, message })?;
        tracing::info!(plan = %plan, draining = ?drained, "reload proposed to the fleet");
        Ok(Reloaded {
            plan: Some(plan),
            notice,
            drained,
        })
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
