//! The state machine of one move. Each stage holds exactly what it needs;
//! `Stage::name` is what SHOW MIGRATIONS and logs say.

use super::target::Staged;
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

pub enum Stage {
    /// Connecting to the target and replaying the ledger there.
    PreStaging(JoinHandle<Result<Staged, MoveError>>),
    /// The target is ready; waiting for the session to be idle.
    WaitingForSafePoint(Box<Staged>),
    /// Checked, replayed and verified, swapped or aborted: the outcome is
    /// being reported.
    Done,
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::PreStaging(_) => "pre-staging",
            Stage::WaitingForSafePoint(_) => "waiting for a safe point",
            Stage::Done => "done",
        }
    }
}

/// A move in progress on one session.
pub struct Move {
    pub request: MoveRequest,
    pub record: u64,
    pub started: Instant,
    pub deadline: Instant,
    pub stage: Stage,
    pub reply: Reply,
}
