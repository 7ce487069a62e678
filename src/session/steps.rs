//! What the relay does between reads, when the session allows it: answer a
//! held command comment, step a move (queue for its turn, run its cutover),
//! run state checks, and close for shutdown. Each step runs only at the
//! moment it is safe, so no client byte is lost or reordered.

use super::relay::{Held, Phase, Relay, RelayEnd};
use crate::protocol::SqlState;

impl Relay {
    /// Whether any step may have work: checked on every turn of the loop, so
    /// an ordinary session does not even enter the steps.
    pub(super) fn has_pending_steps(&self) -> bool {
        !matches!(self.held, Held::Nothing)
            || !self.moving.is_idle()
            || !self.pending_checks.is_empty()
            || self.flow.drain_deadline.is_some()
    }

    pub(super) async fn safe_point_steps(&mut self) {
        if self.flow.phase != Phase::Running {
            return;
        }
        // A held command comment, once everything before it is answered.
        if matches!(self.held, Held::Command(_))
            && self.moving.is_idle()
            && self.ledger.in_flight().is_quiet()
            && self.server.outbox.is_empty()
            && self.server.owed == 0
        {
            self.process_held();
        }
        // Client bytes that arrived behind a command that is now answered.
        if matches!(self.held, Held::Answered) && self.flow.client_open {
            self.held = Held::Nothing;
            let framed = self.frame_client();
            self.after_client_framed(framed);
        }
        if !self.moving.is_idle() {
            self.step_move().await;
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
            && self.ledger.in_flight().is_safe_point()
            && self.server.owed == 0
            && self.flow.quiet_enough_to_close()
        {
            self.close_with_fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection because pgbaton is shutting down",
                RelayEnd::Shutdown,
            );
        }
    }
}
