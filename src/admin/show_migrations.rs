//! `SHOW MIGRATIONS`: moves, newest last, with pause and total time.

use super::ResultSet;
use crate::proxy::Shared;
use std::time::UNIX_EPOCH;

pub fn run(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(vec![
        "id",
        "session",
        "from",
        "to",
        "status",
        "reason",
        "pause_us",
        "total_us",
        "started_at",
    ]);
    for r in shared.history.list() {
        let started = r
            .started_at
            .duration_since(UNIX_EPOCH)
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .unwrap_or_default();
        rs.push(vec![
            Some(r.id.to_string()),
            Some(r.session.to_string()),
            Some(r.from),
            Some(r.to),
            Some(r.status.as_str().to_string()),
            r.reason,
            r.pause.map(|d| d.as_micros().to_string()),
            r.total.map(|d| d.as_micros().to_string()),
            Some(started),
        ]);
    }
    rs
}
