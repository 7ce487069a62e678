//! Framing what each side sent: complete messages are found in place and
//! queued for the other side as one slice; the ledger sees
//! each message; a large message nobody reads streams through in pieces; a
//! command comment is held back.

use super::command::is_command;
use super::relay::{Held, Relay};
use crate::ledger::replies::Fate;
use crate::protocol::backend::{error_fields, rename_notifier, BackendTag};
use crate::protocol::codec::{peek_frame, Frame, FrameError, HEADER_LEN};
use crate::protocol::frontend::FrontendTag;
use bytes::BytesMut;

impl Relay {
    /// Frames what the client sent. Returns true when it sent Terminate.
    pub(super) fn frame_client(&mut self) -> Result<bool, FrameError> {
        let mut terminate = false;
        loop {
            self.client.inbox.partial = None;
            if self.client.inbox.skipping > 0 {
                if !self.skip_refused() {
                    return Ok(terminate);
                }
                continue;
            }
            let inbox = &mut self.client.inbox;
            if inbox.streaming > 0 {
                let n = inbox.streaming.min(inbox.buf.len());
                if n == 0 {
                    return Ok(terminate);
                }
                self.server.outbox.push(inbox.buf.split_to(n).freeze());
                inbox.streaming -= n;
                continue;
            }
            let scan = self.scan_client()?;
            terminate |= scan.terminate;
            let inbox = &mut self.client.inbox;
            let mut end = scan.end;
            if scan.discarded > 0 {
                let _ = inbox.buf.split_to(scan.discarded);
                end -= scan.discarded;
            }
            if end > 0 {
                self.server.outbox.push(inbox.buf.split_to(end).freeze());
            }
            if let Some(msgs) = scan.inject {
                // Then the message that needed them, framed again (the
                // ledger now expects their replies, so nothing repeats).
                self.server.outbox.push(msgs.freeze());
                continue;
            }
            if let Some(total) = scan.hold {
                // Held until everything before it is answered; nothing
                // after it is framed meanwhile.
                self.held = Held::Command(inbox.buf.split_to(total).freeze());
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

    /// Drops what arrived of a refused message (see
    /// `Relay::make_room_for_client`); once it is all gone, its stand-in
    /// goes in its place. False while more of it is to come.
    fn skip_refused(&mut self) -> bool {
        let inbox = &mut self.client.inbox;
        let n = inbox.skipping.min(inbox.buf.len());
        let _ = inbox.buf.split_to(n);
        inbox.skipping -= n;
        if inbox.skipping > 0 {
            return false;
        }
        if let Some(message) = self.refuse_with.take() {
            let stand_in = refusal(&message);
            self.ledger
                .on_frontend(FrontendTag::Query, &stand_in[HEADER_LEN..]);
            self.server.outbox.push(stand_in.freeze());
        }
        true
    }

    /// Finds the complete messages at the start of the client's inbox and
    /// where framing must stop.
    fn scan_client(&mut self) -> Result<Scan, FrameError> {
        let max = self.max_message_size;
        let mut scan = Scan::default();
        while let Some(frame) = peek_frame(&self.client.inbox.buf[scan.end..], |t| {
            FrontendTag::from_byte(t).body_limit(max)
        })? {
            let have = self.client.inbox.buf.len() - scan.end;
            let next = if have >= frame.total {
                self.whole_client_message(&mut scan, &frame)
            } else {
                self.partial_client_message(&mut scan, &frame, have)
            };
            if let Next::Stop = next {
                break;
            }
        }
        Ok(scan)
    }

    /// A client message that arrived whole, at `scan.end`.
    fn whole_client_message(&mut self, scan: &mut Scan, frame: &Frame) -> Next {
        let tag = FrontendTag::from_byte(frame.tag);
        let (start, stop) = (scan.end, scan.end + frame.total);
        if self.discard_until_sync {
            // Not forwarded: the batch failed at its command.
            if tag == FrontendTag::Sync {
                self.discard_until_sync = false;
                let mut out = BytesMut::new();
                crate::protocol::write::ready_for_query(
                    &mut out,
                    self.ledger.in_flight().tx_status().as_char() as u8,
                );
                self.client.outbox.push(out.freeze());
            }
            scan.discarded = stop;
            scan.end = stop;
            return Next::Continue;
        }
        let body = &self.client.inbox.buf[start + HEADER_LEN..stop];
        // A command opens its own batch. Inside one already open, its
        // answer could come only after the batch's earlier replies, which
        // the server sends only at the Sync behind it: held, it would wait
        // forever. There it is an ordinary comment.
        if (tag == FrontendTag::Query || tag == FrontendTag::Parse)
            && is_command(tag, body)
            && !self.ledger.in_flight().batch_open()
        {
            scan.hold = Some(frame.total);
            return Next::Stop;
        }
        if !self.ledger.deferred().is_empty() {
            scan.inject = self
                .ledger
                .lazy_parse_for(tag, body, self.ledger.client_state());
            if scan.inject.is_some() {
                return Next::Stop;
            }
        }
        // (What the server skips after an error gets no reply, and the
        // ledger expects none.)
        self.ledger
            .on_frontend(tag, &self.client.inbox.buf[start + HEADER_LEN..stop]);
        scan.end = stop;
        if tag == FrontendTag::Terminate {
            scan.terminate = true;
            return Next::Stop;
        }
        Next::Continue
    }

    /// A client message of which only `have` bytes arrived, at `scan.end`:
    /// read on whole, or streamed through, or dropped as it comes.
    fn partial_client_message(&mut self, scan: &mut Scan, frame: &Frame, have: usize) -> Next {
        let tag = FrontendTag::from_byte(frame.tag);
        let len = self.client.inbox.buf.len();
        if self.discard_until_sync {
            // Dropped anyway: skipped as it arrives, never held.
            self.client.inbox.skipping = frame.total - have;
            scan.discarded = len;
            scan.end = len;
            return Next::Stop;
        }
        if client_needs_body(tag) {
            // Read on as bytes arrive, never reserved up front from the
            // header: a length is only a claim (the relay's read loop grows
            // the buffer and charges the memory budget for it).
            self.client.inbox.partial = Some((frame.tag, frame.total));
            return Next::Stop;
        }
        let lazy = !self.ledger.deferred().is_empty();
        if tag == FrontendTag::Describe && lazy {
            // It may name a deferred statement: read it whole (a few bytes)
            // so its Parse can go first.
            return Next::Stop;
        }
        let prefix_at = (scan.end + HEADER_LEN).min(len);
        if tag == FrontendTag::Bind && lazy {
            let prefix = &self.client.inbox.buf[prefix_at..];
            if !bind_names_arrived(prefix) {
                // Which statement it binds is not known yet: wait for the
                // names before any of it goes.
                return Next::Stop;
            }
            scan.inject = self
                .ledger
                .lazy_parse_for(tag, prefix, self.ledger.client_state());
            if scan.inject.is_some() {
                return Next::Stop;
            }
        }
        if tag == FrontendTag::Bind {
            // Its names come first; the parameters stream through.
            self.ledger
                .on_bind_prefix(&self.client.inbox.buf[prefix_at..]);
        } else {
            self.ledger.on_frontend(tag, &[]);
        }
        self.client.inbox.streaming = frame.total - have;
        scan.end = len;
        Next::Stop
    }

    /// Frames what the server sent and queues it for the client.
    pub(super) fn frame_server(&mut self) {
        if self.server.owed > 0 && !self.drop_owed() {
            return;
        }
        let inbox = &mut self.server.inbox;
        loop {
            if inbox.streaming > 0 {
                let n = inbox.streaming.min(inbox.buf.len());
                if n == 0 {
                    return;
                }
                self.client.outbox.push(inbox.buf.split_to(n).freeze());
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
                    if tag == BackendTag::NotificationResponse {
                        // After a move the session's own notifications come
                        // from a backend whose pid the client never saw.
                        rename_notifier(
                            &mut inbox.buf[end..end + frame.total],
                            self.server.pid,
                            self.client.pid,
                        );
                    }
                    let body = &inbox.buf[end + HEADER_LEN..end + frame.total];
                    self.ledger.on_backend(tag, body);
                    let fate = self.ledger.take_fate();
                    if fate != Fate::Forward {
                        // About pgbaton's own request (a deferred statement
                        // prepared at its first use): not the client's as
                        // it came, nor counted as an answer to it.
                        if end > 0 {
                            self.client.outbox.push(inbox.buf.split_to(end).freeze());
                            end = 0;
                        }
                        let msg = inbox.buf.split_to(frame.total).freeze();
                        match fate {
                            Fate::Keep(name) => self.kept_errors.push((name, msg)),
                            Fate::Replace(name) => {
                                let kept = self.kept_errors.iter().find(|(n, _)| *n == name);
                                let error = kept.map_or(msg, |(_, e)| e.clone());
                                self.client.outbox.push(error);
                            }
                            Fate::Drop | Fate::Forward => {}
                        }
                        continue;
                    }
                    if tag == BackendTag::ReadyForQuery
                        && !self.kept_errors.is_empty()
                        && !self.ledger.keeps_lazy_errors()
                    {
                        // No query left that may use them.
                        self.kept_errors.clear();
                    }
                    if tag == BackendTag::ErrorResponse && error_fields(body).is_fatal() {
                        self.flow.fatal_forwarded = true;
                    }
                    end += frame.total;
                } else if server_needs_body(tag) {
                    inbox.buf.reserve(frame.total - have);
                    break;
                } else {
                    self.ledger.on_backend(tag, &[]);
                    inbox.streaming = frame.total - have;
                    end = inbox.buf.len();
                    break;
                }
            }
            if end > 0 {
                self.client.outbox.push(inbox.buf.split_to(end).freeze());
            }
            if inbox.streaming == 0 || inbox.buf.is_empty() {
                return;
            }
        }
    }
}

impl Relay {
    /// Drops the replies to a batch of pgbaton's own that nobody waits for
    /// any more (a cutover past its budget), up to the ReadyForQuery
    /// messages it owes; what the server sends on its own still reaches
    /// the client. True once nothing is owed.
    fn drop_owed(&mut self) -> bool {
        let server = &mut self.server;
        while server.owed > 0 {
            let Ok(Some((frame, body))) =
                crate::protocol::codec::split_message(&server.inbox.buf, |_| usize::MAX)
            else {
                return false;
            };
            let tag = BackendTag::from_byte(frame.tag);
            // Only what the server says on its own, and a FATAL (the
            // connection ends), is the client's.
            let forward = match tag {
                BackendTag::ReadyForQuery => {
                    server.owed -= 1;
                    false
                }
                BackendTag::ParameterStatus => {
                    self.ledger.on_backend(tag, body);
                    true
                }
                BackendTag::NotificationResponse | BackendTag::NoticeResponse => true,
                BackendTag::ErrorResponse if error_fields(body).is_fatal() => {
                    self.flow.fatal_forwarded = true;
                    true
                }
                _ => false,
            };
            let mut msg = server.inbox.buf.split_to(frame.total);
            if forward {
                if tag == BackendTag::NotificationResponse {
                    rename_notifier(&mut msg, server.pid, self.client.pid);
                }
                self.client.outbox.push(msg.freeze());
            }
        }
        true
    }
}

/// Where a scan of the client's bytes stopped, and what it found.
#[derive(Default)]
struct Scan {
    /// Bytes up to here go to the server (after `discarded` are dropped).
    end: usize,
    /// Bytes up to here are dropped, not forwarded.
    discarded: usize,
    /// A command comment of this length starts at `end`: held.
    hold: Option<usize>,
    /// Messages of pgbaton's own to send before the one at `end`.
    inject: Option<BytesMut>,
    terminate: bool,
}

enum Next {
    Continue,
    Stop,
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
        BackendTag::ReadyForQuery
            | BackendTag::ParameterStatus
            | BackendTag::ErrorResponse
            | BackendTag::NotificationResponse
    )
}

/// Whether a Bind's first bytes hold both its names (portal, statement).
fn bind_names_arrived(prefix: &[u8]) -> bool {
    crate::protocol::codec::cstr(prefix)
        .and_then(|(_, rest)| crate::protocol::codec::cstr(rest))
        .is_some()
}

/// A Query that fails on the server with 53200 and `message`: sent in place
/// of a statement pgbaton could not hold, so the error comes in its turn
/// and does to a transaction what the server's own out of memory does.
fn refusal(message: &str) -> BytesMut {
    let sql = format!(
        "DO $pgbaton$ BEGIN RAISE EXCEPTION USING ERRCODE = '53200', MESSAGE = '{}'; END $pgbaton$",
        message.replace('\'', "''").replace('$', "")
    );
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query(&sql, &mut out).expect("no NUL in the message");
    out
}
