//! The relay loop: one task moves bytes both ways between a client and its
//! current server connection.
//!
//! Reads and writes of both directions are separate `select!` branches, so a
//! client that pipelines without reading (libpq pipeline mode, pgbench) can
//! never deadlock against a server that is blocked writing results. Every
//! branch is cancel-safe: `read_buf` and `write` either complete or leave no
//! trace. A read is framed in place: complete messages go out as one frozen
//! slice of the read buffer; a large message that nobody needs to inspect
//! (DataRow, CopyData, ...) streams through in pieces without being buffered
//! whole. So the hot path costs one read and one write per batch, and no
//! per-message allocation or copy.

use super::client_side::ClientSide;
use super::control::recv_control;
use super::env::Env;
use super::moving::LateNotices;
use super::registry::{CheckReport, Control, SessionEntry, SessionState};
use crate::ledger::Ledger;
use crate::migration::stage::{next_event, MoveState};
use crate::net::{Outbox, Stream};
use crate::protocol::codec::FrameError;
use crate::protocol::{Said, SqlState};
use crate::server::check::CheckError;
use crate::server::ServerSide;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::watch;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 1 << 20;
/// How long a closing session may take to deliver its last bytes.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Why a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    /// Terminate, or the client closed its socket.
    ClientClosed,
    /// The server closed (after a FATAL, or unexpectedly).
    ServerClosed { fatal_forwarded: bool },
    /// The client sent something unframeable.
    ClientProtocolError(String),
    /// pgbaton is shutting down.
    Shutdown,
    /// A socket error on either side.
    Io(String),
    /// The client's buffered message would exceed `max_client_memory`.
    OverBudget,
}

/// A command comment on its way: held back until everything the client
/// sent before it is answered, then answered (the client's bytes behind
/// it wait in the inbox, unframed, until then).
#[derive(Default)]
pub(crate) enum Held {
    #[default]
    Nothing,
    /// The held Query or Parse.
    Command(Bytes),
    /// Answered: what arrived behind it is framed at the next step.
    Answered,
}

/// One session's relay: the client side, the server side and the session
/// state (the ledger), with what the loop itself needs. The session owns
/// it; a move replaces its server side at a safe point.
pub struct Relay {
    pub(crate) client: ClientSide,
    pub(crate) server: ServerSide,
    pub ledger: Ledger,
    pub(crate) max_message_size: usize,
    /// Requests from the admin console or a move; `None` when detached.
    pub(crate) control: Option<mpsc::Receiver<Control>>,
    /// Where the live snapshot of this session is published.
    pub(crate) entry: Option<Arc<SessionEntry>>,
    /// Who this session is, for moves; `None` in unit tests.
    pub(crate) ctx: Option<RelayCtx>,
    /// Errors of pgbaton's own Parses of deferred statements, held back to
    /// answer the statement of the running query that uses each.
    pub(crate) kept_errors: Vec<(String, Bytes)>,
    /// One timer for every deadline (drain, move, close), reset only when
    /// the nearest one changes.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
    pub(super) pending_checks: Vec<oneshot::Sender<Result<CheckReport, CheckError>>>,
    /// Last published (state, tx status, ledger version).
    pub(super) published: (SessionState, char, u64),
    pub(crate) moving: MoveState,
    pub(crate) held: Held,
    /// A statement refused without being read (it did not fit in memory):
    /// once skipped, a stand-in failing with this message goes in its place.
    pub(crate) refuse_with: Option<String>,
    /// After a refused command in a Parse: drop the client's batch up to its
    /// Sync and answer that Sync, as Postgres does after an error.
    pub(crate) discard_until_sync: bool,
    /// Where the loop is: running or closing, and why it ends.
    pub(crate) flow: Flow,
    /// Notifications from servers the session just left, while they drain.
    pub(crate) late: LateNotices,
}

/// The loop's own state.
pub(crate) struct Flow {
    pub(crate) phase: Phase,
    pub(crate) end: RelayEnd,
    pub(crate) client_open: bool,
    pub(crate) server_open: bool,
    /// A FATAL from the server reached the client (so its EOF needs no words).
    pub(crate) fatal_forwarded: bool,
    /// When a closing session stops waiting for its last bytes to go out.
    pub(crate) close_deadline: Instant,
    /// Once pgbaton is stopping: when sessions are closed regardless.
    pub(crate) drain_deadline: Option<Instant>,
    /// When the client last sent bytes: at shutdown an idle session is
    /// closed only once it has been quiet for [`SHUTDOWN_IDLE_GRACE`], or
    /// once a request it sent after the shutdown began is answered.
    pub(crate) last_client_read: Instant,
    /// When this session learned that pgbaton is stopping.
    pub(crate) drain_started: Option<Instant>,
}

