//! One direction's unread bytes, framed in place by a relay.

use bytes::BytesMut;

/// Read buffer growth step.
pub const READ_CHUNK: usize = 64 * 1024;

/// One direction's unread bytes plus the remainder of a message that is
/// streaming through.
#[derive(Debug, Default)]
pub struct Inbox {
    pub buf: BytesMut,
    /// Bytes of the current message still to pass through unread.
    pub streaming: usize,
    /// Bytes of a refused message still to drop as they arrive.
    pub skipping: usize,
    /// The message at the start of `buf` that is held whole and has not all
    /// arrived yet: its tag and whole length.
    pub partial: Option<(u8, usize)>,
}

impl Inbox {
    /// An inbox that starts with bytes already read.
    pub fn with(buf: BytesMut) -> Inbox {
        Inbox {
            buf,
            ..Inbox::default()
        }
    }

    pub fn needs_room(&self) -> bool {
        self.buf.capacity() - self.buf.len() < READ_CHUNK / 4
    }

    pub fn reserve(&mut self) {
        if self.needs_room() {
            self.buf.reserve(READ_CHUNK);
        }
    }
}
