//! The tokio runtime pgbaton serves on: one thread by default, several when
//! configured, with busy polling hooked into its idle path.

use crate::net::busy_poll::BusyPoll;
use std::time::Duration;

/// Builds the runtime. `threads` of 1 runs everything on the calling
/// thread, like PgBouncer; `busy_poll` is the longest that thread, when it
/// runs out of work, spins for a socket before it sleeps (zero: never).
///
/// Several threads never spin: tokio lets one of them sleep in epoll and
/// parks the others on a condition variable, so a readable socket would
/// end their spin without giving them anything to do.
/// Returns the runtime and its busy polling, to give to the proxy
/// ([`crate::proxy::Proxy::bind`]) so the sockets it opens are watched.
pub fn build(
    threads: usize,
    busy_poll: Duration,
) -> std::io::Result<(tokio::runtime::Runtime, BusyPoll)> {
    if threads > 1 {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let runtime = builder.worker_threads(threads).enable_all().build()?;
        return Ok((runtime, BusyPoll::off()));
    }
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let poll = BusyPoll::new(busy_poll)?;
    if poll.is_on() {
        let (park, unpark) = (poll.clone(), poll.clone());
        builder
            .on_thread_park(move || park.before_park())
            .on_thread_unpark(move || unpark.after_unpark());
    }
    Ok((builder.enable_all().build()?, poll))
}
