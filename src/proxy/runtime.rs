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
    if threads > 1 {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        return builder.worker_threads(threads).enable_all().build();
    }
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if busy_poll::enable(busy_poll)? {
        builder
            .on_thread_park(busy_poll::before_park)
            .on_thread_unpark(busy_poll::after_unpark);
    }
    builder.enable_all().build()
}
