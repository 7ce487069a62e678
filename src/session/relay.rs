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

use super::command::is_command;
use super::outbox::Outbox;
use super::registry::{
    CheckError, CheckReport, Control, LedgerSnapshot, SessionEntry, SessionState,
};
use super::tracker::Tracker;
use crate::config::Backend;
use crate::ledger::check::differences;
use crate::ledger::Ledger;
use crate::migration::stage::{Move, Reply, Stage};
use crate::migration::{MoveError, OnTimeout};
use crate::net::Stream;
use crate::protocol::backend::{error_fields, BackendTag};
use crate::protocol::codec::{peek_frame, FrameError, HEADER_LEN};
use crate::protocol::frontend::FrontendTag;
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
}

/// One direction's unread bytes plus the remainder of a message that is
/// streaming through.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) buf: BytesMut,
    /// Bytes of the current message still to pass through unread.
    pub(crate) streaming: usize,
}

impl Inbox {
    fn reserve(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
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
    pub(crate) server_in: Inbox,
    pub(crate) to_server: Outbox,
    pub(crate) to_client: Outbox,
    client_dirty: bool,
    server_dirty: bool,
    pending_checks: Vec<oneshot::Sender<Result<CheckReport, CheckError>>>,
    /// Last published (state, tx status, ledger version).
    published: (SessionState, char, u64),
    /// Who this session is, for moves; `None` in unit tests.
    pub ctx: Option<RelayCtx>,
    /// The server the session is on now.
    pub backend: Backend,
    pub server_pid: i32,
    pub(crate) moving: Option<Move>,
    /// A Query or Parse holding a command comment, not forwarded (yet).
    pub(crate) held: Option<Bytes>,
    /// After a refused command in a Parse: drop the client's batch up to its
    /// Sync and answer that Sync, as Postgres does after an error.
    pub(crate) discard_until_sync: bool,
    /// Client bytes wait in the inbox to be framed (after a held command).
    reframe: bool,
    /// Client messages forwarded so far: tells whether the server could
    /// have changed since a state check.
    pub(crate) client_messages: u64,
    /// Held while this session may run its cutover.
    cutover_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Notifications from a server the session just left.
    pub(crate) late_tx: mpsc::UnboundedSender<Bytes>,
    late_rx: mpsc::UnboundedReceiver<Bytes>,
}

/// The session a relay serves, for moves.
#[derive(Clone)]
pub struct RelayCtx {
    pub shared: Arc<Shared>,
    pub id: u64,
    /// The user the client logged in as (startup `user`).
    pub user: String,
    pub client_pid: i32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
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
        let (late_tx, late_rx) = mpsc::unbounded_channel();
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
            server_in: Inbox {
                buf: server_leftover,
                streaming: 0,
            },
            to_server: Outbox::default(),
            to_client: Outbox::default(),
            client_dirty: false,
            server_dirty: false,
            control: None,
            entry: None,
            pending_checks: Vec::new(),
            published: (SessionState::Idle, 'I', 0),
            ctx: None,
            backend,
            server_pid,
            moving: None,
            held: None,
            reframe: false,
            discard_until_sync: false,
            cutover_permit: None,
            client_messages: 0,
            late_tx,
            late_rx,
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

