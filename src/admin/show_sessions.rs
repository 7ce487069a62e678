//! `SHOW SESSIONS`: one row per client session.

use super::ResultSet;
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(vec![
        "id",
        "user",
        "database",
        "application_name",
        "client_addr",
        "backend",
        "backend_pid",
        "state",
        "tx_status",
        "settings",
        "prepared",
        "listening",
        "pinned",
        "migrations",
        "move",
    ]);
    for e in shared.env.sessions.list() {
        let live = e.live();
        rs.push(vec![
            Some(e.id.to_string()),
            Some(e.user.clone()),
            Some(e.database.clone()),
            Some(live.summary.application_name.clone()),
            Some(e.client_addr.to_string()),
            Some(live.backend),
            Some(live.backend_pid.to_string()),
            Some(live.state.as_str().to_string()),
            Some(live.tx_status.to_string()),
            Some(live.summary.settings.to_string()),
            Some(live.summary.prepared.to_string()),
            Some(live.summary.listening.to_string()),
            live.summary.pinned,
            Some(live.migrations.to_string()),
            live.moving.map(str::to_string),
        ]);
    }
    rs
}
