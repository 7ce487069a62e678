//! The server side of a session: one logged-in server connection with
//! everything in flight on it. A session relays through it, a move replaces
//! it whole at a safe point, and (later) a pool can hand an idle one to
//! another session: nothing in it belongs to a client.

use super::batch::TORN;
use super::ServerConn;
use crate::config::Backend;
use crate::net::{Inbox, Outbox, Stream};
use tokio::io::{ReadHalf, WriteHalf};

pub struct ServerSide {
    pub r: ReadHalf<Stream>,
    pub w: WriteHalf<Stream>,
    /// What the server sent, not relayed yet.
    pub inbox: Inbox,
    /// What goes to the server: the client's messages, framed.
    pub outbox: Outbox,
    /// Written bytes may sit in a TLS buffer until flushed; plain TCP needs
    /// no flush, and skipping it saves a loop turn per write.
    pub dirty: bool,
    pub tls: bool,
    /// The server this is, and its own BackendKeyData (never shown to
    /// clients).
    pub backend: Backend,
    pub pid: i32,
    pub key: i32,
    /// ReadyForQuery messages the server still owes a batch of pgbaton's
    /// own that nobody waits for any more (a move that ran out of its pause
    /// budget): its replies are dropped as they come. [`TORN`] when the
    /// batch may not have been written whole.
    pub owed: usize,
}

impl ServerSide {
    pub fn new(conn: ServerConn) -> ServerSide {
        let ServerConn {
            stream,
            backend,
            pid,
            key,
            leftover,
            ..
        } = conn;
        ServerSide::from_parts(stream, leftover, backend, pid, key)
    }

    /// A server side from a connection already split in two halves.
    pub fn from_halves(
        (r, w): (ReadHalf<Stream>, WriteHalf<Stream>),
        buf: bytes::BytesMut,
        tls: bool,
        backend: Backend,
        (pid, key): (i32, i32),
    ) -> ServerSide {
        ServerSide {
            r,
            w,
            inbox: Inbox::with(buf),
            outbox: Outbox::default(),
            dirty: false,
            tls,
            backend,
            pid,
            key,
            owed: 0,
        }
    }

    fn from_parts(
        stream: Stream,
        buf: bytes::BytesMut,
        backend: Backend,
        pid: i32,
        key: i32,
    ) -> ServerSide {
        let tls = stream.is_tls();
        ServerSide::from_halves(tokio::io::split(stream), buf, tls, backend, (pid, key))
    }

    /// Nothing buffered either way and nothing owed to pgbaton. (What the
    /// client has in flight the ledger's expected replies say: see
    /// `Ledger::in_flight`.)
    pub fn is_idle(&self) -> bool {
        self.inbox.streaming == 0 && self.outbox.is_empty() && self.owed == 0
    }

    /// An abandoned batch of pgbaton's own may have reached the server only
    /// in part: nothing it sends can be trusted.
    pub fn is_torn(&self) -> bool {
        self.owed == TORN
    }
}
