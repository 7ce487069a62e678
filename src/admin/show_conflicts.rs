//! `SHOW CONFLICTS`: proposals that lost the race for the fleet's plan
//! slot. Open reports (the leader has not decided them yet), then the
//! leader's resolutions, newest last, one row per losing proposal, with
//! why it lost and whether its replica acknowledged (dropped it and runs
//! on the committed routing).

use super::ResultSet;
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    let state = shared.cluster.plans.state();
    let mut rs = ResultSet::new(vec![
        "kind",
        "resolution",
        "plan",
        "node",
        "what",
        "winner",
        "reason",
        "term",
        "acknowledged",
    ]);
    for (node, r, _) in &state.conflicts {
        rs.push(vec![
            Some("report".into()),
            None,
            Some(r.proposal.id.clone()),
            Some(node.clone()),
            Some(r.proposal.what.clone()),
            None,
            Some(format!(
                "waiting for the leader; the slot held {}",
                r.against.as_deref().unwrap_or("a newer write")
            )),
            None,
            None,
        ]);
    }
    for res in &state.resolutions {
        for l in &res.losers {
            let acknowledged = state
                .adopted
                .iter()
                .any(|a| a.node == l.by && a.resolution >= res.n);
            rs.push(vec![
                Some("resolution".into()),
                Some(res.n.to_string()),
                Some(l.id.clone()),
                Some(l.by.clone()),
                Some(l.what.clone()),
                Some(format!("{} ({})", res.winner, res.winner_what)),
                Some(l.why.clone()),
                Some(res.term.to_string()),
                Some(if acknowledged { "yes" } else { "no" }.into()),
            ]);
        }
    }
    rs
}
