//! Busy polling where there is no epoll (not Linux): always off, so
//! `busy_poll` is accepted and does nothing. See `busy_poll.rs`.

use std::time::Duration;

/// Never on here.
pub fn enable(_max: Duration) -> std::io::Result<bool> {
    Ok(false)
}

pub fn watch(_socket: &impl std::os::fd::AsFd) {}

pub fn before_park() {}

pub fn after_unpark() {}

pub use super::busy_poll_stats::{Stats, STATS};
