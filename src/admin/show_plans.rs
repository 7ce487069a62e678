//! `SHOW PLANS`: the fleet's current (or last) plan, one row per replica:
//! how many of its sessions moved, are waiting, are pinned (with the
//! reasons) or were aborted, and whether it is done. Read from the store,
//! so every replica shows the same.

use super::ResultSet;
use crate::proxy::Shared;
use std::collections::BTreeSet;

pub fn run(shared: &Shared) -> ResultSet {
    let state = shared.cluster.plans.state();
    let mut rs = ResultSet::new(vec![
        "plan",
        "what",
        "state",
        "gen",
        "term",
        "proposed_by",
        "node",
        "moved",
        "waiting",
        "pinned",
        "aborted",
        "done",
        "reasons",
        "note",
    ]);
    if !state.reachable {
        rs.warnings
            .push("the coordination store is unreachable: this is the last state read".into());
    }
    let Some((_, plan)) = &state.plan else {
        return rs;
    };
    let id = &plan.proposal.id;
    let acks: Vec<_> = state
        .acks
        .iter()
        .filter(|a| a.plan == *id && a.gen == plan.gen)
        .collect();
    let nodes: BTreeSet<&str> = plan
        .members
        .iter()
        .map(String::as_str)
        .chain(acks.iter().map(|a| a.node.as_str()))
        .chain(state.live.iter().map(String::as_str))
        .collect();
    let nodes: Vec<Option<&str>> = if nodes.is_empty() {
        vec![None]
    } else {
        nodes.into_iter().map(Some).collect()
    };
    for node in nodes {
        let ack = node.and_then(|n| acks.iter().find(|a| a.node == n));
        let reasons: BTreeSet<String> = ack
            .into_iter()
            .flat_map(|a| a.rows.iter())
            .filter(|r| r.status != "done")
            .filter_map(|r| r.reason.clone())
            .collect();
        let count = |f: fn(&crate::cluster::records::Ack) -> usize| ack.map(|a| f(a).to_string());
        rs.push(vec![
            Some(id.clone()),
            Some(plan.proposal.what.clone()),
            Some(plan.state.as_str().to_string()),
            Some(plan.gen.to_string()),
            Some(plan.term.to_string()),
            Some(plan.proposal.by.clone()),
            node.map(str::to_string),
            count(|a| a.moved),
            count(|a| a.waiting),
            count(|a| a.pinned),
            count(|a| a.aborted),
            ack.map(|a| if a.done { "yes" } else { "no" }.to_string()),
            (!reasons.is_empty()).then(|| reasons.into_iter().collect::<Vec<_>>().join("; ")),
            plan.reason.clone(),
        ]);
    }
    rs
}