    /// Publishes state, transaction status and ledger summary when they
    /// changed (a lock only on change, not per message).
    fn publish(&mut self) {
        let Some(entry) = &self.entry else { return };
        let state = if self.tracker.is_quiet() {
            SessionState::Idle
        } else {
            SessionState::Active
        };
        let now = (
            state,
            self.tracker.tx_status().as_char(),
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

    fn on_control(&mut self, cmd: Control) {
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
    async fn run_checks(&mut self) -> bool {
        let result = self.server_check().await;
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
        let mut phase = Phase::Running;
        let mut end = RelayEnd::ClientClosed;
        let mut client_open = true;
        let mut server_open = true;
        let mut fatal_forwarded = false;
        let mut drain_deadline: Option<Instant> = *shutdown.borrow();
        let mut close_deadline = Instant::now();

        // Whatever the server sent with its first ReadyForQuery.
        if !self.server_in.buf.is_empty() {
            self.frame_server(&mut fatal_forwarded);
        }

        loop {
            // A held command comment, once everything before it is answered.
            if phase == Phase::Running
                && self.held.is_some()
                && self.moving.is_none()
                && self.tracker.is_quiet()
                && self.to_server.is_empty()
            {
                self.process_held();
            }
            // Client bytes that arrived behind a command that is now answered.
            if phase == Phase::Running && self.held.is_none() && self.reframe && client_open {
                self.reframe = false;
                match self.frame_client() {
                    Ok(false) => {}
                    Ok(true) => {
                        client_open = false;
                        end = RelayEnd::ClientClosed;
                        phase = Phase::Closing;
                        close_deadline = Instant::now() + CLOSE_GRACE;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        self.begin_close_with(
                            SqlState::PROTOCOL_VIOLATION.code(),
                            &msg,
                            server_open,
                        );
                        end = RelayEnd::ClientProtocolError(msg);
                        phase = Phase::Closing;
                        close_deadline = Instant::now() + CLOSE_GRACE;
                    }
                }
            }
            // The source's state, read once at the first safe point while the
            // target is being prepared; blockers end the move early.
            if phase == Phase::Running
                && server_open
                && matches!(&self.moving, Some(m) if m.precheck.is_none())
                && self.at_safe_point()
                && self.cutover_permit.is_some()
            {
                let read_started = Instant::now();
                let read = self.source_state().await;
                let hold = read_started.elapsed();
                self.cutover_permit = None;
                let at = self.client_messages;
                match read {
                    Ok(state) => {
                        let pinned = state.pin_reason();
                        match (pinned, self.moving.take()) {
                            (Some(reason), Some(m)) => {
                                if let Stage::PreStaging(h) = &m.stage {
                                    h.abort();
                                }
                                self.finish_move(m, Err(MoveError::Pinned(reason)));
                            }
                            (None, Some(mut m)) => {
                                m.precheck = Some((state, at));
                                m.precheck_hold = Some(hold);
                                self.moving = Some(m);
                            }
                            _ => {}
                        }
                    }
                    Err(e) => {
                        let lost = matches!(e, MoveError::SourceLost(_));
                        if let Some(m) = self.moving.take() {
                            if let Stage::PreStaging(h) = &m.stage {
                                h.abort();
                            }
                            self.finish_move(m, Err(e));
                        }
                        if lost {
                            self.report(
                                SqlState::CONNECTION_FAILURE.code(),
                                "pgbaton: the server connection failed during a move; the session cannot continue",
                            );
                            server_open = false;
                            end = RelayEnd::Io("source lost during a move".into());
                            phase = Phase::Closing;
                            close_deadline = Instant::now() + CLOSE_GRACE;
                        }
                    }
                }
            }
            let staged =
                matches!(&self.moving, Some(m) if matches!(m.stage, Stage::WaitingForSafePoint(_)));
            if self.cutover_permit.is_some() && !(self.moving.is_some() && self.at_safe_point()) {
                // The client moved on while the permit came: let others go.
                self.cutover_permit = None;
            }
            // A pre-staged move at a safe point, with a cutover slot: the pause.
            if phase == Phase::Running
                && server_open
                && staged
                && self.at_safe_point()
                && self.cutover_permit.is_some()
            {
                let Some(mut m) = self.moving.take() else {
                    unreachable!()
                };
                let stage = std::mem::replace(&mut m.stage, Stage::Done);
                let Stage::WaitingForSafePoint(staged) = stage else {
                    unreachable!()
                };
                let precheck = m.precheck.take();
                let result = self.cutover(*staged, m.request.dry_run, precheck).await;
                self.cutover_permit = None;
                let source_lost = matches!(result, Err(MoveError::SourceLost(_)));
                self.finish_move(m, result);
                if source_lost {
                    self.report(
                        SqlState::CONNECTION_FAILURE.code(),
                        "pgbaton: the server connection failed during a move; the session cannot continue",
                    );
                    server_open = false;
                    end = RelayEnd::Io("source lost during a move".into());
                    phase = Phase::Closing;
                    close_deadline = Instant::now() + CLOSE_GRACE;
                }
            }
            if phase == Phase::Running
                && !self.pending_checks.is_empty()
                && self.at_safe_point()
                && server_open
                && !self.run_checks().await
            {
                self.report(
                    SqlState::CONNECTION_FAILURE.code(),
                    "pgbaton: lost track of the server connection during a state check",
                );
                server_open = false;
                end = RelayEnd::Io("server check failed".into());
                phase = Phase::Closing;
                close_deadline = Instant::now() + CLOSE_GRACE;
            }
            if phase == Phase::Running && drain_deadline.is_some() && self.tracker.is_safe_point() {
                self.begin_close_with(
                    SqlState::ADMIN_SHUTDOWN.code(),
                    "terminating connection because pgbaton is shutting down",
                    server_open,
                );
                end = RelayEnd::Shutdown;
                phase = Phase::Closing;
                close_deadline = Instant::now() + CLOSE_GRACE;
            }
            if phase == Phase::Closing {
                client_open = false;
                if !server_open {
                    self.to_server.clear();
                }
                if self.to_client.is_empty() && self.to_server.is_empty() {
                    let _ = self.client_w.flush().await;
                    let _ = self.server_w.flush().await;
                    return end;
                }
            }
            self.client_in.reserve();
            self.server_in.reserve();
            let read_client =
                client_open && self.held.is_none() && self.to_server.len() < HIGH_WATER;
            let prestaging =
                matches!(&self.moving, Some(m) if matches!(m.stage, Stage::PreStaging(_)));
            let want_slot = phase == Phase::Running
                && self.cutover_permit.is_none()
                && matches!(&self.moving, Some(m) if m.precheck.is_none() || matches!(m.stage, Stage::WaitingForSafePoint(_)))
                && self.at_safe_point();
            let slots = self.ctx.as_ref().map(|c| c.shared.cutover_slots.clone());
            let move_deadline = self.moving.as_ref().map(|m| m.deadline);
            let read_server =
                server_open && phase == Phase::Running && self.to_client.len() < HIGH_WATER;
            let write_server = server_open && !self.to_server.is_empty();
            let write_client = !self.to_client.is_empty();
            let flush_client = self.client_dirty && self.to_client.is_empty();
            let flush_server = server_open && self.server_dirty && self.to_server.is_empty();
            let draining = drain_deadline.is_some();
            let drain_at = drain_deadline.unwrap_or_else(Instant::now);

            tokio::select! {
                r = self.client_r.read_buf(&mut self.client_in.buf), if read_client => match r {
                    Ok(0) | Err(_) => {
                        // Gone without Terminate: tell the server politely.
                        client_open = false;
                        if server_open {
                            self.to_server.push(bytes::Bytes::from_static(b"X\0\0\0\x04"));
                        }
                        end = RelayEnd::ClientClosed;
                        phase = Phase::Closing;
                        close_deadline = Instant::now() + CLOSE_GRACE;
                    }
                    Ok(_) => match self.frame_client() {
                        Ok(false) => self.publish(),
                        Ok(true) => {
                            client_open = false;
                            end = RelayEnd::ClientClosed;
                            phase = Phase::Closing;
                            close_deadline = Instant::now() + CLOSE_GRACE;
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            self.begin_close_with(SqlState::PROTOCOL_VIOLATION.code(), &msg, server_open);
                            end = RelayEnd::ClientProtocolError(msg);
                            phase = Phase::Closing;
                            close_deadline = Instant::now() + CLOSE_GRACE;
                        }
                    },
                },
                r = self.server_r.read_buf(&mut self.server_in.buf), if read_server => match r {
                    Ok(0) | Err(_) => {
                        server_open = false;
                        if !fatal_forwarded {
                            self.report(
                                SqlState::CONNECTION_FAILURE.code(),
                                "pgbaton: the server closed the connection unexpectedly",
                            );
                        }
                        end = RelayEnd::ServerClosed { fatal_forwarded };
                        phase = Phase::Closing;
                        close_deadline = Instant::now() + CLOSE_GRACE;
                    }
                    Ok(_) => {
                        self.frame_server(&mut fatal_forwarded);
                        self.publish();
                    }
                },
                cmd = recv_control(&mut self.control), if self.control.is_some() && phase == Phase::Running => match cmd {
                    Some(cmd) => self.on_control(cmd),
                    None => self.control = None,
                },
                r = pump(&mut self.server_w, &self.to_server), if write_server || flush_server => match r {
                    Ok(n) if n > 0 => {
                        self.to_server.advance(n);
                        self.server_dirty = true;
                    }
                    Ok(_) if self.to_server.is_empty() => self.server_dirty = false,
                    _ => {
                        server_open = false;
                        end = RelayEnd::Io("write to server failed".into());
                        phase = Phase::Closing;
                        close_deadline = Instant::now() + CLOSE_GRACE;
                    }
                },
                r = pump(&mut self.client_w, &self.to_client), if write_client || flush_client => match r {
                    Ok(n) if n > 0 => {
                        self.to_client.advance(n);
                        self.client_dirty = true;
                    }
                    Ok(_) if self.to_client.is_empty() => self.client_dirty = false,
                    _ => return RelayEnd::Io("write to client failed".into()),
                },
                r = shutdown.changed(), if !draining && phase == Phase::Running => {
                    match r {
                        Ok(()) => drain_deadline = *shutdown.borrow(),
                        // The proxy is gone: end now.
                        Err(_) => drain_deadline = Some(Instant::now()),
                    }
                },
                _ = tokio::time::sleep_until(drain_at), if draining && phase == Phase::Running => {
                    self.begin_close_with(
                        SqlState::ADMIN_SHUTDOWN.code(),
                        "terminating connection because pgbaton is shutting down (shutdown_timeout reached)",
                        server_open,
                    );
                    end = RelayEnd::Shutdown;
                    phase = Phase::Closing;
                    close_deadline = Instant::now() + CLOSE_GRACE;
                },
                r = prestaged(&mut self.moving), if prestaging && phase == Phase::Running => {
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
                },
                _ = tokio::time::sleep_until(move_deadline.unwrap_or_else(Instant::now)), if move_deadline.is_some() && phase == Phase::Running => {
                    if let Some(m) = self.moving.take() {
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
                            self.begin_close_with(
                                SqlState::ADMIN_SHUTDOWN.code(),
                                "terminating connection because its server is being drained and the session could not move",
                                server_open,
                            );
                            end = RelayEnd::Shutdown;
                            phase = Phase::Closing;
                            close_deadline = Instant::now() + CLOSE_GRACE;
                        }
                    }
                },
                Some(msg) = self.late_rx.recv() => self.to_client.push(msg),
                permit = cutover_slot(slots), if want_slot => self.cutover_permit = permit,
                _ = tokio::time::sleep_until(close_deadline), if phase == Phase::Closing => {
                    return end;
                },
            }
        }
    }

    /// Queues a FATAL for the client and a Terminate for the server.
    fn begin_close_with(&mut self, code: &str, message: &str, server_open: bool) {
        self.report(code, message);
        if server_open {
            self.to_server
                .push(bytes::Bytes::from_static(b"X\0\0\0\x04"));
        }
    }

    /// Queues a FATAL ErrorResponse written by pgbaton for the client.
    fn report(&mut self, code: &str, message: &str) {
        if self.server_in.streaming > 0 {
            // Mid-message: anything inserted now would corrupt the framing
            // the client sees; closing the socket says enough.
            return;
        }
        let mut out = BytesMut::new();
        Report::new(Severity::Fatal, code, message).write(&mut out);
        self.to_client.push(out.freeze());
    }

    /// Frames what the client sent. Returns true when it sent Terminate.
    fn frame_client(&mut self) -> Result<bool, FrameError> {
        let max = self.max_message_size;
        let inbox = &mut self.client_in;
        let mut terminate = false;
        loop {
            if inbox.streaming > 0 {
                let n = inbox.streaming.min(inbox.buf.len());
                if n == 0 {
                    return Ok(terminate);
                }
                self.to_server.push(inbox.buf.split_to(n).freeze());
                inbox.streaming -= n;
                continue;
            }
            let mut end = 0;
            let mut hold = None;
            // Bytes up to here are dropped, not forwarded.
            let mut discarded = 0;
            while let Some(frame) = peek_frame(&inbox.buf[end..], |t| {
                FrontendTag::from_byte(t).body_limit(max)
            })? {
                let tag = FrontendTag::from_byte(frame.tag);
                let have = inbox.buf.len() - end;
                if have >= frame.total {
                    let body = &inbox.buf[end + HEADER_LEN..end + frame.total];
                    if self.discard_until_sync {
                        // Not forwarded: the batch failed at its command.
                        if tag == FrontendTag::Sync {
                            self.discard_until_sync = false;
                            let mut out = BytesMut::new();
                            crate::protocol::write::ready_for_query(
                                &mut out,
                                self.tracker.tx_status().as_char() as u8,
                            );
                            self.to_client.push(out.freeze());
                        }
                        discarded = end + frame.total;
                        end += frame.total;
                        continue;
                    }
                    if (tag == FrontendTag::Query || tag == FrontendTag::Parse)
                        && is_command(tag, body)
                    {
                        hold = Some(frame.total);
                        break;
                    }
                    self.tracker.on_frontend(tag);
                    self.client_messages += 1;
                    self.ledger
                        .on_frontend(tag, &inbox.buf[end + HEADER_LEN..end + frame.total]);
                    end += frame.total;
                    if tag == FrontendTag::Terminate {
                        terminate = true;
                        break;
                    }
                } else if client_needs_body(tag) || self.discard_until_sync {
                    inbox.buf.reserve(frame.total - have);
                    break;
                } else {
                    self.tracker.on_frontend(tag);
                    self.client_messages += 1;
                    if tag == FrontendTag::Bind {
                        // Its names come first; the parameters stream through.
                        self.ledger
                            .on_bind_prefix(&inbox.buf[(end + HEADER_LEN).min(inbox.buf.len())..]);
                    } else {
                        self.ledger.on_frontend(tag, &[]);
                    }
                    inbox.streaming = frame.total - have;
                    end = inbox.buf.len();
                    break;
                }
            }
            if discarded > 0 {
                let _ = inbox.buf.split_to(discarded);
                end -= discarded;
            }
            if end > 0 {
                self.to_server.push(inbox.buf.split_to(end).freeze());
            }
            if let Some(total) = hold {
                // Held until everything before it is answered; nothing
                // after it is framed meanwhile.
                self.held = Some(inbox.buf.split_to(total).freeze());
                self.reframe = true;
                return Ok(terminate);
            }
            if terminate {
                inbox.buf.clear();
                inbox.streaming = 0;
            }
            if inbox.streaming == 0 || inbox.buf.is_empty() {
                return Ok(terminate);
            }
        }
    }

    /// Frames what the server sent and queues it for the client.
    fn frame_server(&mut self, fatal_forwarded: &mut bool) {
        let inbox = &mut self.server_in;
        loop {
            if inbox.streaming > 0 {
                let n = inbox.streaming.min(inbox.buf.len());
                if n == 0 {
                    return;
                }
                self.to_client.push(inbox.buf.split_to(n).freeze());
                inbox.streaming -= n;
                continue;
            }
            let mut end = 0;
            // The server is trusted to frame correctly; a bad length from it
            // is still not a reason to panic: pass the bytes through.
            while let Ok(Some(frame)) = peek_frame(&inbox.buf[end..], |_| usize::MAX) {
                let tag = BackendTag::from_byte(frame.tag);
                let have = inbox.buf.len() - end;
                if have >= frame.total {
                    let body = &inbox.buf[end + HEADER_LEN..end + frame.total];
                    self.tracker.on_backend(tag, body);
                    self.ledger.on_backend(tag, body);
                    if tag == BackendTag::ErrorResponse && error_fields(body).is_fatal() {
                        *fatal_forwarded = true;
                    }
                    end += frame.total;
                } else if server_needs_body(tag) {
                    inbox.buf.reserve(frame.total - have);
                    break;
                } else {
                    self.tracker.on_backend(tag, &[]);
                    self.ledger.on_backend(tag, &[]);
                    inbox.streaming = frame.total - have;
                    end = inbox.buf.len();
                    break;
                }
            }
            if end > 0 {
                self.to_client.push(inbox.buf.split_to(end).freeze());
            }
            if inbox.streaming == 0 || inbox.buf.is_empty() {
                return;
            }
        }
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

/// A cutover slot; `None` without a proxy (unit tests) means no limit.
async fn cutover_slot(
    slots: Option<Arc<tokio::sync::Semaphore>>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match slots {
        Some(s) => s.acquire_owned().await.ok(),
        None => None,
    }
}

async fn recv_control(control: &mut Option<mpsc::Receiver<Control>>) -> Option<Control> {
    match control {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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

/// Client messages whose body pgbaton reads (SQL for the ledger and the
/// command comment); all others may stream through.
fn client_needs_body(tag: FrontendTag) -> bool {
    matches!(
        tag,
        FrontendTag::Query | FrontendTag::Parse | FrontendTag::Terminate
    )
}

fn server_needs_body(tag: BackendTag) -> bool {
    matches!(
        tag,
        BackendTag::ReadyForQuery | BackendTag::ParameterStatus | BackendTag::ErrorResponse
    )
}
