//! The fleet's shared routing and its plans: one task per replica that
//! reads everything under `/pgbaton/` every `poll`, publishes it as a
//! [`FleetState`], writes this replica's own keys (its load, its progress
//! on a plan, its acknowledgement of a lost conflict) and, while this
//! replica leads, does the leader's fenced writes: deciding proposals
//! ([`super::policy`]) and closing a plan at its barrier.
//!
//! A change of the fleet (a move plan, a routing change, or both) goes
//! through one slot, `/pgbaton/plan`:
//! - **Proposed**: any replica writes its proposal there against the slot
//!   and routing revisions it read. When another write got there first,
//!   the store refuses it, and the replica files a conflict report under
//!   its lease instead.
//! - **Executing**: the leader decides the proposal and the reports after
//!   one `poll` (so proposals that raced at the same moment are decided
//!   together) and commits the winner, the routing it brings and the
//!   resolution in one fenced transaction. Only now does any replica act:
//!   each applies the routing and moves its own sessions, and acknowledges
//!   its progress.
//! - **Done**: every replica that was live when the plan was committed, or
//!   is live now, acknowledged that it is finished; a replica whose
//!   registration expired is waited for one grace period more (its lease
//!   TTL), then left out (and catches up when it returns).
//!
//! The data plane never waits on this: sessions run on the routing last
//! applied.

use super::agent::{ClusterView, Fence, Seat};
use super::history::{wall_ms, History};
use super::policy;
use super::records::*;
use super::store::{Cond, CoordStore, LeaseId, Op, StoreError, TxnOutcome, Versioned};
use crate::routing::{address_conflicts, Routing};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Resolutions kept in the store (older ones are deleted by the leader).
const KEEP_RESOLUTIONS: usize = 20;
/// How long the leader gives a target to accept a TCP connection before it
/// refuses a plan to it.
const REACH_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("the coordination store is unreachable ({0}); nothing was proposed")]
    Unreachable(String),
    #[error("this replica is not registered in the coordination store yet; nothing was proposed")]
    NotRegistered,
    #[error("{0}; nothing was written")]
    Routing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("pgbaton's fleet task has stopped")]
    Stopped,
}

impl PlanError {
    pub fn sqlstate(&self) -> crate::protocol::SqlState {
        use crate::protocol::SqlState;
        match self {
            PlanError::Store(_) | PlanError::Stopped => SqlState::SYSTEM_ERROR,
            _ => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }
}

/// What a replica asks the fleet for.
#[derive(Debug, Clone)]
pub struct Draft {
    /// From [`Plans::new_id`]; the plan's id once committed.
    pub id: String,
    pub what: String,
    /// The routing revision `routing` was computed against.
    pub routing_rev: u64,
    pub routing: Option<Routing>,
    pub moves: Option<MoveSpec>,
}

/// The fate of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Committed: replicas apply it now.
    Won {
        plan: String,
        gen: u64,
    },
    /// Another proposal won the conflict.
    Lost {
        plan: String,
        resolution: u64,
        winner: String,
        winner_what: String,
        why: String,
    },
    Aborted {
        plan: String,
        why: String,
    },
    /// Not decided within the wait (no leader, or a slow one): it stays
    /// proposed and is decided when a leader gets to it.
    Undecided {
        plan: String,
    },
}

/// Everything under `/pgbaton/` that the plans concern, as of the last
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetState {
    pub reachable: bool,
    pub routing: Option<(u64, RoutingRecord)>,
    /// The slot, with its mod revision.
    pub plan: Option<(u64, PlanRecord)>,
    /// Open conflict reports: (node, report, mod revision).
    pub conflicts: Vec<(String, ConflictReport, u64)>,
    /// Newest last.
    pub resolutions: Vec<Resolution>,
    pub adopted: Vec<Adopted>,
    pub acks: Vec<Ack>,
    pub loads: Vec<Load>,
    /// Registered replicas.
    pub live: Vec<String>,
}

