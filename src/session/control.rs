//! Requests from outside the session task (admin console, moves) and the
//! live snapshot the session publishes for SHOW SESSIONS.

use super::registry::{CheckReport, Control, LedgerSnapshot, SessionState};
use super::relay::Relay;
use crate::ledger::check::differences;
use crate::migration::stage::Reply;
use crate::server::check::{CheckError, Listeners};
use tokio::sync::mpsc;

impl Relay {
    /// Publishes state, transaction status and ledger summary when they
    /// changed (a lock only on change, not per message).
    pub(super) fn publish(&mut self) {
        let Some(entry) = &self.entry else { return };
        let state = if self.ledger.in_flight().is_quiet() {
            SessionState::Idle
        } else {
            SessionState::Active
        };
        let now = (
            state,
            self.ledger.in_flight().tx_status().as_char(),
            self.ledger.version(),
        );
        if now != self.published {
            let summary = if now.2 != self.published.2 {
                Some(self.ledger.summary())
            } else {
                None
            };
            entry.update(|live| {
                live.state = now.0;
                live.tx_status = now.1;
                if let Some(s) = summary {
                    live.summary = s;
                }
            });
            self.published = now;
        }
    }

    pub(super) fn on_control(&mut self, cmd: Control) {
        match cmd {
            Control::Ledger(reply) => {
                let _ = reply.send(LedgerSnapshot {
                    rows: self.ledger.rows(),
                    summary: self.ledger.summary(),
                });
            }
            Control::Check(reply) => self.pending_checks.push(reply),
            Control::Migrate(request, reply) => self.start_move(request, Reply::Channel(reply)),
        }
    }

    /// Runs the server check for everyone waiting. Returns false when the
    /// connection can no longer be trusted and the session must end.
    pub(super) async fn run_checks(&mut self) -> bool {
        let to = Listeners {
            ledger: &mut self.ledger,
            to_client: &mut self.client.outbox,
        };
        let result = self
            .server
            .check(crate::ledger::check::Depth::Full, to)
            .await;
        let fatal = matches!(result, Err(ref e) if !matches!(e, CheckError::Server(_)));
        let report = result.map(|server| CheckReport {
            differences: differences(&self.ledger, &server),
            server,
        });
        for reply in self.pending_checks.drain(..) {
            let _ = reply.send(report.clone());
        }
        !fatal
    }
}

pub(super) async fn recv_control(control: &mut Option<mpsc::Receiver<Control>>) -> Option<Control> {
    match control {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
