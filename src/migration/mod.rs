//! Moving a live session to another server, as functions of the session's
//! parts: a move never reaches into a session, the session calls it.
//!
//! A move is one state machine ([`stage::MoveState`]): requested →
//! pre-staged (target connected, logged in with pgbaton's credentials,
//! ledger replayed, its state read back — all while the client keeps
//! working) → waiting for a safe point → queued for its cutover turn →
//! cut over: checked (the source's truth read, blockers refused), replayed
//! and verified (only if the source's truth differs from what was
//! pre-staged), swapped; or aborted with a reason, leaving the session on
//! its source untouched. The client is held only during the cutover, and
//! never longer than `cutover_budget`.
//!
//! - [`plan`]: what to replay and the batch that replays it.
//! - [`target`]: pre-staging a target connection.
//! - [`identity`]: cluster identity per backend (system identifier, version).
//! - [`stage`]: the state machine.
//! - [`turn`]: the queue for cutover turns.
//! - [`cutover`]: the safe-point part, on the session's parts.
//! - [`moves`]: what every move of a proxy shares.
//! - [`retire`]: the exit of the server a session left.
//! - [`history`]: the records SHOW MIGRATIONS shows.

pub mod cutover;
pub mod history;
pub mod identity;
pub mod moves;
pub mod plan;
pub mod retire;
pub mod stage;
pub mod target;
pub mod turn;

use crate::protocol::{ClientError, SqlState};
use std::time::Duration;
use thiserror::Error;

/// Default wait for a safe point.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Re-exported: a move's policy lives with the configuration that sets it.
pub use crate::config::OnTimeout;

/// Who asked for a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Comment,
    Admin,
    ScaleOut,
    Drain,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Comment => "comment",
            Origin::Admin => "admin",
            Origin::ScaleOut => "scale out",
            Origin::Drain => "drain",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MoveRequest {
    pub target: String,
    pub wait: Duration,
    pub dry_run: bool,
    pub on_timeout: OnTimeout,
    pub origin: Origin,
}

/// A finished move (or, for a dry run, the verdict that it would succeed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOutcome {
    pub session: u64,
    pub from: String,
    pub from_pid: i32,
    pub to: String,
    pub to_pid: i32,
    pub pause: Duration,
    pub total: Duration,
    pub dry_run: bool,
    /// The session's state was read from the server in full (not only the
    /// light check): temp objects, a change since pre-staging, differences,
    /// or a ledger that lost track of replies.
    pub full_check: bool,
    /// Said to whoever asked, with the outcome (a WARNING): the move is
    /// done, but something about it needs a person's attention.
    pub warning: Option<String>,
}

impl MoveOutcome {
    /// The NOTICE a client gets.
    pub fn notice(&self) -> String {
        if self.dry_run {
            format!(
                "pgbaton: session {} can move from {} (pid {}) to {}: dry run, nothing moved",
                self.session, self.from, self.from_pid, self.to
            )
        } else {
            format!(
                "pgbaton: session {} moved from {} (pid {}) to {} (pid {}), paused {:.3} ms",
                self.session,
                self.from,
                self.from_pid,
                self.to,
                self.to_pid,
                self.pause.as_secs_f64() * 1000.0
            )
        }
    }
}

#[derive(Debug, Clone, Error)]
pub enum MoveError {
    #[error("unknown backend \"{0}\": targets are configured backend names only")]
    UnknownBackend(String),
    #[error("session is already on backend \"{0}\"")]
    AlreadyThere(String),
    #[error("from and to both name backend \"{0}\": nothing would move")]
    SameBackend(String),
    #[error("session cannot move: {0}")]
    Pinned(String),
    #[error("no safe point within {wait:?}: {reason}")]
    NoSafePoint { wait: Duration, reason: String },
    #[error("a move of this session is already in progress")]
    Busy,
    #[error("target {backend}: {message}")]
    Target {
        backend: String,
        code: SqlState,
        message: String,
    },
    #[error("replay on target {backend} failed: {message}")]
    Replay { backend: String, message: String },
    #[error("target {backend} does not match the source after replay: {}", .differences.join("; "))]
    Verify {
        backend: String,
        differences: Vec<String>,
    },
    #[error("backends are different clusters: {0}")]
    Identity(String),
    #[error("the source server failed during the move: {0}")]
    SourceLost(String),
    #[error("{0}")]
    Permission(String),
    #[error("the session ended before the move")]
    Ended,
    #[error("the cutover took longer than its budget of {0:?} (cutover_budget); the session stays on its source")]
    OverBudget(Duration),
}

impl ClientError for MoveError {
    fn sqlstate(&self) -> SqlState {
        MoveError::sqlstate(self)
    }
}

impl MoveError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            MoveError::UnknownBackend(_) => SqlState::UNDEFINED_OBJECT,
            MoveError::SameBackend(_) => SqlState::INVALID_PARAMETER_VALUE,
            MoveError::Busy => SqlState::OBJECT_IN_USE,
            MoveError::Target { code, .. } => code.clone(),
            MoveError::SourceLost(_) | MoveError::Ended => SqlState::CONNECTION_FAILURE,
            MoveError::Permission(_) => SqlState::INSUFFICIENT_PRIVILEGE,
            _ => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    /// Whether this says the session cannot move there now (what a dry
    /// run is asked to find out), rather than that the request itself is
    /// wrong or the session is gone.
    pub fn is_verdict(&self) -> bool {
        matches!(
            self,
            MoveError::Pinned(_)
                | MoveError::NoSafePoint { .. }
                | MoveError::Target { .. }
                | MoveError::Replay { .. }
                | MoveError::Verify { .. }
                | MoveError::Identity(_)
                | MoveError::OverBudget(_)
        )
    }

    /// A dry run's answer when the move would fail.
    pub fn dry_run_notice(&self, session: u64, from: &str, to: &str) -> String {
        format!("pgbaton: session {session} cannot move from {from} to {to}: {self} (dry run, nothing moved)")
    }

    pub fn from_server(backend: &str, e: &crate::server::ServerError) -> MoveError {
        MoveError::Target {
            backend: backend.to_string(),
            code: e.sqlstate(),
            message: e.to_string(),
        }
    }
}