impl Flow {
    /// At a shutdown's safe point: may the session be closed now? Yes once
    /// a request sent after the shutdown began is answered (the session is
    /// busy: close it between its transactions), or once it has been quiet
    /// for the grace.
    pub(crate) fn quiet_enough_to_close(&self) -> bool {
        self.drain_started
            .is_some_and(|started| self.last_client_read >= started)
            || self.last_client_read.elapsed() >= SHUTDOWN_IDLE_GRACE
    }
}

/// How long a session that has sent nothing since the shutdown began must
/// have been quiet before the shutdown closes it at a safe point. A client
/// that just logged in, or is between the statements of a burst, has its
/// next request served instead of a 57P01 crossing it on the wire: behind
/// a load balancer, a client that connects per transaction never sees a
/// replica's rolling restart. A session that sent a request after the
/// shutdown began is closed at the safe point after its answer, as before.
pub(crate) const SHUTDOWN_IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The session a relay serves, for moves.
#[derive(Clone)]
pub struct RelayCtx {
    pub env: Arc<Env>,
    pub id: u64,
    /// The user the client logged in as (startup `user`).
    pub user: String,
    /// The secret of its BackendKeyData, under which cancels are routed.
    pub cancel_key: i32,
}

/// Terminate, as sent to a server when pgbaton ends its session.
const TERMINATE: &[u8] = b"X\0\0\0\x04";

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Delivering the last queued bytes, then ending with the reason.
    Closing,
}

/// Which branches of the loop's `select!` may run this turn.
struct Wants {
    running: bool,
    read_client: bool,
    read_server: bool,
    write_server: bool,
    write_client: bool,
    draining: bool,
    move_waits: bool,
    timed: bool,
}

impl Relay {
    pub fn new(
        client: Stream,
        server: ServerSide,
        ledger: Ledger,
        max_message_size: usize,
    ) -> Relay {
        Relay {
            client: ClientSide::new(client, server.pid),
            server,
            ledger,
            max_message_size,
            kept_errors: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
            control: None,
            entry: None,
            pending_checks: Vec::new(),
            published: (SessionState::Idle, 'I', 0),
            ctx: None,
            moving: MoveState::Idle,
            held: Held::Nothing,
            refuse_with: None,
            discard_until_sync: false,
            flow: Flow {
                phase: Phase::Running,
                end: RelayEnd::ClientClosed,
                client_open: true,
                server_open: true,
                fatal_forwarded: false,
                close_deadline: Instant::now(),
                drain_deadline: None,
                last_client_read: Instant::now(),
                drain_started: None,
            },
            late: LateNotices::default(),
        }
    }

    /// Nothing in flight in either direction: the session can be paused,
    /// checked or moved without losing or reordering a byte.
    pub fn at_safe_point(&self) -> bool {
        self.ledger.in_flight().is_safe_point()
            && self.server.is_idle()
            // Bytes after a held command wait unframed: they come later.
            && (self.client.inbox.buf.is_empty() || matches!(self.held, Held::Command(_)))
            && self.client.inbox.streaming == 0
    }

    /// Relays until the session ends. `shutdown` carries the drain deadline
    /// once pgbaton is stopping.
    pub async fn run(&mut self, shutdown: &mut watch::Receiver<Option<Instant>>) -> RelayEnd {
        let end = self.run_inner(shutdown).await;
        self.move_event(crate::migration::stage::Event::Ended);
        end
    }

    /// What the loop may do this turn.
    fn wants(&mut self) -> Wants {
        let running = self.flow.phase == Phase::Running;
        let server_open = self.flow.server_open;
        Wants {
            running,
            read_client: self.flow.client_open
                && !matches!(self.held, Held::Command(_))
                && self.server.outbox.len() < HIGH_WATER,
            read_server: server_open && running && self.client.outbox.len() < HIGH_WATER,
            write_server: server_open && (!self.server.outbox.is_empty() || self.server.dirty),
            write_client: !self.client.outbox.is_empty() || self.client.dirty,
            draining: self.flow.drain_deadline.is_some(),
            move_waits: self.moving.waits(),
            timed: self.arm_timer(),
        }
    }

