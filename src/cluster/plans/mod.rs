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

use super::agent::{ClusterView, Seat};
use super::history::History;
use super::records::*;
use super::store::{StoreError, Versioned};
use crate::routing::Routing;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

mod leader;
mod replica;

use replica::Coordinator;

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
    /// Replicas whose last run ended with a clean resign.
    pub resigned: Vec<String>,
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
            } else if let Some(rest) = key.strip_prefix(CONFLICTS) {
                let node = rest.split('/').next().unwrap_or(rest);
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
            } else if let Some(node) = key.strip_prefix(RELIABILITY) {
                if decode::<Reliability>(&v.value)
                    .is_some_and(|r| r.resigned && r.running.is_none())
                {
                    s.resigned.push(node.to_string());
                }
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
        let coordinator = Coordinator::new(setup, state_tx);
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
        let l = r.losers.iter().find(|l| l.id == id)?;
        Some(if r.winner.is_empty() {
            // Nothing won: it was refused on its own account.
            Decision::Aborted {
                plan: id.to_string(),
                why: l.why.clone(),
            }
        } else {
            Decision::Lost {
                plan: id.to_string(),
                resolution: r.n,
                winner: r.winner.clone(),
                winner_what: r.winner_what.clone(),
                why: l.why.clone(),
            }
        })
    })
}
