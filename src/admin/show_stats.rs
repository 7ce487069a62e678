//! `SHOW STATS`: process-wide counters, one row each.

use super::ResultSet;
use crate::net::busy_poll;
use crate::proxy::Shared;
use std::sync::atomic::Ordering;

pub fn run(shared: &Shared) -> ResultSet {
    let s = &shared.env.stats;
    let mut rs = ResultSet::new(vec!["name", "value"]);
    for (name, counter) in [
        ("sessions_total", &s.sessions_total),
        ("sessions_active", &s.sessions_active),
        ("sessions_refused", &s.sessions_refused),
        ("cancels_forwarded", &s.cancels_forwarded),
        ("server_connect_failures", &s.server_connect_failures),
        ("protocol_errors", &s.protocol_errors),
        ("busy_poll_ready", &busy_poll::STATS.ready),
        ("busy_poll_timeouts", &busy_poll::STATS.timeouts),
        ("busy_poll_contended", &busy_poll::STATS.contended),
    ] {
        rs.push(vec![
            Some(name.to_string()),
            Some(counter.load(Ordering::Relaxed).to_string()),
        ]);
    }
    rs
}
