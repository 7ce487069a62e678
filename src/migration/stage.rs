//! The state machine of one session's move: one enum of its states and one
//! transition function, [`MoveState::on`]. Each state holds exactly what it
//! needs; what the session must do (run the cutover, answer whoever asked)
//! comes back as a [`Step`]. `MoveState::name` is what logs say.
//!
//! ```text
//! Idle ──request──▶ PreStaging ──staged──▶ Staged ──safe point──▶ Queued
//!                       │                    ▲  │                   │
//!                       │                    │  └────────┐      turn came
//!                       │              left the safe     │          ▼
//!                       │              point with turn   │        Turn ──safe point──▶ Step::Cutover
//!                       ▼                    └───────────┼──────────┘
//!              Step::Finish (error, deadline, session ended: from any state)
//! ```

use super::moves::MoveEnv;
use super::target::Staged;
use super::turn::{wait_for_turn, CutoverTurn, TurnWait};
use super::{MoveError, MoveOutcome, MoveRequest};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where an answer goes: an admin command's channel, or the client itself
/// (the comment form, answered by the relay).
pub enum Reply {
    Channel(oneshot::Sender<Result<MoveOutcome, MoveError>>),
    Client { has_statement: bool },
}

/// A move in progress on one session: who asked, and for what.
pub struct Move {
    pub request: MoveRequest,
    pub record: u64,
    pub started: Instant,
    pub deadline: Instant,
    pub reply: Reply,
    pub env: MoveEnv,
}

#[derive(Default)]
pub enum MoveState {
    #[default]
    Idle,
    /// Connecting to the target and replaying the ledger there.
    PreStaging(Move, JoinHandle<Result<Staged, MoveError>>),
    /// The target is ready; waiting for the session to be at a safe point.
    Staged(Move, Box<Staged>),
    /// At a safe point, in the queue for a cutover turn. The wait is kept
    /// here, so the place in the queue survives whatever else the session
    /// does meanwhile.
    Queued(Move, Box<Staged>, TurnWait),
    /// Has its turn: the cutover runs as soon as the session is at a safe
    /// point (at once, unless the client sent something meanwhile).
    Turn(Move, Box<Staged>, CutoverTurn),
}

/// What happened to a session that has a move.
pub enum Event {
    Prestaged(Result<Box<Staged>, MoveError>),
    /// The session is at a safe point (true) or not.
    SafePoint(bool),
    TurnCame(CutoverTurn),
    /// The move's deadline passed; `not_safe` says why no safe point came.
    Deadline {
        not_safe: String,
    },
    /// The session is ending.
    Ended,
}

/// What the session does next.
pub enum Step {
    Nothing,
    /// Run the cutover now: the session is at a safe point with its turn.
    Cutover(Move, Box<Staged>, CutoverTurn),
    /// The move is over: answer with this.
    Finish(Move, Result<MoveOutcome, MoveError>),
}

impl MoveState {
    pub fn name(&self) -> &'static str {
        match self {
            MoveState::Idle => "idle",
            MoveState::PreStaging(..) => "pre-staging",
            MoveState::Staged(..) => "waiting for a safe point",
            MoveState::Queued(..) => "waiting for its cutover turn",
            MoveState::Turn(..) => "has its cutover turn",
        }
    }

    pub fn is_idle(&self) -> bool {
        matches!(self, MoveState::Idle)
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.current().map(|m| m.deadline)
    }

    pub fn current(&self) -> Option<&Move> {
        match self {
            MoveState::Idle => None,
            MoveState::PreStaging(m, _)
            | MoveState::Staged(m, _)
            | MoveState::Queued(m, _, _)
            | MoveState::Turn(m, _, _) => Some(m),
        }
    }

    /// The one transition function.
    pub fn on(self, event: Event) -> (MoveState, Step) {
        use MoveState as S;
        match (self, event) {
            (S::Idle, _) => (S::Idle, Step::Nothing),
            (S::PreStaging(m, task), Event::Deadline { .. }) => {
                task.abort();
                let e = MoveError::NoSafePoint {
                    wait: m.request.wait,
                    reason: "the target was not ready in time".into(),
                };
                (S::Idle, Step::Finish(m, Err(e)))
            }
            (S::PreStaging(m, task), Event::Ended) => {
                task.abort();
                (S::Idle, Step::Finish(m, Err(MoveError::Ended)))
            }
            (S::PreStaging(m, _), Event::Prestaged(Ok(staged))) => {
                (S::Staged(m, staged), Step::Nothing)
            }
            (S::PreStaging(m, _), Event::Prestaged(Err(e))) => (S::Idle, Step::Finish(m, Err(e))),
            (s @ S::PreStaging(..), _) => (s, Step::Nothing),
            (S::Staged(m, _) | S::Queued(m, _, _) | S::Turn(m, _, _), Event::Ended) => {
                (S::Idle, Step::Finish(m, Err(MoveError::Ended)))
            }
            (
                S::Staged(m, _) | S::Queued(m, _, _) | S::Turn(m, _, _),
                Event::Deadline { not_safe },
            ) => {
                let e = MoveError::NoSafePoint {
                    wait: m.request.wait,
                    reason: not_safe,
                };
                (S::Idle, Step::Finish(m, Err(e)))
            }
            (S::Staged(m, staged), Event::SafePoint(true)) => {
                let wait = wait_for_turn(&m.env.moves);
                (S::Queued(m, staged, wait), Step::Nothing)
            }
            (S::Queued(m, staged, _), Event::TurnCame(turn)) => {
                (S::Turn(m, staged, turn), Step::Nothing)
            }
            // The client moved on while the turn came: let others go, and
            // queue again at the next safe point.
            (S::Turn(m, staged, _), Event::SafePoint(false)) => {
                (S::Staged(m, staged), Step::Nothing)
            }
            (S::Turn(m, staged, turn), Event::SafePoint(true)) => {
                (S::Idle, Step::Cutover(m, staged, turn))
            }
            (s, _) => (s, Step::Nothing),
        }
    }

    /// Takes the state out, leaving `Idle`, to feed it an event.
    pub fn take(&mut self) -> MoveState {
        std::mem::take(self)
    }
}

/// Waits for what a move waits for on its own: its pre-staging task, or
/// its cutover turn. Cancel-safe: awaiting a `&mut JoinHandle` loses
/// nothing, and the wait for a turn stays pinned in the state, with its
/// place in the queue.
pub async fn next_event(state: &mut MoveState) -> Event {
    match state {
        MoveState::PreStaging(_, task) => Event::Prestaged(match task.await {
            Ok(r) => r.map(Box::new),
            Err(e) => Err(MoveError::Replay {
                backend: String::new(),
                message: format!("pre-staging task failed: {e}"),
            }),
        }),
        MoveState::Queued(_, _, wait) => Event::TurnCame(wait.as_mut().await),
        _ => std::future::pending().await,
    }
}

impl MoveState {
    /// Whether [`next_event`] has something to wait for.
    pub fn waits(&self) -> bool {
        matches!(self, MoveState::PreStaging(..) | MoveState::Queued(..))
    }
}
