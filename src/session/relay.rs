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

use super::budget::{Charge, FREE_PER_SESSION};
use super::control::recv_control;
use super::outbox::Outbox;
use super::registry::{CheckError, CheckReport, Control, SessionEntry, SessionState};
use super::tracker::Tracker;
use crate::config::Backend;
use crate::ledger::Ledger;
use crate::migration::stage::{Move, Stage};
use crate::migration::MoveError;
use crate::net::Stream;
use crate::protocol::codec::FrameError;
use crate::protocol::write::{Report, Severity};
use crate::proxy::Shared;
use bytes::Bytes;
use bytes::BytesMut;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::watch;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 1 << 20;
/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
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

/// One direction's unread bytes plus the remainder of a message that is
/// streaming through.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) buf: BytesMut,
    /// Bytes of the current message still to pass through unread.
    pub(crate) streaming: usize,
    /// Bytes of a refused message still to drop as they arrive.
    pub(crate) skipping: usize,
    /// The message at the start of `buf` that is held whole and has not all
    /// arrived yet: its tag and whole length.
    pub(crate) partial: Option<(u8, usize)>,
}

impl Inbox {
    fn needs_room(&self) -> bool {
        self.buf.capacity() - self.buf.len() < READ_CHUNK / 4
    }

    fn reserve(&mut self) {
        if self.needs_room() {
            self.buf.reserve(READ_CHUNK);
        }
    }
}

/// Everything the relay needs; the session owns it and gets it back when a
/// relay ends, so a server connection can be replaced between relays.
pub struct Relay {
    pub client_r: ReadHalf<Stream>,
    pub client_w: WriteHalf<Stream>,
    pub server_r: ReadHalf<Stream>,
    pub server_w: WriteHalf<Stream>,
    pub tracker: Tracker,
    pub ledger: Ledger,
    pub max_message_size: usize,
    /// Requests from the admin console or a move; `None` when detached.
    pub control: Option<mpsc::Receiver<Control>>,
    /// Where the live snapshot of this session is published.
    pub entry: Option<Arc<SessionEntry>>,
    pub(crate) client_in: Inbox,
    /// This session's share of `max_client_memory`, for `client_in`.
    pub(crate) client_charge: Charge,
    /// Errors of pgbaton's own Parses of deferred statements, held back to
    /// answer the statement of the running query that uses each.
    pub(crate) kept_errors: Vec<(String, Bytes)>,
    pub(crate) server_in: Inbox,
    pub(crate) to_server: Outbox,
    pub(crate) to_client: Outbox,
    /// Written bytes may sit in a TLS buffer until flushed; plain TCP needs
    /// no flush, and skipping it saves a loop turn per write.
    client_dirty: bool,
    server_dirty: bool,
    client_tls: bool,
    pub(crate) server_tls: bool,
    /// One timer for every deadline (drain, move, close), reset only when
    /// the nearest one changes.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    timer_at: Option<Instant>,
    pub(super) pending_checks: Vec<oneshot::Sender<Result<CheckReport, CheckError>>>,
    /// Last published (state, tx status, ledger version).
    pub(super) published: (SessionState, char, u64),
    /// Who this session is, for moves; `None` in unit tests.
    pub ctx: Option<RelayCtx>,
    /// The server the session is on now.
    pub backend: Backend,
    pub server_pid: i32,
    /// The pid the client was told (its first server's); the session's own
    /// notifications carry it after a move too.
    pub(crate) client_pid: i32,
    pub(crate) moving: Option<Move>,
    /// A Query or Parse holding a command comment, not forwarded (yet).
    pub(crate) held: Option<Bytes>,
    /// A statement refused without being read (it did not fit in memory):
    /// once skipped, a stand-in failing with this message goes in its place.
    pub(crate) refuse_with: Option<String>,
    /// After a refused command in a Parse: drop the client's batch up to its
    /// Sync and answer that Sync, as Postgres does after an error.
    pub(crate) discard_until_sync: bool,
    /// Client bytes wait in the inbox to be framed (after a held command).
    pub(crate) reframe: bool,
    /// Client messages forwarded so far: tells whether the server could
    /// have changed since a state check.
    pub(crate) client_messages: u64,
    /// Held while this session may run its cutover.
    pub(crate) cutover_turn: Option<CutoverTurn>,
    /// Where the loop is: running or closing, and why it ends.
    pub(crate) flow: Flow,
    /// Notifications from servers the session just left, while they drain.
    pub(crate) late_rx: Option<mpsc::UnboundedReceiver<Bytes>>,
    /// The senders' side of `late_rx`, weak so the channel closes when the
    /// last drain ends; a second move during a drain joins the same channel.
    pub(crate) late_tx: Option<mpsc::WeakUnboundedSender<Bytes>>,
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
}