    async fn run_inner(&mut self, shutdown: &mut watch::Receiver<Option<Instant>>) -> RelayEnd {
        self.flow.drain_deadline = *shutdown.borrow();
        if self.flow.drain_deadline.is_some() {
            self.flow.drain_started = Some(Instant::now());
        }
        // Waits for the shutdown signal; one future for the whole session,
        // not a new waiter registered on every turn of the loop.
        let mut rx = shutdown.clone();
        let mut shutdown_signal = Box::pin(async move {
            loop {
                if rx.changed().await.is_err() {
                    // The proxy is gone: end now.
                    return Instant::now();
                }
                if let Some(deadline) = *rx.borrow() {
                    return deadline;
                }
            }
        });
        // Whatever the server sent with its first ReadyForQuery.
        if !self.server.inbox.buf.is_empty() {
            self.frame_server();
        }
        loop {
            if self.has_pending_steps() {
                self.safe_point_steps().await;
            }
            if self.flow.phase == Phase::Closing {
                self.flow.client_open = false;
                if !self.flow.server_open {
                    self.server.outbox.clear();
                }
                if self.client.outbox.is_empty() && self.server.outbox.is_empty() {
                    let _ = self.client.w.flush().await;
                    let _ = self.server.w.flush().await;
                    return self.flow.end.clone();
                }
            }
            if !self.make_room_for_client() {
                continue;
            }
            self.server.inbox.reserve();
            let w = self.wants();
            // Every branch is cancel-safe: reads and writes either complete
            // or leave no trace, and the waits for a pre-staging, a cutover
            // turn and the shutdown are futures kept across turns, polled
            // by reference.
            tokio::select! {
                r = self.client.r.read_buf(&mut self.client.inbox.buf), if w.read_client => self.on_client_read(r).await,
                r = self.server.r.read_buf(&mut self.server.inbox.buf), if w.read_server => self.on_server_read(r).await,
                cmd = recv_control(&mut self.control), if self.control.is_some() && w.running => match cmd {
                    Some(cmd) => self.on_control(cmd),
                    None => self.control = None,
                },
                r = pump(&mut self.server.w, &self.server.outbox), if w.write_server => match r {
                    Ok(n) if n > 0 => {
                        self.server.outbox.advance(n);
                        self.server.dirty = self.server.tls;
                    }
                    Ok(_) if self.server.outbox.is_empty() => self.server.dirty = false,
                    _ => {
                        self.flow.server_open = false;
                        self.close(RelayEnd::Io("write to server failed".into()));
                    }
                },
                r = pump(&mut self.client.w, &self.client.outbox), if w.write_client => match r {
                    Ok(n) if n > 0 => {
                        self.client.outbox.advance(n);
                        self.client.dirty = self.client.tls;
                    }
                    Ok(_) if self.client.outbox.is_empty() => self.client.dirty = false,
                    _ => return RelayEnd::Io("write to client failed".into()),
                },
                deadline = &mut shutdown_signal, if !w.draining && w.running => {
                    self.flow.drain_deadline = Some(deadline);
                    self.flow.drain_started = Some(Instant::now());
                },
                event = next_event(&mut self.moving), if w.move_waits && w.running => self.move_event(event),
                msg = self.late.recv(), if self.late.is_open() => match msg {
                    Some(msg) => self.client.outbox.push(msg),
                    // The old servers are drained: stop listening.
                    None => self.late.close(),
                },
                _ = &mut self.timer, if w.timed => {
                    self.timer_at = None;
                    if let Some(end) = self.on_deadlines() {
                        return end;
                    }
                },
            }
        }
    }

    async fn on_client_read(&mut self, r: std::io::Result<usize>) {
        let server_open = self.flow.server_open;
        match r {
            Ok(0) | Err(_) => {
                // Gone without Terminate: tell the server politely.
                self.flow.client_open = false;
                if server_open {
                    self.server.outbox.push(Bytes::from_static(TERMINATE));
                }
                self.close(RelayEnd::ClientClosed);
            }
            Ok(_) => {
                self.flow.last_client_read = Instant::now();
                let framed = self.frame_client();
                self.after_client_framed(framed);
                if server_open {
                    let s = &mut self.server;
                    write_now(&mut s.w, &mut s.outbox, &mut s.dirty, s.tls).await;
                }
            }
        }
    }

    async fn on_server_read(&mut self, r: std::io::Result<usize>) {
        match r {
            Ok(0) | Err(_) => {
                let fatal_forwarded = self.flow.fatal_forwarded;
                if !fatal_forwarded {
                    self.report(
                        SqlState::CONNECTION_FAILURE,
                        "pgbaton: the server closed the connection unexpectedly",
                    );
                }
                self.flow.server_open = false;
                self.close(RelayEnd::ServerClosed { fatal_forwarded });
            }
            Ok(_) => {
                self.frame_server();
                self.publish();
                let c = &mut self.client;
                write_now(&mut c.w, &mut c.outbox, &mut c.dirty, c.tls).await;
            }
        }
    }

