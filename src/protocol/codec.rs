//! Message framing: `tag (1 byte) | length (int32, counts itself) | body`.
//!
//! The relay never decodes a message it does not need; it only reads headers to
//! find message boundaries, so a batch of messages moves as one slice.

use thiserror::Error;

/// Size of a regular message header: tag byte plus the length word.
pub const HEADER_LEN: usize = 5;

/// Postgres refuses "small" client messages (Sync, Execute, Close, ...) above
/// `PQ_SMALL_MESSAGE_LIMIT` = 10000 bytes (src/include/libpq/libpq.h), and
/// large ones (Query, Parse, Bind, CopyData, FunctionCall) above
/// `PQ_LARGE_MESSAGE_LIMIT` = 1 GiB - 1.
pub const PG_SMALL_MESSAGE_LIMIT: usize = 10_000;
pub const PG_LARGE_MESSAGE_LIMIT: usize = (1 << 30) - 1;

/// The header of one message: its tag and its total size on the wire
/// (tag byte included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    /// Total bytes on the wire, `1 + length`.
    pub total: usize,
}

impl Frame {
    pub fn body_len(&self) -> usize {
        self.total - HEADER_LEN
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("message type {tag:?} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLong { tag: char, len: usize, limit: usize },
}

/// Reads the header at the start of `buf`, if a whole header is there.
///
/// `limit` returns the largest body allowed for a tag; the check happens on the
/// header alone so an oversized message is refused before it is buffered.
pub fn peek_frame(buf: &[u8], limit: impl Fn(u8) -> usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::BadLength {
            tag: tag as char,
            len: len.into(),
        });
    }
    let len = len as usize;
    let max = limit(tag);
    if len - 4 > max {
        return Err(FrameError::TooLong {
            tag: tag as char,
            len,
            limit: max,
        });
    }
    Ok(Some(Frame {
        tag,
        total: len + 1,
    }))
}

/// Reads a whole message at the start of `buf`: its frame and its body, or
/// `None` when more bytes are needed.
pub fn split_message(
    buf: &[u8],
    limit: impl Fn(u8) -> usize,
) -> Result<Option<(Frame, &[u8])>, FrameError> {
    match peek_frame(buf, limit)? {
        Some(f) if buf.len() >= f.total => Ok(Some((f, &buf[HEADER_LEN..f.total]))),
        _ => Ok(None),
    }
}

/// Reads a NUL-terminated string from the front of `buf`, returning it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: u8) -> usize {
        1 << 20
    }

    #[test]
    fn frames_a_complete_message() {
        let msg = b"Q\0\0\0\x0dSELECT 1\0rest";
        let (f, body) = split_message(msg, any).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.total, 14);
        assert_eq!(body, b"SELECT 1\0");
    }

    #[test]
    fn waits_for_more_bytes() {
        assert_eq!(split_message(b"Q\0\0", any), Ok(None));
        assert_eq!(split_message(b"Q\0\0\0\x0dSEL", any), Ok(None));
        assert!(peek_frame(b"Q\0\0\0\x0dSEL", any).unwrap().is_some());
    }

    #[test]
    fn refuses_short_and_negative_lengths() {
        assert!(matches!(
            peek_frame(b"Q\0\0\0\x03", any),
            Err(FrameError::BadLength { len: 3, .. })
        ));
        assert!(matches!(
            peek_frame(b"Q\xff\xff\xff\xff", any),
            Err(FrameError::BadLength { len: -1, .. })
        ));
    }

    #[test]
    fn refuses_oversized_before_buffering() {
        let r = peek_frame(b"S\0\x01\0\0", |_| 100);
        assert!(matches!(r, Err(FrameError::TooLong { tag: 'S', .. })));
    }

    #[test]
    fn cstr_splits() {
        assert_eq!(cstr(b"ab\0cd"), Some((&b"ab"[..], &b"cd"[..])));
        assert_eq!(cstr(b"ab"), None);
    }
}
