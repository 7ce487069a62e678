//! Busy polling where there is no epoll (not Linux): always off, so
//! `busy_poll` is accepted and does nothing. See `busy_poll.rs`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Never on here.
pub fn enable(_max: Duration) -> std::io::Result<bool> {
    Ok(false)
}

pub fn watch(_socket: &impl std::os::fd::AsFd) {}

pub fn before_park() {}

pub fn after_unpark() {}

/// Always zero here.
pub struct Stats {
    pub ready: AtomicU64,
    pub timeouts: AtomicU64,
    pub contended: AtomicU64,
}

pub static STATS: Stats = Stats {
    ready: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
    contended: AtomicU64::new(0),
};
