//! Running sessions, for the admin console and for moves: each session
//! registers an entry with what it is (user, database, client) and a live
//! snapshot (backend, state, ledger summary), plus a control channel into
//! its task.

use crate::ledger::check::ServerState;
use crate::ledger::view::{LedgerRow, LedgerSummary};
use crate::migration::{MoveError, MoveOutcome, MoveRequest};
use crate::server::check::CheckError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests a session task answers.
pub enum Control {
    /// The ledger as rows, at once.
    Ledger(oneshot::Sender<LedgerSnapshot>),
    /// Ask the server at the next safe point and compare with the ledger.
    Check(oneshot::Sender<Result<CheckReport, CheckError>>),
    /// Move the session.
    Migrate(MoveRequest, oneshot::Sender<Result<MoveOutcome, MoveError>>),
}

#[derive(Debug, Clone)]
pub struct LedgerSnapshot {
    pub rows: Vec<LedgerRow>,
    pub summary: LedgerSummary,
}

#[derive(Debug, Clone)]
pub struct CheckReport {
    pub server: ServerState,
    /// Where the ledger and the server disagree; empty when they agree.
    pub differences: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Nothing in flight.
    Idle,
    /// A request is being answered.
    Active,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Active => "active",
        }
    }
}

/// What changes while a session runs.
#[derive(Debug, Clone)]
pub struct Live {
    pub backend: String,
    pub backend_pid: i32,
    pub state: SessionState,
    pub tx_status: char,
    pub summary: LedgerSummary,
    pub migrations: u32,
    /// Where a move of the session is (`MoveState::name`), `None` when it
    /// has none.
    pub moving: Option<&'static str>,
}

pub struct SessionEntry {
    pub id: u64,
    pub client_pid: i32,
    pub user: String,
    pub database: String,
    pub client_addr: SocketAddr,
    live: Mutex<Live>,
    control: mpsc::Sender<Control>,
}

impl SessionEntry {
    pub fn new(
        id: u64,
        client_pid: i32,
        user: String,
        database: String,
        client_addr: SocketAddr,
        live: Live,
    ) -> (Arc<SessionEntry>, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(16);
        let entry = SessionEntry {
            id,
            client_pid,
            user,
            database,
            client_addr,
            live: Mutex::new(live),
            control: tx,
        };
        (Arc::new(entry), rx)
    }

    pub fn live(&self) -> Live {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The backend the session runs on now (cheaper than [`Self::live`]:
    /// the fleet's loops ask it of every session at every poll).
    pub fn backend(&self) -> String {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .backend
            .clone()
    }

    /// Where a move of the session is.
    pub fn live_moving(&self) -> Option<&'static str> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).moving
    }

    /// The session's `application_name` now (it may have SET another one
    /// since startup).
    pub fn application_name(&self) -> String {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary
            .application_name
            .clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Live)) {
        f(&mut self.live.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub async fn ledger(&self) -> Option<LedgerSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.control.send(Control::Ledger(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Moves the session; answers when the move is done or aborted.
    pub async fn migrate(&self, request: MoveRequest) -> Result<MoveOutcome, MoveError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Migrate(request, tx))
            .await
            .map_err(|_| MoveError::Ended)?;
        rx.await.unwrap_or(Err(MoveError::Ended))
    }

    /// Runs the server check at the session's next safe point.
    pub async fn check(&self, wait: Duration) -> Result<CheckReport, CheckError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Check(tx))
            .await
            .map_err(|_| CheckError::Ended)?;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(CheckError::Ended),
            Err(_) => Err(CheckError::Timeout(wait)),
        }
    }
}

#[derive(Default)]
pub struct SessionRegistry {
    map: Mutex<BTreeMap<u64, Arc<SessionEntry>>>,
}

/// Removes its session from the registry when dropped.
pub struct Registration<'a> {
    registry: &'a SessionRegistry,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

impl SessionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<SessionEntry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, entry: Arc<SessionEntry>) -> Registration<'_> {
        let id = entry.id;
        self.lock().insert(id, entry);
        Registration { registry: self, id }
    }

    pub fn get(&self, id: u64) -> Option<Arc<SessionEntry>> {
        self.lock().get(&id).cloned()
    }

    /// All sessions, by id.
    pub fn list(&self) -> Vec<Arc<SessionEntry>> {
        self.lock().values().cloned().collect()
    }

    pub fn count_on(&self, backend: &str) -> usize {
        self.list()
            .iter()
            .filter(|e| e.backend() == backend)
            .count()
    }
}
