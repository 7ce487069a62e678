//! The leader's side of the plans: decide a proposal and the reports that
//! raced it ([`crate::cluster::policy`]), commit the winner, its routing and
//! the resolution in one fenced transaction, and close an executing plan
//! at its barrier.

use super::replica::Coordinator;
use super::FleetState;
use crate::cluster::agent::Fence;
use crate::cluster::history::wall_ms;
use crate::cluster::policy;
use crate::cluster::records::*;
use crate::cluster::store::{Cond, CoordStore, Op, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// Resolutions kept in the store (older ones are deleted by the leader).
const KEEP_RESOLUTIONS: usize = 20;
/// Reports settled in one transaction (two operations each).
const MAX_REPORTS: usize = 50;
/// How long the leader gives a target to accept a TCP connection before it
/// refuses a plan to it.
const REACH_TIMEOUT: Duration = Duration::from_secs(1);

/// The targets of `candidates` that do not accept a TCP connection within
/// [`REACH_TIMEOUT`], by address, with why: each address tried once, all
/// at the same time, so a few dropping targets cost one timeout, not one
/// each.
async fn unreachable_targets(
    candidates: &[Proposal],
    state: &FleetState,
) -> HashMap<String, String> {
    let current = state.routing.as_ref().map(|(_, r)| &r.routing);
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    for p in candidates {
        let (Some(moves), Some(routing)) = (&p.moves, p.routing.as_ref().or(current)) else {
            continue;
        };
        if let Some(b) = routing.backend(&moves.to) {
            targets.insert(b.addr(), moves.to.clone());
        }
    }
    let mut checks = tokio::task::JoinSet::new();
    for (addr, name) in targets {
        checks.spawn(async move {
            let why =
                match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(&addr))
                    .await
                {
                    Ok(Ok(_)) => return None,
                    Ok(Err(e)) => format!("target {name} ({addr}) is unreachable: {e}"),
                    Err(_) => format!(
                    "target {name} ({addr}) did not accept a connection within {REACH_TIMEOUT:?}"
                ),
                };
            Some((addr, why))
        });
    }
    let mut out = HashMap::new();
    while let Some(done) = checks.join_next().await {
        if let Ok(Some((addr, why))) = done {
            out.insert(addr, why);
        }
    }
    out
}

impl Coordinator {
    /// The leader's work of one poll.
    pub(super) async fn lead(
        &mut self,
        store: &dyn CoordStore,
        fence: Fence,
        state: &FleetState,
    ) -> Result<(), StoreError> {
        // Bounded, so one transaction stays within etcd's limit on
        // operations (128 by default); the rest wait for the next poll.
        let reports: Vec<&(String, ConflictReport, u64)> =
            state.conflicts.iter().take(MAX_REPORTS).collect();
        match &state.plan {
            Some((rev, plan)) if plan.state == PlanState::Proposed => {
                let now = Instant::now();
                match &self.proposed_seen {
                    Some((id, since)) if *id == plan.proposal.id => {
                        if now.duration_since(*since) < self.setup.poll {
                            return Ok(());
                        }
                    }
                    _ => {
                        self.proposed_seen = Some((plan.proposal.id.clone(), now));
                        return Ok(());
                    }
                }
                self.decide(store, fence, state, *rev, plan, &reports).await
            }
            Some((rev, plan)) if plan.state == PlanState::Executing => {
                if !reports.is_empty() {
                    let losers = policy::against_executing(
                        &plan.proposal,
                        &reports
                            .iter()
                            .map(|r| r.1.proposal.clone())
                            .collect::<Vec<_>>(),
                    );
                    // A failed resolution must not hold the barrier up.
                    if let Err(e) = self
                        .resolve(
                            store,
                            fence,
                            state,
                            Some(&plan.proposal),
                            losers,
                            &reports,
                            Vec::new(),
                            Vec::new(),
                        )
                        .await
                    {
                        tracing::debug!(error = %e, "fleet: resolving reports failed; will retry");
                    }
                }
                self.barrier(store, fence, state, *rev, plan).await
            }
            slot => {
                if reports.is_empty() {
                    return Ok(());
                }
                // Reports filed after the plan they raced was decided: it
                // won, and these lost.
                let (winner, what) = slot
                    .as_ref()
                    .map_or(("none".to_string(), String::new()), |(_, p)| {
                        (p.proposal.id.clone(), p.proposal.what.clone())
                    });
                let losers = reports
                    .iter()
                    .map(|(_, r, _)| Loser {
                        id: r.proposal.id.clone(),
                        by: r.proposal.by.clone(),
                        what: r.proposal.what.clone(),
                        why: format!(
                            "plan {} ({what}) held the slot when it was proposed and has finished since; propose again",
                            r.against.as_deref().unwrap_or(&winner)
                        ),
                    })
                    .collect();
                let winner = slot.as_ref().map(|(_, p)| p.proposal.clone());
                self.resolve(
                    store,
                    fence,
                    state,
                    winner.as_ref(),
                    losers,
                    &reports,
                    Vec::new(),
                    Vec::new(),
                )
                .await
            }
        }
    }

