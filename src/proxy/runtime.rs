//! The tokio runtime pgbaton serves on: one thread by default, several when
//! configured, with busy polling hooked into its idle path.

use crate::net::busy_poll;
use std::time::Duration;

/// Builds the runtime. `threads` of 1 runs everything on the calling
/// thread, like PgBouncer; `busy_poll` is the longest that thread, when it
/// runs out of work, spins for a socket before it sleeps (zero: never).
///
/// Several threads never spin: tokio lets one of them sleep in epoll and
/// parks the others on a condition variable, so a readable socket would
/// end their spin without giving them anything to do.
pub fn build(threads: usize, busy_poll: Duration) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        busy_poll::enable(busy_poll)?;
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .on_thread_park(busy_poll::before_park)
        .on_thread_unpark(busy_poll::after_unpark)
        .enable_all()
        .build()
}
