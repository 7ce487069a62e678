//! `SHOW BACKENDS`: the configured servers, which is the default, and how
//! many sessions each serves.

use super::ResultSet;
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    let config = shared.config();
    let mut rs = ResultSet::new(vec![
        "name", "host", "port", "default", "sessions", "status",
    ]);
    for (i, b) in config.backends.iter().enumerate() {
        rs.push(vec![
            Some(b.name.clone()),
            Some(b.host.clone()),
            Some(b.port.to_string()),
            Some(if i == 0 { "yes" } else { "no" }.to_string()),
            Some(shared.sessions.count_on(&b.name).to_string()),
            Some(shared.backend_status(&b.name).to_string()),
        ]);
    }
    rs
}
