//! How busy polling's spins have ended, for `SHOW STATS` (zero where busy
//! polling is off or unsupported).

use std::sync::atomic::AtomicU64;

/// How the spins so far have ended, for `SHOW STATS`.
pub struct Stats {
    /// Data arrived on a watched socket (a reply, a query, a new client)
    /// during the spin: the thread went on without sleeping.
    pub ready: AtomicU64,
    /// The window passed and the thread slept.
    pub timeouts: AtomicU64,
    /// Another thread wanted the core; the thread slept.
    pub contended: AtomicU64,
}

impl Stats {
    pub const fn new() -> Stats {
        Stats {
            ready: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            contended: AtomicU64::new(0),
        }
    }
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}
