//! The client side of a session: its socket, what it sent that is not
//! framed yet, what waits to be written to it, and its share of the
//! proxy-wide memory budget for client messages.

use super::budget::{Charge, FREE_PER_SESSION};
use super::relay::{Relay, RelayEnd};
use crate::net::{Inbox, Outbox, Stream, READ_CHUNK};
use crate::protocol::SqlState;
use bytes::BytesMut;
use tokio::io::{ReadHalf, WriteHalf};

pub(crate) struct ClientSide {
    pub(crate) r: ReadHalf<Stream>,
    pub(crate) w: WriteHalf<Stream>,
    pub(crate) inbox: Inbox,
    /// What goes to the client: the server's replies and pgbaton's own.
    pub(crate) outbox: Outbox,
    /// This session's share of `max_client_memory`, for `inbox`.
    pub(crate) charge: Charge,
    /// Written bytes may sit in a TLS buffer until flushed.
    pub(crate) dirty: bool,
    pub(crate) tls: bool,
    /// The pid the client was told (its first server's); the session's own
    /// notifications carry it after a move too.
    pub(crate) pid: i32,
}

impl ClientSide {
    pub(crate) fn new(stream: Stream, pid: i32) -> ClientSide {
        let tls = stream.is_tls();
        let (r, w) = tokio::io::split(stream);
        ClientSide {
            r,
            w,
            inbox: Inbox::default(),
            outbox: Outbox::default(),
            charge: Charge::default(),
            dirty: false,
            tls,
            pid,
        }
    }
}

impl Relay {
    /// Room for the next client read, charged to the proxy-wide budget
    /// first. When the budget is spent, a simple query arriving is refused
    /// (skipped, then a stand-in fails in its place) and this is true; for
    /// anything else the session closes with FATAL 53200 and this is false.
    pub(super) fn make_room_for_client(&mut self) -> bool {
        let client = &mut self.client;
        let inbox = &mut client.inbox;
        if inbox.buf.capacity() > FREE_PER_SESSION
            && inbox.partial.is_none()
            && inbox.buf.len() < READ_CHUNK
        {
            // A large message has gone on: give its allocation back (the
            // remainder shares it, and would keep it alive for the whole
            // session) and the charge with it.
            inbox.buf = BytesMut::from(&inbox.buf[..]);
            let _ = client.charge.hold(inbox.buf.capacity());
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
                client.charge.hold(want).map(|()| {
                    let mut grown = BytesMut::with_capacity(want);
                    grown.extend_from_slice(&inbox.buf);
                    inbox.buf = grown;
                })
            }
            // Ordinary reads: a read chunk more, within the free allowance
            // almost always; charged for the most BytesMut may allocate.
            None => {
                let worst = inbox.buf.capacity() * 2 + READ_CHUNK;
                client.charge.hold(worst).and_then(|()| {
                    inbox.reserve();
                    client.charge.hold(inbox.buf.capacity())
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
            let _ = client.charge.hold(0);
            self.refuse_with = Some(message);
            return true;
        }
        // A Parse (or anything else held whole) cannot be refused with its
        // batch intact: the session ends, its transaction rolled back.
        inbox.buf = BytesMut::new();
        inbox.streaming = 0;
        inbox.partial = None;
        let _ = client.charge.hold(0);
        self.flow.client_open = false;
        tracing::warn!(
            wanted = e.wanted,
            used = e.used,
            limit = e.limit,
            "client memory budget spent; closing the session"
        );
        self.close_with_fatal(SqlState::OUT_OF_MEMORY, &message, RelayEnd::OverBudget);
        false
    }
}