    /// Is this proposal one the fleet can carry out now? `Some(reason)`
    /// when not.
    fn refuse(
        &self,
        p: &Proposal,
        state: &FleetState,
        unreachable: &HashMap<String, String>,
    ) -> Option<String> {
        let current = state.routing.as_ref().map(|(_, r)| &r.routing);
        let after = p.routing.as_ref().or(current)?;
        if let (Some(next), Some(now)) = (&p.routing, current) {
            if let Some(why) = now.refuse(next, &state.sessions()) {
                return Some(why);
            }
        }
        let moves = p.moves.as_ref()?;
        for name in moves.from.iter().chain(std::iter::once(&moves.to)) {
            if after.backend(name).is_none() {
                return Some(format!(
                    "unknown backend \"{name}\": plans name configured backends only"
                ));
            }
        }
        let addr = after.backend(&moves.to)?.addr();
        unreachable.get(&addr).cloned()
    }

    async fn decide(
        &mut self,
        store: &dyn CoordStore,
        fence: Fence,
        state: &FleetState,
        rev: u64,
        plan: &PlanRecord,
        reports: &[&(String, ConflictReport, u64)],
    ) -> Result<(), StoreError> {
        let mut candidates = vec![plan.proposal.clone()];
        candidates.extend(
            reports
                .iter()
                .map(|r| r.1.proposal.clone())
                .filter(|p| p.id != plan.proposal.id),
        );
        let unreachable = unreachable_targets(&candidates, state).await;
        let refused: Vec<Option<String>> = candidates
            .iter()
            .map(|c| self.refuse(c, state, &unreachable))
            .collect();
        // The checks took time: commit only on the seat as it is now.
        let fence = match self.setup.seat.borrow().leading {
            Some(f) if f.token == fence.token && Instant::now() < f.until => f,
            _ => return Ok(()),
        };
        let routing_rev = state.routing.as_ref().map_or(0, |(r, _)| *r);
        let d = policy::decide(&candidates, routing_rev, &refused);
        let guards = vec![
            (PLAN.to_string(), Cond::ModRev(rev)),
            (
                ROUTING.to_string(),
                match &state.routing {
                    Some((r, _)) => Cond::ModRev(*r),
                    None => Cond::Absent,
                },
            ),
        ];
        let (event, record, what, mut ops) = decided(&d, plan, fence, state);
        ops.insert(0, Op::put(PLAN, encode(&record)));
        // A lone proposal the leader refused needs no resolution: the
        // aborted plan says why.
        let others: Vec<Loser> = d
            .losers
            .iter()
            .filter(|l| d.winner.is_some() || l.id != plan.proposal.id)
            .cloned()
            .collect();
        let winner = d.winner.clone();
        if others.is_empty() && reports.is_empty() {
            let routing = puts_routing(&ops);
            if let Some(rev) = fenced(store, fence, guards, ops).await? {
                self.record(event, fence.term, rev, what);
                if let (true, Some(w)) = (routing, &winner) {
                    self.record("routing_committed", fence.term, rev, w.id.clone());
                }
            }
            return Ok(());
        }
        self.resolve(
            store,
            fence,
            state,
            winner.as_ref(),
            others,
            reports,
            guards,
            ops,
        )
        .await?;
        Ok(())
    }

