//! `SHOW CLUSTER`: every replica this one knows from the store, with its
//! role, term, failures, when this one last read it and the routing
//! revision it last reported running on; first a line
//! saying whether the store answers (a NOTICE), or since when it does not
//! (a WARNING).

use super::ResultSet;
use crate::protocol::write;
use crate::proxy::Shared;
use std::time::{Duration, UNIX_EPOCH};

fn at(ms: u64) -> String {
    write::timestamptz(UNIX_EPOCH + Duration::from_millis(ms))
}

pub fn run(shared: &Shared) -> ResultSet {
    let view = shared.cluster.view();
    let mut rs = ResultSet::new(vec![
        "node",
        "client_addr",
        "admin_addr",
        "role",
        "term",
        "failures",
        "joined_at",
        "last_seen",
        "self",
        "routing_version",
    ]);
    let loads = shared.cluster.plans.state().loads;
    rs.set_type("term", write::INT8_OID);
    rs.set_type("failures", write::INT8_OID);
    rs.set_type("joined_at", write::TIMESTAMPTZ_OID);
    rs.set_type("last_seen", write::TIMESTAMPTZ_OID);
    if view.reachable {
        rs.notices.push(format!(
            "store {} reachable; term {}, leader {}",
            view.store,
            view.term,
            view.leader.as_deref().unwrap_or("none")
        ));
    } else {
        rs.warnings.push(format!(
            "store {} unreachable since {}: {}; serving on the last committed state",
            view.store,
            view.unreachable_since_ms.map_or("start".to_string(), at),
            view.last_error.as_deref().unwrap_or("no answer")
        ));
    }
    for n in &view.nodes {
        rs.push(vec![
            Some(n.id.clone()),
            Some(n.client_addr.clone()),
            Some(n.admin_addr.clone()),
            Some(n.role.as_str().to_string()),
            n.term.map(|t| t.to_string()),
            Some(n.failures.to_string()),
            Some(at(n.joined_at_ms)),
            Some(at(n.last_seen_ms)),
            Some(if n.is_self { "yes" } else { "no" }.to_string()),
            loads
                .iter()
                .find(|l| l.node == n.id)
                .map(|l| l.routing_rev.to_string()),
        ]);
    }
    rs
}
