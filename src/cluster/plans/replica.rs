//! This replica's side of the plans: the loop that reads the store each
//! poll and publishes it, seeds the routing, writes proposals (or files
//! them as conflict reports), its load, its progress and its
//! acknowledgements, and answers whoever waits for a decision.

use super::{fate, Cmd, Decision, Draft, FleetState, PlanError, Setup};
use crate::cluster::history::wall_ms;
use crate::cluster::records::*;
use crate::cluster::store::{Cond, CoordStore, LeaseId, Op, StoreError, TxnOutcome};
use crate::routing::{address_conflicts, Routing};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub(super) struct Waiter {
    plan: String,
    tx: oneshot::Sender<Result<Decision, PlanError>>,
    until: Instant,
}

pub(super) struct Coordinator {
    pub(super) setup: Setup,
    pub(super) state: watch::Sender<FleetState>,
    pub(super) waiters: Vec<Waiter>,
    pub(super) ack: Option<Ack>,
    pub(super) written_ack: Option<(Ack, LeaseId)>,
    pub(super) load: Option<Load>,
    pub(super) written_load: Option<(Load, LeaseId)>,
    /// The last resolution this replica acknowledged.
    pub(super) adopted: Option<u64>,
    /// The proposed plan the leader has seen, and since when: it decides
    /// after one poll, so that reports racing it are decided with it.
    pub(super) proposed_seen: Option<(String, Instant)>,
    /// Replicas the barrier waits for whose registration is gone, since
    /// when this leader noticed.
    pub(super) absent_since: HashMap<String, Instant>,
}

