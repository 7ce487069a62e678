//! Protocol tracker: counts what the client has asked for against the
//! ReadyForQuery messages the server has sent, and so knows when the session
//! is at a safe point (idle, nothing in flight) without guessing.
//!
//! Rules: every Query, Sync and FunctionCall
//! gets exactly one ReadyForQuery; an extended-protocol batch is open from its
//! first Parse/Bind/Describe/Execute/Close/Flush until its Sync; COPY runs
//! from Copy{In,Out,Both}Response to the next ReadyForQuery.

use crate::protocol::backend::{BackendTag, TxStatus};
use crate::protocol::frontend::FrontendTag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    None,
    In,
    Out,
    Both,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    /// Query, Sync and FunctionCall forwarded without their ReadyForQuery yet.
    outstanding: u32,
    /// Extended-protocol messages forwarded since the last Sync.
    batch_open: bool,
    copy: CopyState,
    tx: TxStatus,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            outstanding: 0,
            batch_open: false,
            copy: CopyState::None,
            tx: TxStatus::Idle,
        }
    }
}

impl Tracker {
    /// Called for every client message forwarded to the server.
    #[inline]
    pub fn on_frontend(&mut self, tag: FrontendTag) {
        match tag {
            FrontendTag::Query | FrontendTag::FunctionCall => self.outstanding += 1,
            FrontendTag::Sync => {
                self.outstanding += 1;
                self.batch_open = false;
            }
            FrontendTag::Parse
            | FrontendTag::Bind
            | FrontendTag::Describe
            | FrontendTag::Execute
            | FrontendTag::Close
            | FrontendTag::Flush => self.batch_open = true,
            _ => {}
        }
    }

    /// Requests the server skipped after an error in an extended batch
    /// (a Query or FunctionCall sent before the batch's Sync): they will
    /// never get their ReadyForQuery.
    pub fn forget_requests(&mut self, n: u32) {
        self.outstanding = self.outstanding.saturating_sub(n);
    }

    /// Called for every server message forwarded to the client; `body` is
    /// only read for ReadyForQuery.
    #[inline]
    pub fn on_backend(&mut self, tag: BackendTag, body: &[u8]) {
        match tag {
            BackendTag::ReadyForQuery => {
                self.outstanding = self.outstanding.saturating_sub(1);
                self.copy = CopyState::None;
                if let Some(tx) = body.first().copied().and_then(TxStatus::from_byte) {
                    self.tx = tx;
                }
            }
            BackendTag::CopyInResponse => self.copy = CopyState::In,
            BackendTag::CopyOutResponse => self.copy = CopyState::Out,
            BackendTag::CopyBothResponse => self.copy = CopyState::Both,
            _ => {}
        }
    }

    /// True when the session can be moved or closed without losing anything:
    /// every request answered, no batch open, no COPY, not in a transaction.
    pub fn is_safe_point(&self) -> bool {
        self.outstanding == 0
            && !self.batch_open
            && self.copy == CopyState::None
            && self.tx == TxStatus::Idle
    }

    /// True when the client has nothing in flight, whatever the transaction status.
    pub fn is_quiet(&self) -> bool {
        self.outstanding == 0 && !self.batch_open && self.copy == CopyState::None
    }

    pub fn tx_status(&self) -> TxStatus {
        self.tx
    }

    pub fn copy_state(&self) -> CopyState {
        self.copy
    }

    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    pub fn batch_open(&self) -> bool {
        self.batch_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrontendTag as F;

    fn rfq(t: &mut Tracker, status: u8) {
        t.on_backend(BackendTag::ReadyForQuery, &[status]);
    }

    #[test]
    fn simple_query_round_trip() {
        let mut t = Tracker::default();
        assert!(t.is_safe_point());
        t.on_frontend(F::Query);
        assert!(!t.is_safe_point());
        t.on_backend(BackendTag::CommandComplete, b"");
        assert!(!t.is_safe_point());
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn pipeline_of_two_syncs_needs_two_rfqs() {
        let mut t = Tracker::default();
        for tag in [
            F::Parse,
            F::Bind,
            F::Execute,
            F::Sync,
            F::Parse,
            F::Bind,
            F::Execute,
            F::Sync,
        ] {
            t.on_frontend(tag);
        }
        rfq(&mut t, b'I');
        assert!(!t.is_safe_point(), "second batch still in flight");
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn error_mid_batch_still_one_rfq_per_sync() {
        let mut t = Tracker::default();
        for tag in [F::Parse, F::Bind, F::Execute, F::Parse, F::Sync] {
            t.on_frontend(tag);
        }
        t.on_backend(BackendTag::ErrorResponse, b"");
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn flush_without_sync_is_not_safe() {
        let mut t = Tracker::default();
        for tag in [F::Parse, F::Bind, F::Execute, F::Flush] {
            t.on_frontend(tag);
        }
        t.on_backend(BackendTag::CommandComplete, b"");
        assert!(!t.is_safe_point());
        t.on_frontend(F::Sync);
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn transaction_blocks_the_safe_point() {
        let mut t = Tracker::default();
        t.on_frontend(F::Query);
        rfq(&mut t, b'T');
        assert!(!t.is_safe_point());
        assert!(t.is_quiet());
        t.on_frontend(F::Query);
        rfq(&mut t, b'E');
        assert!(!t.is_safe_point());
        t.on_frontend(F::Query);
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn copy_in_out_and_fail() {
        let mut t = Tracker::default();
        t.on_frontend(F::Query);
        t.on_backend(BackendTag::CopyInResponse, b"");
        assert_eq!(t.copy_state(), CopyState::In);
        t.on_frontend(F::CopyData);
        t.on_frontend(F::CopyFail);
        t.on_backend(BackendTag::ErrorResponse, b"");
        assert!(!t.is_safe_point());
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());

        t.on_frontend(F::Query);
        t.on_backend(BackendTag::CopyOutResponse, b"");
        t.on_backend(BackendTag::CopyData, b"");
        t.on_backend(BackendTag::CopyDone, b"");
        assert!(!t.is_safe_point());
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn function_call_counts() {
        let mut t = Tracker::default();
        t.on_frontend(F::FunctionCall);
        assert!(!t.is_safe_point());
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }
}
