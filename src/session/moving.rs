//! A session's moves: starting one (pre-staging runs in its own task while
//! the client goes on), feeding its state machine the session's events,
//! running its cutover on the session's parts within the cutover budget,
//! and answering whoever asked.

use super::relay::{Relay, RelayCtx, RelayEnd};
use crate::cancel::CancelTarget;
use crate::config::OnTimeout;
use crate::ledger::in_flight::CopyState;
use crate::migration::cutover::{cutover, CutOver, Parts, Who};
use crate::migration::history::Status;
use crate::migration::retire::retire;
use crate::migration::stage::{Event, Move, MoveState, Reply, Step};
use crate::migration::target::{stage, Staged};
use crate::migration::turn::CutoverTurn;
use crate::migration::{MoveError, MoveOutcome, MoveRequest};
use crate::server::ServerSide;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

const SOURCE_LOST: &str =
    "pgbaton: the server connection failed during a move; the session cannot continue";

/// Notifications from servers the session just left, while they drain.
#[derive(Default)]
pub(crate) struct LateNotices {
    rx: Option<mpsc::UnboundedReceiver<Bytes>>,
    /// The senders' side, weak so the channel closes when the last drain
    /// ends; a second move during a drain joins the same channel.
    tx: Option<mpsc::WeakUnboundedSender<Bytes>>,
}

impl LateNotices {
    pub(crate) fn is_open(&self) -> bool {
        self.rx.is_some()
    }

    /// The next late notification; `None` once every old server is
    /// drained. Cancel-safe, as `recv` is.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    pub(crate) fn close(&mut self) {
        self.rx = None;
        self.tx = None;
    }

    /// A sender for one more draining server.
    fn sender(&mut self) -> mpsc::UnboundedSender<Bytes> {
        let live = self.tx.as_ref().and_then(|w| w.upgrade());
        match live.filter(|_| self.rx.is_some()) {
            Some(tx) => tx,
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.tx = Some(tx.downgrade());
                self.rx = Some(rx);
                tx
            }
        }
    }
}

impl Relay {
    /// Starts a move: pre-staging runs in its own task while the client goes
    /// on. Errors found without a safe point are answered at once.
    pub(crate) fn start_move(&mut self, request: MoveRequest, reply: Reply) {
        let Some(ctx) = self.ctx.clone() else {
            return self.answer_move(reply, Err(MoveError::Ended), None);
        };
        // What is wrong with the request itself first, then whether this
        // session can take it now.
        let routing = ctx.env.routing.current();
        let Some(target) = routing.backend(&request.target).cloned() else {
            return self.answer_move(
                reply,
                Err(MoveError::UnknownBackend(request.target.clone())),
                None,
            );
        };
        if target.name == self.server.backend.name {
            return self.answer_move(reply, Err(MoveError::AlreadyThere(target.name)), None);
        }
        if !self.moving.is_idle() {
            return self.answer_move(reply, Err(MoveError::Busy), None);
        }
        let env = ctx.env.move_env();
        let record = env.moves.history.start(
            ctx.id,
            &self.server.backend.name,
            &target.name,
            request.dry_run,
        );
        let staging = stage(
            env.clone(),
            &self.ledger,
            (self.server.backend.clone(), target),
            &ctx.user,
        );
        let task = tokio::spawn(staging);
        let now = Instant::now();
        info!(target = %request.target, origin = request.origin.as_str(), dry_run = request.dry_run, "move requested");
        let m = Move {
            deadline: now + request.wait,
            request,
            record,
            started: now,
            reply,
            env,
        };
        self.moving = MoveState::PreStaging(m, task);
        self.publish_move();
    }

    /// Feeds the move's state machine one event and does what it says,
    /// except a cutover, which only [`Relay::step_move`] runs.
    pub(crate) fn move_event(&mut self, event: Event) {
        let (next, step) = self.moving.take().on(event);
        self.moving = next;
        self.publish_move();
        match step {
            Step::Nothing => {}
            Step::Finish(m, result) => self.finish_move(m, result),
            Step::Cutover(m, ..) => {
                // Not reachable from an event other than `SafePoint`.
                self.finish_move(m, Err(MoveError::Ended));
            }
        }
    }

    /// The move's step at the top of the loop: queue for a turn at a safe
    /// point, give a turn back when the client moved on, run the cutover
    /// with the turn at a safe point.
    pub(super) async fn step_move(&mut self) {
        let safe = self.flow.server_open && self.at_safe_point();
        let (next, step) = self.moving.take().on(Event::SafePoint(safe));
        self.moving = next;
        self.publish_move();
        match step {
            Step::Nothing => {}
            Step::Finish(m, result) => self.finish_move(m, result),
            Step::Cutover(m, staged, turn) => self.run_cutover(m, *staged, turn).await,
        }
    }

    /// Shows where the move is in SHOW SESSIONS (a lock only on change).
    fn publish_move(&self) {
        let Some(entry) = &self.entry else { return };
        let now = (!self.moving.is_idle()).then(|| self.moving.name());
        if entry.live_moving() != now {
            entry.update(|live| live.moving = now);
        }
    }

