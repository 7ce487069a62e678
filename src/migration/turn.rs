//! A session's turn to run its cutover: first the turn itself (cutovers go
//! one at a time, in the order they asked), then the gate held
//! exclusively, or, when pre-stagings keep it longer than [`GATE_WAIT`] (a
//! target slow to log in), without it, so one slow server never stalls the
//! moves to others.

use super::moves::Moves;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Held while a session may run its cutover.
pub struct CutoverTurn {
    _gate: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    gate: Arc<tokio::sync::RwLock<()>>,
}

/// Longest a cutover with its turn waits for the pre-stagings in flight
/// (normally a few milliseconds: a login and a replay).
const GATE_WAIT: Duration = Duration::from_millis(250);

/// The wait for a turn. Kept pinned by the move for as long as it waits:
/// a tokio `Mutex` serves its waiters in order, and a waiter dropped (by a
/// `select!` branch rebuilt on every turn of a loop) would lose its place.
pub type TurnWait = Pin<Box<dyn Future<Output = CutoverTurn> + Send>>;

/// Joins the queue for a cutover turn.
pub fn wait_for_turn(moves: &Moves) -> TurnWait {
    let (turn, gate) = (moves.cutover_turn.clone(), moves.move_gate.clone());
    Box::pin(take_turn(turn, gate))
}

async fn take_turn(
    turn: Arc<tokio::sync::Mutex<()>>,
    gate: Arc<tokio::sync::RwLock<()>>,
) -> CutoverTurn {
    CutoverTurn {
        _gate: None,
        _turn: turn.lock_owned().await,
        gate,
    }
}

impl CutoverTurn {
    /// Takes the gate too, at the safe point where the cutover runs: a
    /// session whose turn came while it was busy gives the turn back
    /// without ever holding the gate (which would stall every pre-staging
    /// for nothing).
    pub async fn gated(mut self) -> CutoverTurn {
        self._gate = tokio::time::timeout(GATE_WAIT, self.gate.clone().write_owned())
            .await
            .ok();
        self
    }
}