    /// Commits a resolution (with whatever else must land with it) and
    /// deletes the reports it settles.
    #[allow(clippy::too_many_arguments)]
    async fn resolve(
        &mut self,
        store: &dyn CoordStore,
        fence: Fence,
        state: &FleetState,
        winner: Option<&Proposal>,
        losers: Vec<Loser>,
        reports: &[&(String, ConflictReport, u64)],
        mut guards: Vec<(String, Cond)>,
        mut ops: Vec<Op>,
    ) -> Result<(), StoreError> {
        let n = state.resolutions.last().map_or(0, |r| r.n) + 1;
        let resolution = Resolution {
            n,
            term: fence.term,
            leader: self.setup.me.clone(),
            winner: winner.map_or(String::new(), |w| w.id.clone()),
            winner_what: winner.map_or("nothing: every proposal was refused".into(), |w| {
                w.what.clone()
            }),
            losers,
            at_ms: wall_ms(),
        };
        let key = resolution_key(n);
        guards.push((key.clone(), Cond::Absent));
        for (node, report, rev) in reports {
            let key = conflict_key(node, &report.proposal.id);
            guards.push((key.clone(), Cond::ModRev(*rev)));
            ops.push(Op::delete(key));
        }
        let state_event = ops.first().and_then(|op| match op {
            Op::Put { key, value, .. } if key == PLAN => decode::<PlanRecord>(value),
            _ => None,
        });
        ops.push(Op::put(key, encode(&resolution)));
        let excess = (state.resolutions.len() + 1).saturating_sub(KEEP_RESOLUTIONS);
        for old in state.resolutions.iter().take(excess) {
            ops.push(Op::delete(resolution_key(old.n)));
        }
        let routing = puts_routing(&ops);
        if let Some(rev) = fenced(store, fence, guards, ops).await? {
            if let (true, Some(w)) = (routing, winner) {
                self.record("routing_committed", fence.term, rev, w.id.clone());
            }
            if let Some(p) = state_event {
                let event = if p.state == PlanState::Executing {
                    "plan_executing"
                } else {
                    "plan_aborted"
                };
                self.record(
                    event,
                    fence.term,
                    rev,
                    format!("{}: {}", p.proposal.id, p.proposal.what),
                );
            }
            let losers: Vec<String> = resolution.losers.iter().map(|l| l.id.clone()).collect();
            self.record(
                "resolved",
                fence.term,
                rev,
                format!(
                    "resolution {n}: winner {} losers {}",
                    winner.map_or("none", |w| w.id.as_str()),
                    losers.join(",")
                ),
            );
        }
        Ok(())
    }

