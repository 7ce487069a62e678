//! `SHOW BACKENDS`: the routing's backends (the configured ones and those
//! SCALE OUT added), which is the default, and how many sessions each
//! serves.

use super::ResultSet;
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    let routing = shared.env.routing.current();
    let mut rs = ResultSet::new(vec![
        "name", "host", "port", "default", "sessions", "status",
    ]);
    for b in &routing.backends {
        rs.push(vec![
            Some(b.name.clone()),
            Some(b.host.clone()),
            Some(b.port.to_string()),
            Some(
                if b.name == routing.default {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
            ),
            Some(shared.env.sessions.count_on(&b.name).to_string()),
            Some(shared.env.connectors.status(&b.name).to_string()),
        ]);
    }
    rs
}
