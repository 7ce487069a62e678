//! A queue of byte chunks waiting to be written to one side. Chunks are
//! frozen slices of the read buffer of the other side: nothing is copied.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Outbox {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    pub fn front(&self) -> &[u8] {
        self.chunks.front().map(|c| c.as_ref()).unwrap_or(&[])
    }

    /// Marks `n` bytes of the front chunk as written.
    pub fn advance(&mut self, n: usize) {
        if let Some(front) = self.chunks.front_mut() {
            let n = n.min(front.len());
            front.advance(n);
            self.len -= n;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_across_chunks() {
        let mut o = Outbox::default();
        o.push(Bytes::from_static(b"abc"));
        o.push(Bytes::new());
        o.push(Bytes::from_static(b"de"));
        assert_eq!(o.len(), 5);
        o.advance(2);
        assert_eq!(o.front(), b"c");
        o.advance(1);
        assert_eq!(o.front(), b"de");
        o.advance(5);
        assert!(o.is_empty());
        assert_eq!(o.front(), b"");
    }
}
