//! What every move of one proxy shares: how many pre-stage at once, the
//! gate that keeps cutovers apart from pre-staging, the queue for cutover
//! turns, the backends' identities, and the records SHOW MIGRATIONS shows.
//! [`MoveEnv`] hands a move these together with the configuration of the
//! moment and the backends' TLS set-up, so a move never reaches into a
//! session or the proxy for them.

use super::history::History;
use super::identity::Identity;
use crate::config::Config;
use crate::server::Connectors;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{RwLock, Semaphore};

pub struct Moves {
    /// Pre-stagings at once: a mass move must not open a thousand server
    /// connections (and forks) in the same instant. Each is CPU-bound in
    /// Postgres; on 2 cores, 4 and 6 moved 1000 sessions equally fast
    /// (8.5–9.3 s), 16 was slower with longer pauses.
    pub prestage_slots: Arc<Semaphore>,
    /// Cutovers take it exclusively; pre-stagings and the exits of old
    /// server connections share it. A cutover thus runs alone, never beside
    /// the forks and logins of pre-staging, which on 2 cores stretched the
    /// pause p99 of a 1000-session move from under 5 ms to over 20 ms.
    /// Waiting for it does not hold the client (it keeps working until its
    /// turn); only the cutover itself does. The lock is fair, so cutovers
    /// and pre-staging take turns.
    pub move_gate: Arc<RwLock<()>>,
    /// Cutovers queue here for their turn, one at a time, so that only the
    /// one holding it ever waits on `move_gate` (and bounds that wait).
    pub cutover_turn: Arc<tokio::sync::Mutex<()>>,
    identities: Mutex<HashMap<String, Identity>>,
    /// Moves, for SHOW MIGRATIONS.
    pub history: History,
}

impl Default for Moves {
    fn default() -> Moves {
        Moves {
            prestage_slots: Arc::new(Semaphore::new(4)),
            move_gate: Arc::new(RwLock::new(())),
            cutover_turn: Arc::new(tokio::sync::Mutex::new(())),
            identities: Mutex::default(),
            history: History::default(),
        }
    }
}

impl Moves {
    pub fn identity(&self, backend: &str) -> Option<Identity> {
        self.lock().get(backend).cloned()
    }

    pub fn remember_identity(&self, backend: &str, id: Identity) {
        self.lock().insert(backend.to_string(), id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Identity>> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Everything a move needs from outside the session it moves.
#[derive(Clone)]
pub struct MoveEnv {
    pub config: Arc<Config>,
    pub connectors: Arc<Connectors>,
    pub moves: Arc<Moves>,
    pub busy_poll: crate::net::busy_poll::BusyPoll,
}

impl MoveEnv {
    /// Connects and logs in to `backend` with the session's startup
    /// parameters and pgbaton's password for `user`.
    pub async fn connect(
        &self,
        backend: &crate::config::Backend,
        params: &[crate::protocol::startup::StartupParam],
        user: &str,
    ) -> Result<crate::server::ServerConn, crate::server::ServerError> {
        let connector = self.connectors.get(&backend.name);
        crate::server::connect_server(
            &self.config,
            backend,
            connector.as_ref(),
            params,
            user,
            &self.busy_poll,
        )
        .await
    }
}
