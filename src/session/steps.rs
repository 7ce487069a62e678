//! What the relay does between reads, when the session allows it: answer a
//! held command comment, run a move's cutover, run state checks, and close for shutdown. Each step runs only at
//! the moment it is safe, so no client byte is lost or reordered.

use super::relay::{Phase, Relay, RelayEnd};
use crate::migration::stage::Stage;
use crate::migration::target::Staged;
use crate::migration::{MoveError, OnTimeout};
use tokio_postgres::error::SqlState;

const SOURCE_LOST: &str =
    "pgbaton: the server connection failed during a move; the session cannot continue";

impl Relay {
    /// Whether any step may have work: checked on every turn of the loop, so
    /// an ordinary session does not even enter the steps.
    pub(super) fn has_pending_steps(&self) -> bool {
        self.held.is_some()
            || self.reframe
            || self.moving.is_some()
            || self.cutover_turn.is_some()
            || !self.pending_checks.is_empty()
            || self.flow.drain_deadline.is_some()
    }

    pub(super) async fn safe_point_steps(&mut self) {
        if self.flow.phase != Phase::Running {
            return;
        }
        // A held command comment, once everything before it is answered.
        if self.held.is_some()
            && self.moving.is_none()
            && self.tracker.is_quiet()
            && self.to_server.is_empty()
        {
            self.process_held();
        }
        // Client bytes that arrived behind a command that is now answered.
        if self.held.is_none() && self.reframe && self.flow.client_open {
            self.reframe = false;
            let framed = self.frame_client();
            self.after_client_framed(framed);
        }
        if self.cutover_turn.is_some() && !(self.moving.is_some() && self.at_safe_point()) {
            // The client moved on while the turn came: let others go.
            self.cutover_turn = None;
        }
        let turn = self.cutover_turn.is_some() && self.flow.server_open && self.at_safe_point();
        if turn
            && matches!(&self.moving, Some(m) if matches!(m.stage, Stage::WaitingForSafePoint(_)))
        {
            self.run_cutover().await;
        }
        if self.flow.phase == Phase::Running
            && self.flow.server_open
            && !self.pending_checks.is_empty()
            && self.at_safe_point()
            && !self.run_checks().await
        {
            self.lose_server(
                "pgbaton: lost track of the server connection during a state check",
                RelayEnd::Io("server check failed".into()),
            );
        }
        if self.flow.phase == Phase::Running
            && self.flow.drain_deadline.is_some()
            && self.tracker.is_safe_point()
        {
            self.close_with_fatal(
                SqlState::ADMIN_SHUTDOWN.code(),
                "terminating connection because pgbaton is shutting down",
                RelayEnd::Shutdown,
            );
        }
    }

    /// Whether a move needs its cutover turn now: its target is ready and the session
    /// is at a safe point.
    pub(super) fn wants_cutover_turn(&self) -> bool {
        matches!(&self.moving, Some(m) if matches!(m.stage, Stage::WaitingForSafePoint(_)))
            && self.at_safe_point()
    }

    /// A pre-staged move at a safe point, with its turn: the pause, from
    /// reading the source's state to the swap.
    async fn run_cutover(&mut self) {
        let Some(mut m) = self.moving.take() else {
            self.cutover_turn = None;
            return;
        };
        let Stage::WaitingForSafePoint(staged) = std::mem::replace(&mut m.stage, Stage::Done)
        else {
            self.moving = Some(m);
            self.cutover_turn = None;
            return;
        };
        let result = self.cutover(*staged, m.request.dry_run).await;
        self.cutover_turn = None;
        let lost = matches!(result, Err(MoveError::SourceLost(_)));
        self.finish_move(m, result);
        if lost {
            self.lose_server(
                SOURCE_LOST,
                RelayEnd::Io("source lost during a move".into()),
            );
        }
    }

    /// Pre-staging finished: wait for a safe point, or give up.
    pub(super) fn on_prestaged(&mut self, r: Result<Staged, MoveError>) {
        match r {
            Ok(staged) => {
                if let Some(m) = &mut self.moving {
                    m.stage = Stage::WaitingForSafePoint(Box::new(staged));
                }
            }
            Err(e) => {
                if let Some(m) = self.moving.take() {
                    self.finish_move(m, Err(e));
                }
            }
        }
    }

    /// No safe point came in time: the move is aborted with the reason; a
    /// drain told to disconnect closes the session with 57P01.
    pub(super) fn on_move_deadline(&mut self) {
        let Some(m) = self.moving.take() else { return };
        if let Stage::PreStaging(h) = &m.stage {
            h.abort();
        }
        let reason = match m.stage {
            Stage::PreStaging(_) => "the target was not ready in time".to_string(),
            _ => self.not_safe_reason(),
        };
        let disconnect = m.request.on_timeout == OnTimeout::Disconnect;
        let wait = m.request.wait;
        self.finish_move(m, Err(MoveError::NoSafePoint { wait, reason }));
        if disconnect {
            self.close_with_fatal(
                SqlState::ADMIN_SHUTDOWN.code(),
                "terminating connection because its server is being drained and the session could not move",
                RelayEnd::Shutdown,
            );
        }
    }
}
