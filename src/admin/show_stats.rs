//! `SHOW STATS`: the proxy's counters, one row each.

use super::ResultSet;
use crate::proxy::Shared;
use std::sync::atomic::Ordering;

pub fn run(shared: &Shared) -> ResultSet {
    let s = &shared.env.stats;
    let spins = shared.env.busy_poll.stats();
    let mut rs = ResultSet::new(vec!["name", "value"]);
    for (name, counter) in [
        ("sessions_total", &s.sessions_total),
        ("sessions_active", &s.sessions_active),
        ("sessions_refused", &s.sessions_refused),
        ("cancels_forwarded", &s.cancels_forwarded),
        ("server_connect_failures", &s.server_connect_failures),
        ("protocol_errors", &s.protocol_errors),
        ("busy_poll_ready", &spins.ready),
        ("busy_poll_timeouts", &spins.timeouts),
        ("busy_poll_contended", &spins.contended),
    ] {
        rs.push(vec![
            Some(name.to_string()),
            Some(counter.load(Ordering::Relaxed).to_string()),
        ]);
    }
    rs
}
