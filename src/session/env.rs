//! What every session of one proxy shares: the configuration of the moment,
//! the routing, the TLS set-up of both directions, client secrets, memory
//! and admission limits, the cancel and session registries, counters and
//! the moves' shared state. The proxy builds one and passes it down as an
//! `Arc`; there are no globals, so one process can run several proxies
//! (tests do).

use super::admission::Admission;
use super::budget::MemoryBudget;
use super::registry::SessionRegistry;
use crate::auth::scram::StoredSecret;
use crate::cancel::CancelRegistry;
use crate::cluster::plans::Plans;
use crate::config::Config;
use crate::migration::moves::{MoveEnv, Moves};
use crate::net::busy_poll::BusyPoll;
use crate::net::tls::{self, TlsError};
use crate::routing::{Routing, RoutingTable};
use crate::server::Connectors;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

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

/// Session ids, unique across a fleet: the replica's node number in the
/// top 16 bits, a counter from 1 below. A single proxy is node 0, so its
/// ids are 1, 2, 3, ...
#[derive(Debug)]
pub struct SessionIds {
    node: u16,
    next: AtomicU64,
}

impl SessionIds {
    pub const NODE_SHIFT: u32 = 48;

    pub fn new(node: u16) -> SessionIds {
        SessionIds {
            node,
            next: AtomicU64::new(1),
        }
    }

    pub fn next(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed) & ((1 << Self::NODE_SHIFT) - 1);
        (u64::from(self.node) << Self::NODE_SHIFT) | n
    }
}

pub struct Env {
    config: RwLock<Arc<Config>>,
    pub routing: RoutingTable,
    pub tls_acceptor: Option<TlsAcceptor>,
    pub connectors: Arc<Connectors>,
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
    pub ids: SessionIds,
    pub moves: Arc<Moves>,
    /// The runtime's busy polling: every socket a session opens is watched.
    pub busy_poll: BusyPoll,
    /// The fleet's routing and plans: fleet-wide moves are proposed here.
    pub plans: Plans,
    /// Client addresses of the other replicas by number, for cancels of
    /// their sessions.
    pub peers: RwLock<HashMap<u8, String>>,
}

impl Env {
    /// The environment of a proxy that is node `node` of its fleet (0 when
    /// it runs alone).
    pub fn new(
        config: Config,
        node: u8,
        busy_poll: BusyPoll,
        plans: Plans,
    ) -> Result<Env, TlsError> {
        let tls_acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let connectors = Arc::new(Connectors::new(&config.backends)?);
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
        Ok(Env {
            routing: RoutingTable::new(Routing::from_config(&config)),
            client_memory,
            admission: Default::default(),
            config: RwLock::new(Arc::new(config)),
            tls_acceptor,
            connectors,
            secrets,
            mock_nonce: rand::random(),
            mock_iterations,
            cancel: CancelRegistry::new(node),
            sessions: SessionRegistry::default(),
            stats: Stats::default(),
            ids: SessionIds::new(node.into()),
            moves: Arc::new(Moves::default()),
            busy_poll,
            plans,
            peers: RwLock::default(),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration (RELOAD). New backends get their TLS
    /// connector; sessions keep the server they have. Routing is changed
    /// apart, through [`Env::routing`].
    pub fn set_config(&self, config: Config) -> Result<(), TlsError> {
        for b in &config.backends {
            self.connectors.add(b)?;
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// What a move needs, as of now.
    pub fn move_env(&self) -> MoveEnv {
        MoveEnv {
            config: self.config(),
            connectors: self.connectors.clone(),
            moves: self.moves.clone(),
            busy_poll: self.busy_poll.clone(),
        }
    }
}