impl FleetState {
    /// Sessions per backend across the fleet, with who holds them.
    pub fn sessions(&self) -> BTreeMap<String, Vec<(String, usize)>> {
        let mut out: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        for l in &self.loads {
            for (b, n) in &l.backends {
                out.entry(b.clone()).or_default().push((l.node.clone(), *n));
            }
        }
        out
    }

    fn parse(keys: Vec<(String, Versioned)>) -> FleetState {
        let mut s = FleetState {
            reachable: true,
            ..FleetState::default()
        };
        for (key, v) in keys {
            if key == ROUTING {
                s.routing = decode(&v.value).map(|r| (v.mod_rev, r));
            } else if key == PLAN {
                s.plan = decode(&v.value).map(|p| (v.mod_rev, p));
            } else if let Some(node) = key.strip_prefix(CONFLICTS) {
                if let Some(r) = decode(&v.value) {
                    s.conflicts.push((node.to_string(), r, v.mod_rev));
                }
            } else if key.starts_with(RESOLUTIONS) {
                s.resolutions.extend(decode::<Resolution>(&v.value));
            } else if key.starts_with(ADOPTED) {
                s.adopted.extend(decode::<Adopted>(&v.value));
            } else if key.starts_with(ACKS) {
                s.acks.extend(decode::<Ack>(&v.value));
            } else if key.starts_with(LOADS) {
                s.loads.extend(decode::<Load>(&v.value));
            } else if let Some(node) = key.strip_prefix(NODES) {
                s.live.push(node.to_string());
            }
        }
        s.resolutions.sort_by_key(|r| r.n);
        s
    }
}

pub struct Setup {
    pub me: String,
    pub seat: watch::Receiver<Seat>,
    pub view: watch::Receiver<ClusterView>,
    pub history: Arc<History>,
    pub poll: Duration,
    pub grace: Duration,
}

enum Cmd {
    Propose(
        Draft,
        oneshot::Sender<Result<Decision, PlanError>>,
        Duration,
    ),
    Seed(Routing, oneshot::Sender<Result<(u64, Routing), PlanError>>),
    Progress(Ack),
    Load(Load),
    Applied(u64),
}

/// This replica's handle on the fleet's routing and plans.
#[derive(Clone)]
pub struct Plans {
    state: watch::Receiver<FleetState>,
    cmd: mpsc::UnboundedSender<Cmd>,
    me: String,
    pub poll: Duration,
}

impl Plans {
    pub fn start(setup: Setup) -> Plans {
        let (state_tx, state_rx) = watch::channel(FleetState::default());
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let plans = Plans {
            state: state_rx,
            cmd: cmd_tx,
            me: setup.me.clone(),
            poll: setup.poll,
        };
        let coordinator = Coordinator {
            setup,
            state: state_tx,
            waiters: Vec::new(),
            ack: None,
            written_ack: None,
            load: None,
            written_load: None,
            adopted: None,
            proposed_seen: None,
            absent_since: HashMap::new(),
        };
        tokio::spawn(coordinator.run(cmd_rx));
        plans
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// A new proposal id: `<node>-<8 hex digits>`.
    pub fn new_id(&self) -> String {
        format!("{}-{:08x}", self.me, rand::random::<u32>())
    }

    pub fn state(&self) -> FleetState {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<FleetState> {
        self.state.clone()
    }

    /// Proposes a change and waits up to `wait` for the leader's decision.
    ///
    /// A plan that is executing when this is asked is not raced: the
    /// proposal waits (within `wait`) for it to finish, as a second command
    /// typed after the first expects. Only a proposal that still finds it
    /// executing, or that loses a write to another proposal, conflicts.
    pub async fn propose(&self, draft: Draft, wait: Duration) -> Result<Decision, PlanError> {
        let until = Instant::now() + wait;
        let mut state = self.state.clone();
        loop {
            let busy = state
                .borrow_and_update()
                .plan
                .as_ref()
                .is_some_and(|(_, p)| p.state == PlanState::Executing);
            if !busy || Instant::now() >= until {
                break;
            }
            if !matches!(
                tokio::time::timeout_at(until, state.changed()).await,
                Ok(Ok(()))
            ) {
                break;
            }
        }
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(self.poll * 4);
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Propose(draft, tx, wait))
            .map_err(|_| PlanError::Stopped)?;
        rx.await.map_err(|_| PlanError::Stopped)?
    }

    /// The fleet's routing, seeding the store with `local` (this replica's
    /// configuration) when it has none. Refuses when the store's routing
    /// gives one of `local`'s backends another address.
    pub async fn seed(&self, local: Routing) -> Result<(u64, Routing), PlanError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Seed(local, tx))
            .map_err(|_| PlanError::Stopped)?;
        rx.await.map_err(|_| PlanError::Stopped)?
    }

    /// This replica's progress on a plan (written when it changed).
    pub fn progress(&self, ack: Ack) {
        let _ = self.cmd.send(Cmd::Progress(ack));
    }

    /// This replica's sessions per backend (written when it changed).
    pub fn load(&self, load: Load) {
        let _ = self.cmd.send(Cmd::Load(load));
    }

    /// The replica now runs on routing revision `rev` (for the history).
    pub fn applied(&self, rev: u64) {
        let _ = self.cmd.send(Cmd::Applied(rev));
    }
}