    /// Closes an executing plan once every replica it waits for is done.
    async fn barrier(
        &mut self,
        store: &dyn CoordStore,
        fence: Fence,
        state: &FleetState,
        rev: u64,
        plan: &PlanRecord,
    ) -> Result<(), StoreError> {
        let live: BTreeSet<&str> = state.live.iter().map(String::as_str).collect();
        let expected: BTreeSet<&str> = plan
            .members
            .iter()
            .map(String::as_str)
            .chain(live.iter().copied())
            .collect();
        let now = Instant::now();
        let mut waiting = Vec::new();
        let mut gone = Vec::new();
        let mut left = Vec::new();
        for node in expected {
            if live.contains(node) {
                self.absent_since.remove(node);
                let done = state.acks.iter().any(|a| {
                    a.node == node && a.plan == plan.proposal.id && a.gen == plan.gen && a.done
                });
                if !done {
                    waiting.push(node);
                }
            } else if state.resigned.iter().any(|r| r == node) {
                // It left cleanly (SIGTERM): its sessions were closed or
                // drained with it, so there is nothing to wait for.
                left.push(node);
            } else {
                let since = *self.absent_since.entry(node.to_string()).or_insert(now);
                if now.duration_since(since) >= self.setup.grace {
                    gone.push(node);
                } else {
                    waiting.push(node);
                }
            }
        }
        if !waiting.is_empty() {
            return Ok(());
        }
        let mut notes = Vec::new();
        if !gone.is_empty() {
            notes.push(format!(
                "did not wait for {}: registration expired and the grace of {:?} passed",
                gone.join(", "),
                self.setup.grace
            ));
        }
        if !left.is_empty() {
            notes.push(format!("{} left the fleet cleanly", left.join(", ")));
        }
        let reason = (!notes.is_empty()).then(|| notes.join("; "));
        let done = PlanRecord {
            state: PlanState::Done,
            term: fence.term,
            reason: reason.clone(),
            ..plan.clone()
        };
        if let Some(r) = fenced(
            store,
            fence,
            vec![(PLAN.to_string(), Cond::ModRev(rev))],
            vec![Op::put(PLAN, encode(&done))],
        )
        .await?
        {
            self.record(
                "plan_done",
                fence.term,
                r,
                format!(
                    "{} gen {}{}",
                    plan.proposal.id,
                    plan.gen,
                    reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
            );
            self.absent_since.clear();
        }
        Ok(())
    }
}

/// The slot's record after a decision (the winner executing, or the
/// proposal aborted when nothing may win), with the event to record, what
/// it says, and the routing the winner brings.
fn decided(
    d: &policy::Decision,
    plan: &PlanRecord,
    fence: Fence,
    state: &FleetState,
) -> (&'static str, PlanRecord, String, Vec<Op>) {
    let members: Vec<String> = state.live.clone();
    match &d.winner {
        Some(w) => {
            let ops = w
                .routing
                .iter()
                .map(|routing| {
                    Op::put(
                        ROUTING,
                        encode(&RoutingRecord {
                            routing: routing.clone(),
                            by: w.by.clone(),
                            term: fence.term,
                            plan: Some(w.id.clone()),
                        }),
                    )
                })
                .collect();
            let record = PlanRecord {
                proposal: w.clone(),
                state: PlanState::Executing,
                gen: plan.gen + 1,
                term: fence.term,
                members,
                reason: None,
            };
            (
                "plan_executing",
                record,
                format!("{}: {}", w.id, w.what),
                ops,
            )
        }
        None => {
            let why = d
                .losers
                .iter()
                .find(|l| l.id == plan.proposal.id)
                .map(|l| l.why.clone());
            let what = format!("{}: {}", plan.proposal.id, why.clone().unwrap_or_default());
            let record = PlanRecord {
                proposal: plan.proposal.clone(),
                state: PlanState::Aborted,
                gen: plan.gen,
                term: fence.term,
                members,
                reason: why,
            };
            ("plan_aborted", record, what, Vec::new())
        }
    }
}

fn puts_routing(ops: &[Op]) -> bool {
    ops.iter()
        .any(|op| matches!(op, Op::Put { key, .. } if key == ROUTING))
}

/// A leader write: guarded on the seat's create revision, and only while
/// the local lease deadline has not passed. `None` when refused.
async fn fenced(
    store: &dyn CoordStore,
    fence: Fence,
    mut guards: Vec<(String, Cond)>,
    ops: Vec<Op>,
) -> Result<Option<u64>, StoreError> {
    if Instant::now() >= fence.until {
        return Ok(None);
    }
    guards.insert(0, (LEADER.to_string(), Cond::CreateRev(fence.token)));
    Ok(store.txn(guards, ops).await?.committed())
}