fn fail(store: &dyn CoordStore, reason: impl Into<String>) -> StoreError {
    StoreError::Failed {
        store: store.describe(),
        reason: reason.into(),
    }
}
impl Coordinator {
    pub(super) fn new(setup: Setup, state: watch::Sender<FleetState>) -> Coordinator {
        Coordinator {
            setup,
            state,
            waiters: Vec::new(),
            ack: None,
            written_ack: None,
            load: None,
            written_load: None,
            adopted: None,
            proposed_seen: None,
            absent_since: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut ticker = tokio::time::interval(self.setup.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.poll().await,
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(c) => self.handle(c).await,
                },
            }
        }
    }

    pub(super) fn record(&self, event: &str, term: u64, rev: u64, detail: String) {
        self.setup
            .history
            .record(&self.setup.me, event, term, rev, detail);
    }

    async fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Propose(draft, tx, wait) => self.propose(draft, tx, wait).await,
            Cmd::Seed(local, tx) => {
                let r = self.seed(local).await;
                let _ = tx.send(r);
            }
            Cmd::Progress(ack) => self.ack = Some(ack),
            Cmd::Load(load) => self.load = Some(load),
            Cmd::Applied(rev) => self.record("routing_applied", 0, rev, String::new()),
        }
    }

    fn store_and_lease(&self) -> Result<(Arc<dyn CoordStore>, LeaseId), PlanError> {
        let seat = self.setup.seat.borrow().clone();
        let store = seat.store.ok_or_else(|| {
            PlanError::Unreachable(
                self.setup
                    .view
                    .borrow()
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not reached yet".into()),
            )
        })?;
        let lease = seat.lease.ok_or(PlanError::NotRegistered)?;
        Ok((store, lease))
    }

    async fn seed(&mut self, local: Routing) -> Result<(u64, Routing), PlanError> {
        let (store, _) = self.store_and_lease()?;
        for _ in 0..5 {
            match store.get(ROUTING).await? {
                Some(v) => {
                    let rec: RoutingRecord = decode(&v.value).ok_or_else(|| {
                        fail(
                            &*store,
                            format!("{ROUTING} does not hold a routing record; fix or delete it"),
                        )
                    })?;
                    let conflicts = address_conflicts(&local.backends, &rec.routing.backends);
                    if !conflicts.is_empty() {
                        return Err(PlanError::Routing(format!(
                            "this replica's configuration disagrees with the fleet's routing (revision {}, from node {}): {}; make the configurations agree, or give a new address a new backend name",
                            v.mod_rev,
                            rec.by,
                            conflicts.join("; ")
                        )));
                    }
                    let mut routing = rec.routing;
                    routing.version = v.mod_rev;
                    return Ok((v.mod_rev, routing));
                }
                None => {
                    let rec = RoutingRecord {
                        routing: local.clone(),
                        by: self.setup.me.clone(),
                        term: 0,
                        plan: None,
                    };
                    let outcome = store
                        .txn(
                            vec![(ROUTING.to_string(), Cond::Absent)],
                            vec![Op::put(ROUTING, encode(&rec))],
                        )
                        .await?;
                    if let TxnOutcome::Committed { rev } = outcome {
                        self.record(
                            "routing_seeded",
                            0,
                            rev,
                            format!("{} backends", local.backends.len()),
                        );
                        let mut routing = local;
                        routing.version = rev;
                        return Ok((rev, routing));
                    }
                    // Another replica seeded it first: compare with that.
                }
            }
        }
        Err(fail(
            &*store,
            "the routing record kept changing while this replica read it",
        )
        .into())
    }

    async fn propose(
        &mut self,
        draft: Draft,
        tx: oneshot::Sender<Result<Decision, PlanError>>,
        wait: Duration,
    ) {
        let r = self.write_proposal(draft).await;
        match r {
            Ok(id) => {
                self.waiters.push(Waiter {
                    plan: id,
                    tx,
                    until: Instant::now() + wait,
                });
                // A leader here decides after one poll; answer what the
                // store already says.
                self.answer_waiters();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    }

    /// Writes the proposal into the slot, or files it as a conflict report
    /// when the slot is taken or the write lost the race. Returns its id.
    async fn write_proposal(&mut self, draft: Draft) -> Result<String, PlanError> {
        let (store, lease) = self.store_and_lease()?;
        let id = draft.id;
        let slot = store.get(PLAN).await?;
        let routing = store.get(ROUTING).await?;
        let held: Option<PlanRecord> = slot.as_ref().and_then(|v| decode(&v.value));
        let proposal = Proposal {
            id: id.clone(),
            by: self.setup.me.clone(),
            what: draft.what,
            seen: slot.as_ref().map_or(0, |v| v.mod_rev),
            routing_rev: draft.routing_rev,
            routing: draft.routing,
            moves: draft.moves,
        };
        let free = held.as_ref().map_or(true, |p| p.state.is_final());
        let routing_rev = routing.as_ref().map_or(0, |v| v.mod_rev);
        if proposal.routing.is_some() && proposal.routing_rev != routing_rev {
            return Err(PlanError::Routing(format!(
                "the fleet's routing changed (revision {} to {routing_rev}) while this change was computed; try again",
                proposal.routing_rev
            )));
        }
        let mut observed = (proposal.seen, held.as_ref().map(|p| p.proposal.id.clone()));
        if free {
            let mut guards = vec![(
                PLAN.to_string(),
                match &slot {
                    Some(v) => Cond::ModRev(v.mod_rev),
                    None => Cond::Absent,
                },
            )];
            if proposal.routing.is_some() {
                guards.push((
                    ROUTING.to_string(),
                    match &routing {
                        Some(v) => Cond::ModRev(v.mod_rev),
                        None => Cond::Absent,
                    },
                ));
            }
            let record = PlanRecord {
                proposal: proposal.clone(),
                state: PlanState::Proposed,
                gen: held.as_ref().map_or(0, |p| p.gen),
                term: 0,
                members: Vec::new(),
                reason: None,
            };
            let outcome = match store
                .txn(guards, vec![Op::put(PLAN, encode(&record))])
                .await
            {
                Ok(o) => o,
                // The write may have committed with its answer lost: then
                // the slot holds it, and its fate is awaited as any other.
                Err(e) => {
                    let ours = store.get(PLAN).await.ok().flatten().and_then(|v| {
                        decode::<PlanRecord>(&v.value).filter(|p| p.proposal.id == id)
                    });
                    if ours.is_some() {
                        self.record(
                            "proposed",
                            0,
                            0,
                            format!("{id}: {} (its answer was lost; it stands)", proposal.what),
                        );
                        return Ok(id);
                    }
                    return Err(e.into());
                }
            };
            match outcome {
                TxnOutcome::Committed { rev } => {
                    self.record("proposed", 0, rev, format!("{id}: {}", proposal.what));
                    return Ok(id);
                }
                TxnOutcome::Conflict { current, .. } => {
                    let now: Option<PlanRecord> =
                        store.get(PLAN).await?.and_then(|v| decode(&v.value));
                    observed = (current.map_or(0, |v| v.mod_rev), now.map(|p| p.proposal.id));
                }
            }
        }
        let report = ConflictReport {
            proposal,
            observed: observed.0,
            against: observed.1,
            at_ms: wall_ms(),
        };
        let rev = store
            .txn(
                Vec::new(),
                vec![Op::put_leased(
                    conflict_key(&self.setup.me, &id),
                    encode(&report),
                    lease,
                )],
            )
            .await?
            .committed()
            .unwrap_or(0);
        self.record(
            "conflict_filed",
            0,
            rev,
            format!(
                "{id}: {} (the slot held {})",
                report.proposal.what,
                report.against.as_deref().unwrap_or("a newer write")
            ),
        );
        Ok(id)
    }

    fn publish(&self, state: FleetState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                *s = state;
                true
            }
        });
    }

    async fn poll(&mut self) {
        let seat = self.setup.seat.borrow().clone();
        let Some(store) = seat.store.clone() else {
            self.unreachable();
            return;
        };
        let state = match store.list("/pgbaton/").await {
            Ok(keys) => FleetState::parse(keys),
            Err(_) => {
                self.unreachable();
                return;
            }
        };
        self.publish(state.clone());
        if let Some(lease) = seat.lease {
            if let Err(e) = self.write_own(&*store, lease, &state).await {
                tracing::debug!(error = %e, "fleet: writing this replica's keys failed; will retry");
            }
        }
        self.answer_waiters();
        if let Some(fence) = seat.leading.filter(|f| Instant::now() < f.until) {
            if let Err(e) = self.lead(&*store, fence, &state).await {
                tracing::debug!(error = %e, "fleet: leader work failed; will retry");
            }
        } else {
            self.proposed_seen = None;
            self.absent_since.clear();
        }
    }

    fn unreachable(&self) {
        self.state.send_if_modified(|s| {
            let was = s.reachable;
            s.reachable = false;
            was
        });
    }

    /// This replica's load and progress, and its acknowledgement of a
    /// resolution it lost.
    async fn write_own(
        &mut self,
        store: &dyn CoordStore,
        lease: LeaseId,
        state: &FleetState,
    ) -> Result<(), StoreError> {
        let me = self.setup.me.clone();
        if let Some(load) = self.load.clone() {
            if self.written_load.as_ref() != Some(&(load.clone(), lease)) {
                store
                    .txn(
                        Vec::new(),
                        vec![Op::put_leased(load_key(&me), encode(&load), lease)],
                    )
                    .await?;
                self.written_load = Some((load, lease));
            }
        }
        if let Some(ack) = self.ack.clone() {
            if self.written_ack.as_ref() != Some(&(ack.clone(), lease)) {
                let mut ops = vec![Op::put_leased(ack_key(&ack.plan, &me), encode(&ack), lease)];
                if let Some((old, _)) = &self.written_ack {
                    if old.plan != ack.plan {
                        ops.push(Op::delete(ack_key(&old.plan, &me)));
                    }
                }
                let rev = store.txn(Vec::new(), ops).await?.committed().unwrap_or(0);
                if ack.done
                    && self
                        .written_ack
                        .as_ref()
                        .map_or(true, |(a, _)| !a.done || a.plan != ack.plan)
                {
                    self.record(
                        "plan_acked",
                        0,
                        rev,
                        format!(
                            "{} gen {}: moved {}, pinned {}, aborted {}",
                            ack.plan, ack.gen, ack.moved, ack.pinned, ack.aborted
                        ),
                    );
                }
                self.written_ack = Some((ack, lease));
            }
        }
        let lost = state
            .resolutions
            .iter()
            .filter(|r| r.losers.iter().any(|l| l.by == me))
            .map(|r| r.n)
            .max();
        if let Some(n) = lost.filter(|n| self.adopted.map_or(true, |a| a < *n)) {
            let routing_rev = state.routing.as_ref().map_or(0, |(r, _)| *r);
            let adopted = Adopted {
                node: me.clone(),
                resolution: n,
                routing_rev,
            };
            let rev = store
                .txn(
                    Vec::new(),
                    vec![Op::put(adopted_key(&me), encode(&adopted))],
                )
                .await?
                .committed()
                .unwrap_or(0);
            // Nothing was prepared for a proposal before the leader
            // committed it, so there is nothing to drop: only the
            // acknowledgement.
            self.record(
                "adopted",
                0,
                rev,
                format!("resolution {n}; on routing revision {routing_rev}"),
            );
            self.adopted = Some(n);
        }
        Ok(())
    }

    fn answer_waiters(&mut self) {
        let state = self.state.borrow().clone();
        let now = Instant::now();
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            if w.tx.is_closed() {
                continue;
            }
            let decided = fate(&state, &w.plan);
            match decided {
                Some(d) => {
                    let _ = w.tx.send(Ok(d));
                }
                None if now >= w.until => {
                    let _ = w.tx.send(Ok(Decision::Undecided { plan: w.plan }));
                }
                None => self.waiters.push(w),
            }
        }
    }
}