struct Waiter {
    plan: String,
    tx: oneshot::Sender<Result<Decision, PlanError>>,
    until: Instant,
}

struct Coordinator {
    setup: Setup,
    state: watch::Sender<FleetState>,
    waiters: Vec<Waiter>,
    ack: Option<Ack>,
    written_ack: Option<(Ack, LeaseId)>,
    load: Option<Load>,
    written_load: Option<(Load, LeaseId)>,
    /// The last resolution this replica acknowledged.
    adopted: Option<u64>,
    /// The proposed plan the leader has seen, and since when: it decides
    /// after one poll, so that reports racing it are decided with it.
    proposed_seen: Option<(String, Instant)>,
    /// Replicas the barrier waits for whose registration is gone, since
    /// when this leader noticed.
    absent_since: HashMap<String, Instant>,
}

fn fail(store: &dyn CoordStore, reason: impl Into<String>) -> StoreError {
    StoreError::Failed {
        store: store.describe(),
        reason: reason.into(),
    }
}

impl Coordinator {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
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

    fn record(&self, event: &str, term: u64, rev: u64, detail: String) {
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
            match store
                .txn(guards, vec![Op::put(PLAN, encode(&record))])
                .await?
            {
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
                    conflict_key(&self.setup.me),
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

    async fn lead(
        &mut self,
        store: &dyn CoordStore,
        fence: Fence,
        state: &FleetState,
    ) -> Result<(), StoreError> {
        let reports: Vec<&(String, ConflictReport, u64)> = state.conflicts.iter().collect();
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
                    self.resolve(
                        store,
                        fence,
                        state,
                        &plan.proposal,
                        losers,
                        &reports,
                        Vec::new(),
                        Vec::new(),
                    )
                    .await?;
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
                match winner {
                    Some(w) => {
                        self.resolve(
                            store,
                            fence,
                            state,
                            &w,
                            losers,
                            &reports,
                            Vec::new(),
                            Vec::new(),
                        )
                        .await
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Is this proposal one the fleet can carry out now? `Some(reason)`
    /// when not.
    async fn refuse(&self, p: &Proposal, state: &FleetState) -> Option<String> {
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
        let target = after.backend(&moves.to)?;
        let addr = target.addr();
        match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("target {} ({addr}) is unreachable: {e}", moves.to)),
            Err(_) => Some(format!(
                "target {} ({addr}) did not accept a connection within {REACH_TIMEOUT:?}",
                moves.to
            )),
        }
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
        let mut refused = Vec::with_capacity(candidates.len());
        for c in &candidates {
            refused.push(self.refuse(c, state).await);
        }
        let routing_rev = state.routing.as_ref().map_or(0, |(r, _)| *r);
        let d = policy::decide(&candidates, routing_rev, &refused);
        let members: Vec<String> = state.live.clone();
        let mut ops = Vec::new();
        let mut guards = vec![
            (PLAN.to_string(), Cond::ModRev(rev)),
            (
                ROUTING.to_string(),
                match &state.routing {
                    Some((r, _)) => Cond::ModRev(*r),
                    None => Cond::Absent,
                },
            ),
        ];
        let what;
        let (event, record) = match &d.winner {
            Some(w) => {
                if let Some(routing) = &w.routing {
                    ops.push(Op::put(
                        ROUTING,
                        encode(&RoutingRecord {
                            routing: routing.clone(),
                            by: w.by.clone(),
                            term: fence.term,
                            plan: Some(w.id.clone()),
                        }),
                    ));
                }
                what = format!("{}: {}", w.id, w.what);
                (
                    "plan_executing",
                    PlanRecord {
                        proposal: w.clone(),
                        state: PlanState::Executing,
                        gen: plan.gen + 1,
                        term: fence.term,
                        members,
                        reason: None,
                    },
                )
            }
            None => {
                let why = d
                    .losers
                    .iter()
                    .find(|l| l.id == plan.proposal.id)
                    .map(|l| l.why.clone());
                what = format!("{}: {}", plan.proposal.id, why.clone().unwrap_or_default());
                (
                    "plan_aborted",
                    PlanRecord {
                        proposal: plan.proposal.clone(),
                        state: PlanState::Aborted,
                        gen: plan.gen,
                        term: fence.term,
                        members,
                        reason: why,
                    },
                )
            }
        };
        ops.insert(0, Op::put(PLAN, encode(&record)));
        // A lone proposal the leader refused needs no resolution: the
        // aborted plan says why.
        let others: Vec<Loser> = d
            .losers
            .iter()
            .filter(|l| d.winner.is_some() || l.id != plan.proposal.id)
            .cloned()
            .collect();
        let winner = d.winner.clone().unwrap_or_else(|| plan.proposal.clone());
        if others.is_empty() && reports.is_empty() {
            let routing = puts_routing(&ops);
            if let Some(rev) = fenced(store, fence, guards, ops).await? {
                self.record(event, fence.term, rev, what);
                if routing {
                    self.record("routing_committed", fence.term, rev, winner.id.clone());
                }
            }
            return Ok(());
        }
        guards.truncate(2);
        self.resolve(store, fence, state, &winner, others, reports, guards, ops)
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
        winner: &Proposal,
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
            winner: winner.id.clone(),
            winner_what: winner.what.clone(),
            losers,
            at_ms: wall_ms(),
        };
        let key = resolution_key(n);
        guards.push((key.clone(), Cond::Absent));
        for (node, _, rev) in reports {
            guards.push((conflict_key(node), Cond::ModRev(*rev)));
            ops.push(Op::delete(conflict_key(node)));
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
            if routing {
                self.record("routing_committed", fence.term, rev, winner.id.clone());
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
                    winner.id,
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
        for node in expected {
            if live.contains(node) {
                self.absent_since.remove(node);
                let done = state.acks.iter().any(|a| {
                    a.node == node && a.plan == plan.proposal.id && a.gen == plan.gen && a.done
                });
                if !done {
                    waiting.push(node);
                }
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
        let reason = (!gone.is_empty()).then(|| {
            format!(
                "did not wait for {}: registration expired and the grace of {:?} passed",
                gone.join(", "),
                self.setup.grace
            )
        });
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

/// What the store says of proposal `id`, if it has been decided.
pub fn fate(state: &FleetState, id: &str) -> Option<Decision> {
    if let Some((_, p)) = &state.plan {
        if p.proposal.id == id {
            return match p.state {
                PlanState::Proposed => None,
                PlanState::Executing | PlanState::Done => Some(Decision::Won {
                    plan: id.to_string(),
                    gen: p.gen,
                }),
                PlanState::Aborted => Some(Decision::Aborted {
                    plan: id.to_string(),
                    why: p.reason.clone().unwrap_or_default(),
                }),
            };
        }
    }
    state.resolutions.iter().rev().find_map(|r| {
        r.losers
            .iter()
            .find(|l| l.id == id)
            .map(|l| Decision::Lost {
                plan: id.to_string(),
                resolution: r.n,
                winner: r.winner.clone(),
                winner_what: r.winner_what.clone(),
                why: l.why.clone(),
            })
    })
}
