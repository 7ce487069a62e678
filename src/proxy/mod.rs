//! The proxy: binds the listener, accepts clients, spawns one session task
//! each, caps their number, and runs the graceful shutdown.

pub mod admission;
pub mod runtime;
pub mod shared;

pub use shared::Shared;

use crate::config::Config;
use crate::net::busy_poll;
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

    /// Re-reads the configuration file (SIGHUP); drains backends marked
    /// `draining`.
    pub fn reload(&self) -> Result<Vec<(String, usize)>, shared::ReloadError> {
        self.shared.reload()
    }
}

pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown_tx: Arc<watch::Sender<Option<Instant>>>,
}

impl Proxy {
    pub async fn bind(config: Config) -> Result<Proxy, ProxyError> {
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Bind { addr, source })?;
        let shared = Arc::new(Shared::new(config)?);
        let shutdown_tx = shared.shutdown_tx.clone();
        Ok(Proxy {
            shared,
            listener,
            shutdown_tx,
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
        // A new client ends a spin too, so it is accepted without delay.
        busy_poll::watch(&self.listener);
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
                    busy_poll::watch(&tcp);
                    // Taken here, in the order clients came, so the one
                    // that gives way is truly the oldest.
                    let ticket = self
                        .shared
                        .admission
                        .start(self.shared.config().max_startup_clients);
                    let shared = self.shared.clone();
                    let rx = self.shutdown_tx.subscribe();
                    let alive = alive.clone();
                    tokio::spawn(async move {
                        crate::session::serve(shared, tcp, peer, rx, ticket).await;
                        drop(alive);
                    });
                }
                _ = shutdown.changed() => {}
            }
        }
        drop(self.listener);
        info!("pgbaton stopped accepting; waiting for sessions to finish");
        drop(alive);
        let _ = all_ended.recv().await;
        info!("pgbaton stopped");
    }
}