/// The session a relay serves, for moves.
#[derive(Clone)]
pub struct RelayCtx {
    pub shared: Arc<Shared>,
    pub id: u64,
    /// The user the client logged in as (startup `user`).
    pub user: String,
    /// The pid the client was told: its first server backend's.
    pub client_pid: i32,
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

impl Relay {
    pub fn new(
        client: Stream,
        server: crate::server::ServerConn,
        ledger: Ledger,
        max_message_size: usize,
    ) -> Relay {
        let server_leftover = server.leftover;
        let (backend, server_pid) = (server.backend, server.pid);
        let server = server.stream;
        let (client_tls, server_tls) = (client.is_tls(), server.is_tls());
        let (client_r, client_w) = tokio::io::split(client);
        let (server_r, server_w) = tokio::io::split(server);
        Relay {
            client_r,
            client_w,
            server_r,
            server_w,
            tracker: Tracker::default(),
            ledger,
            max_message_size,
            client_in: Inbox::default(),
            client_charge: Charge::default(),
            kept_errors: Vec::new(),
            server_in: Inbox {
                buf: server_leftover,
                ..Inbox::default()
            },
            to_server: Outbox::default(),
            to_client: Outbox::default(),
            client_dirty: false,
            server_dirty: false,
            client_tls,
            server_tls,
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
            timer_at: None,
            control: None,
            entry: None,
            pending_checks: Vec::new(),
            published: (SessionState::Idle, 'I', 0),
            ctx: None,
            backend,
            server_pid,
            client_pid: server_pid,
            moving: None,
            held: None,
            refuse_with: None,
            reframe: false,
            discard_until_sync: false,
            cutover_turn: None,
            client_messages: 0,
            flow: Flow {
                phase: Phase::Running,
                end: RelayEnd::ClientClosed,
                client_open: true,
                server_open: true,
                fatal_forwarded: false,
                close_deadline: Instant::now(),
                drain_deadline: None,
            },
            late_rx: None,
            late_tx: None,
        }
    }

    /// Nothing in flight in either direction: the session can be paused,
    /// checked or moved without losing or reordering a byte.
    pub fn at_safe_point(&self) -> bool {
        self.tracker.is_safe_point()
            // Bytes after a held command wait unframed: they come later.
            && (self.client_in.buf.is_empty() || self.held.is_some())
            && self.client_in.streaming == 0
            && self.server_in.streaming == 0
            && self.to_server.is_empty()
    }

    /// Relays until the session ends. `shutdown` carries the drain deadline
    /// once pgbaton is stopping.
    pub async fn run(&mut self, shutdown: &mut watch::Receiver<Option<Instant>>) -> RelayEnd {
        let end = self.run_inner(shutdown).await;
        if let Some(m) = self.moving.take() {
            if let Stage::PreStaging(h) = &m.stage {
                h.abort();
            }
            self.finish_move(m, Err(MoveError::Ended));
        }
        end
    }

