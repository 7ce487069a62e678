//! Keeps this replica in step with the fleet: applies the routing the
//! store committed, carries out the current plan on this replica's own
//! sessions and reports its progress, reports its sessions per backend,
//! and tells the cancel path which replica number is where.

use super::Shared;
use crate::cluster::plans::FleetState;
use crate::cluster::records::Load;
use crate::session::fleet::Executor;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Runs until the fleet's task stops.
pub async fn run(shared: Arc<Shared>) {
    let plans = shared.cluster.plans.clone();
    let mut changed = plans.watch();
    let mut ticker = tokio::time::interval(plans.poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut executor = Executor::default();
    loop {
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = ticker.tick() => {}
        }
        let state = plans.state();
        apply_routing(&shared, &state).await;
        peers(&shared);
        let routing_rev = shared.env.routing.current().version;
        if let Some((_, plan)) = &state.plan {
            if let Some(ack) = executor.step(&shared.env, plan, plans.me(), routing_rev) {
                plans.progress(ack);
            }
        }
        let mut backends = BTreeMap::new();
        for e in shared.env.sessions.list() {
            *backends.entry(e.backend()).or_insert(0) += 1;
        }
        plans.load(Load {
            node: plans.me().to_string(),
            backends,
            routing_rev: shared.env.routing.current().version,
        });
    }
}

/// Applies a newly committed routing, or seeds the store with this
/// replica's when the store has none (a store reached after a start
/// without it).
async fn apply_routing(shared: &Shared, state: &FleetState) {
    let env = &shared.env;
    match &state.routing {
        Some((rev, record)) if *rev != env.routing.current().version => {
            for b in &record.routing.backends {
                if let Err(e) = env.connectors.add(b) {
                    tracing::error!(backend = %b.name, error = %e, "cannot set up TLS towards a backend of the fleet's routing");
                }
            }
            let mut next = record.routing.clone();
            next.version = *rev;
            let applied = env.routing.update(|_| next);
            tracing::info!(revision = rev, default = %applied.default, by = %record.by, "routing of the fleet applied");
            shared.cluster.plans.applied(*rev);
        }
        None if state.reachable => {
            let local = (*env.routing.current()).clone();
            match shared.cluster.plans.seed(local).await {
                Ok((rev, routing)) => {
                    env.routing.update(|_| routing);
                    shared.cluster.plans.applied(rev);
                }
                Err(e) => tracing::warn!(error = %e, "cannot seed the fleet's routing"),
            }
        }
        _ => {}
    }
}

fn peers(shared: &Shared) {
    let view = shared.cluster.view();
    let map: HashMap<u8, String> = view
        .nodes
        .iter()
        .filter(|n| !n.is_self && n.number != 0)
        .map(|n| (n.number, n.client_addr.clone()))
        .collect();
    let mut peers = shared.env.peers.write().unwrap_or_else(|p| p.into_inner());
    if *peers != map {
        *peers = map;
    }
}