    /// A pre-staged move at a safe point, with its turn: the pause, from
    /// reading the source's state to the swap, within `cutover_budget`.
    async fn run_cutover(&mut self, m: Move, staged: Staged, turn: CutoverTurn) {
        let Some(ctx) = self.ctx.clone() else {
            return self.finish_move(m, Err(MoveError::Ended));
        };
        let turn = turn.gated().await;
        let budget = m.env.config.cutover_budget;
        let parts = Parts {
            server: &mut self.server,
            ledger: &mut self.ledger,
            to_client: &mut self.client.outbox,
        };
        let who = Who {
            session: ctx.id,
            user: &ctx.user,
        };
        let run = cutover(parts, staged, who, m.request.dry_run);
        let result = match tokio::time::timeout(budget, run).await {
            Ok(r) => r,
            // The cutover is dropped where it waited: the target goes, and
            // what the source still owes pgbaton's check is dropped as it
            // comes (`ServerSide::owed`).
            Err(_) => Err(MoveError::OverBudget(budget)),
        };
        drop(turn);
        match result {
            Ok(CutOver { outcome, old }) => {
                if let Some(old) = old {
                    self.after_swap(old, &ctx);
                }
                self.finish_move(m, Ok(outcome));
            }
            Err(e) => {
                let lost = matches!(e, MoveError::SourceLost(_)) || self.server.is_torn();
                self.finish_move(m, Err(e));
                if lost {
                    self.lose_server(
                        SOURCE_LOST,
                        RelayEnd::Io("source lost during a move".into()),
                    );
                }
            }
        }
    }

    /// The session is on its new server: cancels go there, SHOW SESSIONS
    /// says so, and the old server is retired, its late notifications
    /// still delivered.
    fn after_swap(&mut self, old: ServerSide, ctx: &RelayCtx) {
        let server = &self.server;
        ctx.env.cancel.update(
            ctx.cancel_key,
            CancelTarget {
                backend: server.backend.clone(),
                pid: server.pid,
                key: server.key,
            },
        );
        if let Some(entry) = &self.entry {
            let (name, pid) = (server.backend.name.clone(), server.pid);
            entry.update(|live| {
                live.backend = name;
                live.backend_pid = pid;
                live.migrations += 1;
            });
        }
        // The session span keeps the backend it started on (recording the
        // field again would repeat it in every line); moves are logged.
        let late = self.late.sender();
        retire(old, late, ctx.env.moves.move_gate.clone(), self.client.pid);
    }

    /// No safe point came in time: the move is aborted with the reason; a
    /// drain told to disconnect closes the session with 57P01.
    pub(super) fn on_move_deadline(&mut self) {
        let disconnect = self
            .moving
            .current()
            .is_some_and(|m| m.request.on_timeout == OnTimeout::Disconnect);
        let not_safe = self.not_safe_reason();
        self.move_event(Event::Deadline { not_safe });
        if disconnect {
            self.close_with_fatal(
                crate::protocol::SqlState::ADMIN_SHUTDOWN,
                "terminating connection because its server is being drained and the session could not move",
                RelayEnd::Shutdown,
            );
        }
    }

    /// Why the session is not at a safe point, for a timeout's reason.
    fn not_safe_reason(&self) -> String {
        let t = self.ledger.in_flight();
        if t.copy_state() != CopyState::None {
            "COPY in progress".into()
        } else if t.tx_status() != crate::protocol::backend::TxStatus::Idle {
            format!("open transaction (status {})", t.tx_status().as_char())
        } else if t.outstanding() > 0 || t.batch_open() || self.server.owed > 0 {
            "a request is in flight".into()
        } else {
            "the client is sending a message".into()
        }
    }

    /// Ends a move with `result`, answering whoever asked.
    pub(crate) fn finish_move(&mut self, m: Move, mut result: Result<MoveOutcome, MoveError>) {
        let total = m.started.elapsed();
        if let Ok(o) = &mut result {
            o.total = total;
        }
        // A dry run pauses nothing: it has no pause to show.
        let (status, reason, pause) = match &result {
            Ok(o) if o.dry_run => (Status::DryRun, Some(o.notice()), None),
            Ok(o) => (Status::Done, o.warning.clone(), Some(o.pause)),
            Err(e) if m.request.dry_run && e.is_verdict() => {
                (Status::DryRun, Some(format!("cannot move: {e}")), None)
            }
            Err(e) => (Status::Aborted, Some(e.to_string()), None),
        };
        let check = result.as_ref().ok().map(|o| o.full_check);
        m.env
            .moves
            .history
            .finish(m.record, status, reason, pause, total, check);
        match &result {
            Ok(o) => {
                if let Some(w) = &o.warning {
                    warn!(warning = %w, "move onto a copy while its source takes writes");
                }
                info!(from = %o.from, to = %o.to, pause_us = o.pause.as_micros() as u64, total_us = total.as_micros() as u64, dry_run = o.dry_run, "move done")
            }
            Err(e) => warn!(error = %e, "move aborted"),
        }
        self.answer_move(m.reply, result, Some(&m.request));
    }
}