    /// Points the timer at the nearest deadline; false when there is none.
    fn arm_timer(&mut self) -> bool {
        let running = self.flow.phase == Phase::Running;
        let next = if running {
            let drain = self.flow.drain_deadline.map(|d| {
                // The end of an idle session's grace, while still ahead (a
                // passed one would fire on every turn).
                let grace = self.flow.last_client_read + SHUTDOWN_IDLE_GRACE;
                if grace > Instant::now() {
                    d.min(grace)
                } else {
                    d
                }
            });
            let moving = self.moving.deadline();
            match (drain, moving) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            Some(self.flow.close_deadline)
        };
        if next != self.timer_at {
            if let Some(at) = next {
                self.timer.as_mut().reset(at);
            }
            self.timer_at = next;
        }
        next.is_some()
    }

    /// Handles whichever deadlines have passed; `Some` ends the relay.
    fn on_deadlines(&mut self) -> Option<RelayEnd> {
        let now = Instant::now();
        if self.flow.phase != Phase::Running {
            return (now >= self.flow.close_deadline).then(|| self.flow.end.clone());
        }
        if self.moving.deadline().is_some_and(|d| now >= d) {
            self.on_move_deadline();
        }
        if self.flow.phase == Phase::Running && self.flow.drain_deadline.is_some_and(|d| now >= d) {
            self.close_with_fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection because pgbaton is shutting down (shutdown_timeout reached)",
                RelayEnd::Shutdown,
            );
        }
        None
    }

    /// Starts closing: deliver what is queued, then end with `end`.
    pub(crate) fn close(&mut self, end: RelayEnd) {
        self.flow.end = end;
        self.flow.phase = Phase::Closing;
        self.flow.close_deadline = Instant::now() + CLOSE_GRACE;
    }

    /// Closes with a FATAL for the client and a Terminate for the server.
    pub(crate) fn close_with_fatal(&mut self, code: SqlState, message: &str, end: RelayEnd) {
        self.report(code, message);
        if self.flow.server_open {
            self.server.outbox.push(Bytes::from_static(TERMINATE));
        }
        self.close(end);
    }

    /// The server connection can no longer be trusted: tell the client why.
    pub(crate) fn lose_server(&mut self, message: &str, end: RelayEnd) {
        self.report(SqlState::CONNECTION_FAILURE, message);
        self.flow.server_open = false;
        self.close(end);
    }

    /// What framing the client's bytes means for the session.
    pub(crate) fn after_client_framed(&mut self, framed: Result<bool, FrameError>) {
        match framed {
            Ok(false) => self.publish(),
            Ok(true) => {
                self.flow.client_open = false;
                self.close(RelayEnd::ClientClosed);
            }
            Err(e) => {
                let msg = e.to_string();
                self.close_with_fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    &msg,
                    RelayEnd::ClientProtocolError(msg.clone()),
                );
            }
        }
    }

    /// Queues a FATAL ErrorResponse written by pgbaton for the client.
    pub(crate) fn report(&mut self, code: SqlState, message: &str) {
        if self.server.inbox.streaming > 0 {
            // Mid-message: anything inserted now would corrupt the framing
            // the client sees; closing the socket says enough.
            return;
        }
        let out = Said::fatal(code, message).to_bytes();
        self.client.outbox.push(out.freeze());
    }
}

/// Writes what is queued in `out` at once if the socket takes it, so a
/// request or a reply is relayed in the turn of the loop that read it, not
/// one turn later (a turn polls every branch). A full socket or an error is
/// left to the loop's `pump`, which meets it again.
async fn write_now(w: &mut WriteHalf<Stream>, out: &mut Outbox, dirty: &mut bool, tls: bool) {
    if out.is_empty() {
        return;
    }
    let polled = {
        let mut write = std::pin::pin!(pump(w, out));
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(write.as_mut(), cx))
        })
        .await
    };
    if let std::task::Poll::Ready(Ok(n)) = polled {
        if n > 0 {
            out.advance(n);
            *dirty = tls;
        }
    }
}

/// Writes the front of `out`, or flushes when it is empty. Cancel-safe: a
/// write either happened (and its count is returned) or did not.
async fn pump(w: &mut WriteHalf<Stream>, out: &Outbox) -> std::io::Result<usize> {
    if out.is_empty() {
        w.flush().await.map(|()| 0)
    } else {
        w.write(out.front()).await
    }
}
