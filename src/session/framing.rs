//! Framing what each side sent: complete messages are found in place and
//! queued for the other side as one slice; the tracker and the ledger see
//! each message; a large message nobody reads streams through in pieces; a
//! command comment is held back.

use super::command::is_command;
use super::relay::Relay;
use crate::ledger::lazy::ClientState;
use crate::ledger::replies::Fate;
use crate::protocol::backend::TxStatus;
use crate::protocol::backend::{error_fields, rename_notifier, BackendTag};
use crate::protocol::codec::{peek_frame, FrameError, HEADER_LEN};
use crate::protocol::frontend::FrontendTag;
use bytes::BytesMut;

impl Relay {
    /// Frames what the client sent. Returns true when it sent Terminate.
    pub(super) fn frame_client(&mut self) -> Result<bool, FrameError> {
        let max = self.max_message_size;
        let inbox = &mut self.client_in;
        let mut terminate = false;
        loop {
            inbox.partial = None;
            if inbox.skipping > 0 {
                // A refused message: dropped as it arrives, then answered
                // in its turn (see `Relay::make_room_for_client`).
                let n = inbox.skipping.min(inbox.buf.len());
                let _ = inbox.buf.split_to(n);
                inbox.skipping -= n;
                if inbox.skipping > 0 {
                    return Ok(terminate);
                }
                if let Some(message) = self.refuse_with.take() {
                    let stand_in = refusal(&message);
                    if !self.ledger.skipping() {
                        self.tracker.on_frontend(FrontendTag::Query);
                    }
                    self.ledger
                        .on_frontend(FrontendTag::Query, &stand_in[HEADER_LEN..]);
                    self.to_server.push(stand_in.freeze());
                }
                continue;
            }
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
            // Messages of pgbaton's own to send before the current one.
            let mut inject = None;
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
                    // A command opens its own batch. Inside one already
                    // open, its answer could come only after the batch's
                    // earlier replies, which the server sends only at the
                    // Sync behind it: held, it would wait forever. There it
                    // is an ordinary comment.
                    if (tag == FrontendTag::Query || tag == FrontendTag::Parse)
                        && is_command(tag, body)
                        && !self.tracker.batch_open()
                    {
                        hold = Some(frame.total);
                        break;
                    }
                    if !self.ledger.deferred().is_empty() {
                        inject = self
                            .ledger
                            .lazy_parse_for(tag, body, client_state(&self.tracker));
                        if inject.is_some() {
                            break;
                        }
                    }
                    // What the server skips after an error gets no reply.
                    if !self.ledger.skipping() || tag == FrontendTag::Sync {
                        self.tracker.on_frontend(tag);
                    }
                    self.client_messages += 1;
                    self.ledger
                        .on_frontend(tag, &inbox.buf[end + HEADER_LEN..end + frame.total]);
                    end += frame.total;
                    if tag == FrontendTag::Terminate {
                        terminate = true;
                        break;
                    }
                } else if self.discard_until_sync {
                    // Dropped anyway: skipped as it arrives, never held.
                    inbox.skipping = frame.total - have;
                    discarded = inbox.buf.len();
                    end = inbox.buf.len();
                    break;
                } else if client_needs_body(tag) {
                    // Read on as bytes arrive, never reserved up front from
                    // the header: a length is only a claim (the relay's
                    // read loop grows the buffer and charges the memory
                    // budget for it).
                    inbox.partial = Some((frame.tag, frame.total));
                    break;
                } else {
                    if tag == FrontendTag::Describe && !self.ledger.deferred().is_empty() {
                        // It may name a deferred statement: read it whole
                        // (a few bytes) so its Parse can go first.
                        break;
                    }
                    if tag == FrontendTag::Bind && !self.ledger.deferred().is_empty() {
                        let prefix = &inbox.buf[(end + HEADER_LEN).min(inbox.buf.len())..];
                        if !bind_names_arrived(prefix) {
                            // Which statement it binds is not known yet:
                            // wait for the names before any of it goes.
                            break;
                        }
                        inject =
                            self.ledger
                                .lazy_parse_for(tag, prefix, client_state(&self.tracker));
                        if inject.is_some() {
                            break;
                        }
                    }
                    if !self.ledger.skipping() {
                        self.tracker.on_frontend(tag);
                    }
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
            if let Some(msgs) = inject {
                // Then the message that needed them, framed again (the
                // ledger now expects their replies, so nothing repeats).
                self.to_server.push(msgs.freeze());
                continue;
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
    pub(super) fn frame_server(&mut self) {
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
                    if tag == BackendTag::NotificationResponse {
                        // After a move the session's own notifications come
                        // from a backend whose pid the client never saw.
                        rename_notifier(
                            &mut inbox.buf[end..end + frame.total],
                            self.server_pid,
                            self.client_pid,
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
                            self.to_client.push(inbox.buf.split_to(end).freeze());
                            end = 0;
                        }
                        let msg = inbox.buf.split_to(frame.total).freeze();
                        match fate {
                            Fate::Keep(name) => self.kept_errors.push((name, msg)),
                            Fate::Replace(name) => {
                                let kept = self.kept_errors.iter().find(|(n, _)| *n == name);
                                let error = kept.map_or(msg, |(_, e)| e.clone());
                                self.to_client.push(error);
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
                    self.tracker.on_backend(tag, body);
                    if tag == BackendTag::ErrorResponse {
                        // Requests the error made the server skip will get
                        // no ReadyForQuery.
                        let skipped = self.ledger.take_skipped_requests();
                        self.tracker.forget_requests(skipped);
                        if error_fields(body).is_fatal() {
                            self.flow.fatal_forwarded = true;
                        }
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

/// What the ledger needs of the client's state to prepare a deferred
/// statement before a request.
pub(crate) fn client_state(tracker: &super::tracker::Tracker) -> ClientState {
    ClientState {
        batch_open: tracker.batch_open(),
        tx_failed: tracker.tx_status() == TxStatus::Failed,
        quiet_idle: tracker.outstanding() == 0
            && !tracker.batch_open()
            && tracker.tx_status() == TxStatus::Idle,
    }
}
