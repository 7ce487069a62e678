//! `SHOW STATS`: process-wide counters, one row each.

use super::ResultSet;
use crate::proxy::Shared;
use std::sync::atomic::Ordering;

pub fn run(shared: &Shared) -> ResultSet {
    let s = &shared.stats;
    let mut rs = ResultSet::new(vec!["name", "value"]);
    for (name, counter) in [
        ("sessions_total", &s.sessions_total),
        ("sessions_active", &s.sessions_active),
        ("sessions_refused", &s.sessions_refused),
        ("cancels_forwarded", &s.cancels_forwarded),
        ("server_connect_failures", &s.server_connect_failures),
        ("protocol_errors", &s.protocol_errors),
    ] {
        rs.push(vec![
            Some(name.to_string()),
            Some(counter.load(Ordering::Relaxed).to_string()),
        ]);
    }
    rs
}
