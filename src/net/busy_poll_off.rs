//! Busy polling where there is no epoll (not Linux): always off, so
//! `busy_poll` is accepted and does nothing. See `busy_poll.rs`.

use std::time::Duration;

pub use super::busy_poll_stats::Stats;

/// Never on here.
#[derive(Clone, Default)]
pub struct BusyPoll;

impl BusyPoll {
    pub fn off() -> BusyPoll {
        BusyPoll
    }

    pub fn new(_max: Duration) -> std::io::Result<BusyPoll> {
        Ok(BusyPoll)
    }

    pub fn is_on(&self) -> bool {
        false
    }

    pub fn stats(&self) -> &Stats {
        static OFF: Stats = Stats::new();
        &OFF
    }

    pub fn watch(&self, _socket: &impl std::os::fd::AsFd) {}

    pub fn before_park(&self) {}

    pub fn after_unpark(&self) {}
}
