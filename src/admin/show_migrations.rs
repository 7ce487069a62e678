//! `SHOW MIGRATIONS`: moves, newest last, with pause and total time.

use super::ResultSet;
use crate::protocol::write::{timestamptz, TIMESTAMPTZ_OID};
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(vec![
        "id",
        "session",
        "from",
        "to",
        "status",
        "reason",
        "check",
        "pause_us",
        "total_us",
        "started_at",
    ]);
    rs.set_type("started_at", TIMESTAMPTZ_OID);
    for r in shared.env.moves.history.list() {
        let check = r.full_check.map(|full| if full { "full" } else { "light" });
        rs.push(vec![
            Some(r.id.to_string()),
            Some(r.session.to_string()),
            Some(r.from),
            Some(r.to),
            Some(r.status.as_str().to_string()),
            r.reason,
            check.map(str::to_string),
            r.pause.map(|d| d.as_micros().to_string()),
            r.total.map(|d| d.as_micros().to_string()),
            Some(timestamptz(r.started_at)),
        ]);
    }
    rs
}
