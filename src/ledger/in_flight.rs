//! What is in flight on a session's server connection, as the ledger's
//! expected replies know it: requests sent and not answered yet (every
//! Query, Sync and FunctionCall gets exactly one ReadyForQuery), whether an
//! extended-protocol batch is open (from its first Parse, Bind, Describe,
//! Execute, Close or Flush until its Sync), COPY (from Copy{In,Out,Both}
//! Response to the next ReadyForQuery) and the transaction status. One
//! source of truth: the request count is the count of requests in the
//! ledger's queue of expected replies, so a request the server skips
//! after an error leaves it when its expectation does. From it the relay
//! knows when the session is at a safe point, without guessing.

use crate::protocol::backend::{BackendTag, TxStatus};
use crate::protocol::frontend::FrontendTag;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    None,
    In,
    Out,
    Both,
}

/// The protocol state that is not a reply expected (kept by the ledger
/// beside its queue).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Protocol {
    pub(crate) batch_open: bool,
    pub(crate) copy: CopyState,
    pub(crate) tx: TxStatus,
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            batch_open: false,
            copy: CopyState::None,
            tx: TxStatus::Idle,
        }
    }
}

impl Protocol {
    /// A client message forwarded (and not skipped by the server).
    #[inline]
    pub(crate) fn on_frontend(&mut self, tag: FrontendTag) {
        match tag {
            FrontendTag::Sync => self.batch_open = false,
            FrontendTag::Parse
            | FrontendTag::Bind
            | FrontendTag::Describe
            | FrontendTag::Execute
            | FrontendTag::Close
            | FrontendTag::Flush => self.batch_open = true,
            _ => {}
        }
    }

    /// A server message; `body` is only read for ReadyForQuery.
    #[inline]
    pub(crate) fn on_backend(&mut self, tag: BackendTag, body: &[u8]) {
        match tag {
            BackendTag::ReadyForQuery => {
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
}

/// A view of what is in flight now ([`super::Ledger::in_flight`]).
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    pub(crate) requests: u32,
    pub(crate) protocol: Protocol,
}

impl InFlight {
    /// True when the session can be moved or closed without losing anything:
    /// every request answered, no batch open, no COPY, not in a transaction.
    pub fn is_safe_point(&self) -> bool {
        self.is_quiet() && self.protocol.tx == TxStatus::Idle
    }

    /// True when the client has nothing in flight, whatever the transaction status.
    pub fn is_quiet(&self) -> bool {
        self.requests == 0 && !self.protocol.batch_open && self.protocol.copy == CopyState::None
    }

    pub fn tx_status(&self) -> TxStatus {
        self.protocol.tx
    }

    pub fn copy_state(&self) -> CopyState {
        self.protocol.copy
    }

    /// Query, Sync and FunctionCall requests without their ReadyForQuery.
    pub fn outstanding(&self) -> u32 {
        self.requests
    }

    pub fn batch_open(&self) -> bool {
        self.protocol.batch_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use FrontendTag as F;

    /// The ledger, fed client messages with bodies it can read.
    #[derive(Default)]
    struct T(Ledger);

    impl T {
        fn on_frontend(&mut self, tag: FrontendTag) {
            let body: &[u8] = match tag {
                F::Query => b"SELECT 1\0",
                F::Parse => b"\0SELECT 1\0\0\0",
                F::Bind => b"\0\0\0\0\0\0\0\0",
                F::Execute => b"\0\0\0\0\0",
                _ => b"",
            };
            self.0.on_frontend(tag, body);
        }

        fn on_backend(&mut self, tag: BackendTag, body: &[u8]) {
            self.0.on_backend(tag, body);
        }

        fn is_safe_point(&self) -> bool {
            self.0.in_flight().is_safe_point()
        }

        fn is_quiet(&self) -> bool {
            self.0.in_flight().is_quiet()
        }

        fn copy_state(&self) -> CopyState {
            self.0.in_flight().copy_state()
        }
    }

    fn rfq(t: &mut T, status: u8) {
        t.on_backend(BackendTag::ReadyForQuery, &[status]);
    }

    #[test]
    fn simple_query_round_trip() {
        let mut t = T::default();
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
        let mut t = T::default();
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
        let mut t = T::default();
        for tag in [F::Parse, F::Bind, F::Execute, F::Parse, F::Sync] {
            t.on_frontend(tag);
        }
        t.on_backend(BackendTag::ErrorResponse, b"");
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }

    #[test]
    fn flush_without_sync_is_not_safe() {
        let mut t = T::default();
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
        let mut t = T::default();
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
        let mut t = T::default();
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
        let mut t = T::default();
        t.on_frontend(F::FunctionCall);
        assert!(!t.is_safe_point());
        rfq(&mut t, b'I');
        assert!(t.is_safe_point());
    }
}
