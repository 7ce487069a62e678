//! `SHOW MIGRATIONS`: this replica's moves, newest last, with pause and
//! total time and the plan each belongs to; then the other replicas' moves
//! in the fleet's current plan, as they reported them.

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
        "plan",
        "node",
    ]);
    rs.set_type("started_at", TIMESTAMPTZ_OID);
    let state = shared.cluster.plans.state();
    let me = shared.cluster.plans.me();
    let current = state
        .plan
        .as_ref()
        .map(|(_, p)| (p.proposal.id.as_str(), p.gen));
    let acks: Vec<_> = state
        .acks
        .iter()
        .filter(|a| Some((a.plan.as_str(), a.gen)) == current)
        .collect();
    let mine = acks.iter().find(|a| a.node == me);
    for r in shared.env.moves.history.list() {
        let plan = mine
            .filter(|a| {
                a.rows
                    .iter()
                    .any(|row| row.session == r.session && row.to == r.to)
            })
            .map(|a| a.plan.clone());
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
            plan,
            Some(me.to_string()),
        ]);
    }
    // The other replicas' moves in the current plan, as they reported them.
    for a in acks.iter().filter(|a| a.node != me) {
        for row in &a.rows {
            rs.push(vec![
                None,
                Some(row.session.to_string()),
                Some(row.from.clone()),
                Some(row.to.clone()),
                Some(row.status.clone()),
                row.reason.clone(),
                None,
                row.pause_us.map(|u| u.to_string()),
                row.total_us.map(|u| u.to_string()),
                None,
                Some(a.plan.clone()),
                Some(a.node.clone()),
            ]);
        }
    }
    rs
}