    async fn run_inner(&mut self, shutdown: &mut watch::Receiver<Option<Instant>>) -> RelayEnd {
        self.flow.drain_deadline = *shutdown.borrow();
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
        if !self.server_in.buf.is_empty() {
            self.frame_server();
        }
        loop {
            if self.has_pending_steps() {
                self.safe_point_steps().await;
            }
            if self.flow.phase == Phase::Closing {
                self.flow.client_open = false;
                if !self.flow.server_open {
                    self.to_server.clear();
                }
                if self.to_client.is_empty() && self.to_server.is_empty() {
                    let _ = self.client_w.flush().await;
                    let _ = self.server_w.flush().await;
                    return self.flow.end.clone();
                }
            }
            if !self.make_room_for_client() {
                continue;
            }
            self.server_in.reserve();
            let running = self.flow.phase == Phase::Running;
            let server_open = self.flow.server_open;
            let read_client =
                self.flow.client_open && self.held.is_none() && self.to_server.len() < HIGH_WATER;
            let read_server = server_open && running && self.to_client.len() < HIGH_WATER;
            let write_server = server_open && (!self.to_server.is_empty() || self.server_dirty);
            let write_client = !self.to_client.is_empty() || self.client_dirty;
            let draining = self.flow.drain_deadline.is_some();
            let prestaging =
                matches!(&self.moving, Some(m) if matches!(m.stage, Stage::PreStaging(_)));
            let want_turn = running && self.cutover_turn.is_none() && self.wants_cutover_turn();
            let locks = if want_turn {
                self.ctx
                    .as_ref()
                    .map(|c| (c.shared.cutover_turn.clone(), c.shared.move_gate.clone()))
            } else {
                None
            };
            let timed = self.arm_timer();

            tokio::select! {
                r = self.client_r.read_buf(&mut self.client_in.buf), if read_client => match r {
                    Ok(0) | Err(_) => {
                        // Gone without Terminate: tell the server politely.
                        self.flow.client_open = false;
                        if server_open {
                            self.to_server.push(Bytes::from_static(TERMINATE));
                        }
                        self.close(RelayEnd::ClientClosed);
                    }
                    Ok(_) => {
                        let framed = self.frame_client();
                        self.after_client_framed(framed);
                        if server_open {
                            write_now(&mut self.server_w, &mut self.to_server, &mut self.server_dirty, self.server_tls).await;
                        }
                    }
                },
                r = self.server_r.read_buf(&mut self.server_in.buf), if read_server => match r {
                    Ok(0) | Err(_) => {
                        let fatal_forwarded = self.flow.fatal_forwarded;
                        if !fatal_forwarded {
                            self.report(SqlState::CONNECTION_FAILURE.code(), "pgbaton: the server closed the connection unexpectedly");
                        }
                        self.flow.server_open = false;
                        self.close(RelayEnd::ServerClosed { fatal_forwarded });
                    }
                    Ok(_) => {
                        self.frame_server();
                        self.publish();
                        write_now(&mut self.client_w, &mut self.to_client, &mut self.client_dirty, self.client_tls).await;
                    }
                },
                cmd = recv_control(&mut self.control), if self.control.is_some() && running => match cmd {
                    Some(cmd) => self.on_control(cmd),
                    None => self.control = None,
                },
                r = pump(&mut self.server_w, &self.to_server), if write_server => match r {
                    Ok(n) if n > 0 => {
                        self.to_server.advance(n);
                        self.server_dirty = self.server_tls;
                    }
                    Ok(_) if self.to_server.is_empty() => self.server_dirty = false,
                    _ => {
                        self.flow.server_open = false;
                        self.close(RelayEnd::Io("write to server failed".into()));
                    }
                },
                r = pump(&mut self.client_w, &self.to_client), if write_client => match r {
                    Ok(n) if n > 0 => {
                        self.to_client.advance(n);
                        self.client_dirty = self.client_tls;
                    }
                    Ok(_) if self.to_client.is_empty() => self.client_dirty = false,
                    _ => return RelayEnd::Io("write to client failed".into()),
                },
                deadline = &mut shutdown_signal, if !draining && running => {
                    self.flow.drain_deadline = Some(deadline);
                },
                r = prestaged(&mut self.moving), if prestaging && running => self.on_prestaged(r),
                msg = recv_late(&mut self.late_rx), if self.late_rx.is_some() => match msg {
                    Some(msg) => self.to_client.push(msg),
                    // The old servers are drained: stop listening.
                    None => {
                        self.late_rx = None;
                        self.late_tx = None;
                    }
                },
                turn = cutover_turn_of(locks), if want_turn => self.cutover_turn = turn,
                _ = &mut self.timer, if timed => {
                    self.timer_at = None;
                    if let Some(end) = self.on_deadlines() {
                        return end;
                    }
                },
            }
        }
    }

