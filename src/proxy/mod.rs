//! The proxy, the composition root: binds the listener, accepts clients,
//! spawns one session task each, hands clients of the admin console to the
//! console it was given, and runs RELOAD and the graceful shutdown.

mod fleet_sync;
pub mod runtime;
pub mod shared;

pub use shared::Shared;

use crate::session::{Console, ConsoleClient};
use std::future::Future;
use std::pin::Pin;

use crate::config::Config;
use crate::net::busy_poll::BusyPoll;
use crate::net::tls::TlsError;
use std::net::SocketAddr;
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Routing(crate::cluster::plans::PlanError),
}

/// Stops a running proxy: stop accepting, let sessions finish their
/// transaction until `shutdown_timeout`, then close them with 57P01.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }

    /// Re-reads the configuration file (SIGHUP); proposes its backends to
    /// the fleet and drains those marked `draining`.
    pub async fn reload(&self) -> Result<shared::Reloaded, shared::ReloadError> {
        self.shared.reload().await
    }
}

/// Serves one client of the admin console (the database `pgbaton`):
/// `admin::console`. Given to the proxy by whoever builds it, so that the
/// proxy does not depend on its console's commands.
pub type ConsoleFn = fn(
    Arc<Shared>,
    ConsoleClient,
    watch::Receiver<Option<Instant>>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown_tx: Arc<watch::Sender<Option<Instant>>>,
    console: ConsoleFn,
}

impl Proxy {
    /// Binds the listener. `busy_poll` is the runtime's (see
    /// [`runtime::build`]; `BusyPoll::off()` for a runtime without it).
    pub async fn bind(
        config: Config,
        console: ConsoleFn,
        busy_poll: BusyPoll,
    ) -> Result<Proxy, ProxyError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        // The listener's real address: with port 0 the node id and the
        // advertised address need the port the kernel chose.
        let local = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let cluster = crate::cluster::Cluster::start(&config.cluster, local).await?;
        let local = crate::routing::Routing::from_config(&config);
        let shared = Arc::new(Shared::new(config, busy_poll, cluster)?);
        // The fleet's routing, not this file's, is what sessions use; a
        // file that gives a backend of the fleet another address is
        // refused before this replica serves anyone.
        match shared.cluster.plans.seed(local).await {
            Ok((rev, routing)) => {
                for b in &routing.backends {
                    shared.env.connectors.add(b)?;
                }
                shared.env.routing.update(|_| routing);
                shared.cluster.plans.applied(rev);
            }
            Err(e @ crate::cluster::plans::PlanError::Routing(_)) => {
                shared.cluster.resign().await;
                return Err(ProxyError::Routing(e));
            }
            Err(e) => {
                warn!(error = %e, "serving on this replica's configured routing until the store answers");
            }
        }
        let shutdown_tx = shared.shutdown_tx.clone();
        Ok(Proxy {
            shared,
            listener,
            shutdown_tx,
            console,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until shut down through a [`ProxyHandle`], then waits for the
    /// sessions to end.
    pub async fn run(self) {
        // Every session task holds a sender: all dropped means all ended.
        let (alive, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
        let mut shutdown = self.shutdown_tx.subscribe();
        info!(listen = %self.local_addr(), "pgbaton accepting connections");
        let sync = tokio::spawn(fleet_sync::run(self.shared.clone()));
        // A new client ends a spin too, so it is accepted without delay.
        self.shared.env.busy_poll.watch(&self.listener);
        let console: Console = {
            let (shared, serve) = (self.shared.clone(), self.console);
            Arc::new(move |client, shutdown| serve(shared.clone(), client, shutdown))
        };
        loop {
            // Read on every turn, not only on a change: a shutdown requested
            // before this task first ran (a Ctrl-C right after start) is no
            // change to a receiver made after it, and would be missed.
            if shutdown.borrow_and_update().is_some() {
                break;
            }
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: keep serving the others.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    self.shared.env.busy_poll.watch(&tcp);
                    // Taken here, in the order clients came, so the one
                    // that gives way is truly the oldest.
                    let env = &self.shared.env;
                    let ticket = env.admission.start(env.config().max_startup_clients);
                    let env = env.clone();
                    let rx = self.shutdown_tx.subscribe();
                    let alive = alive.clone();
                    let console = console.clone();
                    tokio::spawn(async move {
                        crate::session::serve(env, tcp, peer, rx, ticket, console).await;
                        drop(alive);
                    });
                }
                _ = shutdown.changed() => {}
            }
        }
        drop(self.listener);
        sync.abort();
        // Leave the fleet first, so a successor is elected while this
        // replica's sessions finish.
        self.shared.cluster.resign().await;
        info!("pgbaton stopped accepting; waiting for sessions to finish");
        drop(alive);
        let _ = all_ended.recv().await;
        info!("pgbaton stopped");
    }
}
