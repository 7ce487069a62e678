//! `SHOW BACKENDS`: the fleet's routing as this replica applied it (the
//! configured backends and those SCALE OUT added), which is the default,
//! which drain, how many sessions each serves here and across the fleet
//! (as the replicas last reported), and the routing revision.

use super::ResultSet;
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    let routing = shared.env.routing.current();
    let mut rs = ResultSet::new(vec![
        "name",
        "host",
        "port",
        "default",
        "sessions",
        "status",
        "draining",
        "fleet_sessions",
        "revision",
    ]);
    let fleet = shared.cluster.plans.state().sessions();
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
            Some(
                if routing.is_draining(&b.name) {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
            ),
            Some(
                fleet
                    .get(&b.name)
                    .map_or(0, |l| l.iter().map(|(_, n)| n).sum::<usize>())
                    .to_string(),
            ),
            Some(routing.version.to_string()),
        ]);
    }
    rs
}