    /// Points the timer at the nearest deadline; false when there is none.
    fn arm_timer(&mut self) -> bool {
        let running = self.flow.phase == Phase::Running;
        let next = if running {
            let drain = self.flow.drain_deadline;
            let moving = self.moving.as_ref().map(|m| m.deadline);
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
        if matches!(&self.moving, Some(m) if now >= m.deadline) {
            self.on_move_deadline();
        }
        if self.flow.phase == Phase::Running && self.flow.drain_deadline.is_some_and(|d| now >= d) {
            self.close_with_fatal(
                SqlState::ADMIN_SHUTDOWN.code(),
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
    pub(crate) fn close_with_fatal(&mut self, code: &str, message: &str, end: RelayEnd) {
        self.report(code, message);
        if self.flow.server_open {
            self.to_server.push(Bytes::from_static(TERMINATE));
        }
        self.close(end);
    }

    /// The server connection can no longer be trusted: tell the client why.
    pub(crate) fn lose_server(&mut self, message: &str, end: RelayEnd) {
        self.report(SqlState::CONNECTION_FAILURE.code(), message);
        self.flow.server_open = false;
        self.close(end);
    }

    /// Room for the next client read, charged to the proxy-wide budget
    /// first. When the budget is spent, a simple query arriving is refused
    /// (skipped, then a stand-in fails in its place) and this is true; for
    /// anything else the session closes with FATAL 53200 and this is false.
    fn make_room_for_client(&mut self) -> bool {
        let inbox = &mut self.client_in;
        if inbox.buf.capacity() > FREE_PER_SESSION
            && inbox.partial.is_none()
            && inbox.buf.len() < READ_CHUNK
        {
            // A large message has gone on: give its allocation back (the
            // remainder shares it, and would keep it alive for the whole
            // session) and the charge with it.
            inbox.buf = BytesMut::from(&inbox.buf[..]);
            let _ = self.client_charge.hold(inbox.buf.capacity());
        }
        if !self.flow.client_open {
            return true;
        }
        let charged = match inbox.partial {
            // Room for all of the message already: read on.
            Some((_, total)) if inbox.buf.capacity() >= total => return true,
            _ if !inbox.needs_room() => return true,
            // A message held whole: grow exactly (doubling, never past its
            // length), charged before it is allocated.
            Some((_, total)) => {
                let want = (inbox.buf.capacity() * 2)
                    .max(inbox.buf.len() + READ_CHUNK)
                    .min(total);
                self.client_charge.hold(want).map(|()| {
                    let mut grown = BytesMut::with_capacity(want);
                    grown.extend_from_slice(&inbox.buf);
                    inbox.buf = grown;
                })
            }
            // Ordinary reads: a read chunk more, within the free allowance
            // almost always; charged for the most BytesMut may allocate.
            None => {
                let worst = inbox.buf.capacity() * 2 + READ_CHUNK;
                self.client_charge.hold(worst).and_then(|()| {
                    inbox.reserve();
                    self.client_charge.hold(inbox.buf.capacity())
                })
            }
        };
        let Err(e) = charged else { return true };
        let message = format!(
            "pgbaton: out of memory for client messages: {} MiB are held for all clients, and max_client_memory is {} MiB",
            e.used >> 20,
            e.limit >> 20
        );
        if let Some((b'Q', total)) = inbox.partial {
            // Only the statement that does not fit is refused: it is dropped
            // as it arrives, and a stand-in that fails with 53200 goes to the
            // server in its place, so the error comes in its turn and an
            // open transaction is aborted, as Postgres' own out of memory
            // would; the session goes on.
            tracing::warn!(
                bytes = total,
                used = e.used,
                limit = e.limit,
                "client memory budget spent; refusing one statement"
            );
            inbox.partial = None;
            inbox.skipping = total - inbox.buf.len();
            inbox.buf = BytesMut::new();
            let _ = self.client_charge.hold(0);
            self.refuse_with = Some(message);
            return true;
        }
        // A Parse (or anything else held whole) cannot be refused with its
        // batch intact: the session ends, its transaction rolled back.
        inbox.buf = BytesMut::new();
        inbox.streaming = 0;
        inbox.partial = None;
        let _ = self.client_charge.hold(0);
        self.flow.client_open = false;
        tracing::warn!(
            wanted = e.wanted,
            used = e.used,
            limit = e.limit,
            "client memory budget spent; closing the session"
        );
        self.close_with_fatal(
            SqlState::OUT_OF_MEMORY.code(),
            &message,
            RelayEnd::OverBudget,
        );
        false
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
                    SqlState::PROTOCOL_VIOLATION.code(),
                    &msg,
                    RelayEnd::ClientProtocolError(msg.clone()),
                );
            }
        }
    }

    /// Queues a FATAL ErrorResponse written by pgbaton for the client.
    pub(crate) fn report(&mut self, code: &str, message: &str) {
        if self.server_in.streaming > 0 {
            // Mid-message: anything inserted now would corrupt the framing
            // the client sees; closing the socket says enough.
            return;
        }
        let mut out = BytesMut::new();
        Report::new(Severity::Fatal, code, message).write(&mut out);
        self.to_client.push(out.freeze());
    }
}

/// Waits for a pre-staging task. Cancel-safe: awaiting a `&mut JoinHandle`
/// loses nothing.
async fn prestaged(
    moving: &mut Option<Move>,
) -> Result<crate::migration::target::Staged, MoveError> {
    match moving {
        Some(Move {
            stage: Stage::PreStaging(h),
            ..
        }) => match h.await {
            Ok(r) => r,
            Err(e) => Err(MoveError::Replay {
                backend: String::new(),
                message: format!("pre-staging task failed: {e}"),
            }),
        },
        _ => std::future::pending().await,
    }
}

async fn recv_late(late: &mut Option<mpsc::UnboundedReceiver<Bytes>>) -> Option<Bytes> {
    match late {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A session's turn to run its cutover: first the turn itself (cutovers go
/// one at a time, in order), then the gate held exclusively, or, when
/// pre-stagings keep it longer than [`GATE_WAIT`] (a target slow to log
/// in), without it, so one slow server never stalls the moves to others.
pub(crate) struct CutoverTurn {
    _gate: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Longest a cutover with its turn waits for the pre-stagings in flight
/// (normally a few milliseconds: a login and a replay).
const GATE_WAIT: Duration = Duration::from_millis(250);

type CutoverLocks = (Arc<tokio::sync::Mutex<()>>, Arc<tokio::sync::RwLock<()>>);

/// Waits for a cutover turn; `None` without a proxy (unit tests).
async fn cutover_turn_of(locks: Option<CutoverLocks>) -> Option<CutoverTurn> {
    let (turn, gate) = locks?;
    let turn = turn.lock_owned().await;
    let gate = tokio::time::timeout(GATE_WAIT, gate.write_owned())
        .await
        .ok();
    Some(CutoverTurn {
        _gate: gate,
        _turn: turn,
    })
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
