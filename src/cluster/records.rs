//! What pgbaton keeps in the store, under `/pgbaton/`. Values are JSON, so
//! an operator can read them with `etcdctl get --prefix /pgbaton/` or
//! `SELECT key, convert_from(value, 'UTF8') FROM pgbaton.kv`.
//!
//! | key | lease | holds |
//! |---|---|---|
//! | `/pgbaton/nodes/<id>` | the node's | [`NodeRecord`]: a live registration |
//! | `/pgbaton/reliability/<id>` | none | [`Reliability`]: failures, kept across restarts |
//! | `/pgbaton/leader` | the leader's | [`LeaderRecord`]; its create revision is the fencing token |
//! | `/pgbaton/term` | none | the last term handed out |
//! | `/pgbaton/fleet` | none | [`FleetRecord`]: the leader's fenced summary of the fleet |
//! | `/pgbaton/schema` | none | the schema version |
//! | `/pgbaton/numbers/<n>` | none | the node id that owns replica number `n` (the top byte of its cancel secrets) |
//! | `/pgbaton/routing` | none | [`RoutingRecord`]: backends, default, draining; its mod revision is the routing revision |
//! | `/pgbaton/plan` | none | [`PlanRecord`]: the one slot for a change of the fleet (a move plan, a routing change) |
//! | `/pgbaton/conflicts/<id>/<plan>` | the node's | [`ConflictReport`]: a proposal of that node that lost the race for the slot |
//! | `/pgbaton/resolutions/<n>` | none | [`Resolution`]: the leader's decision on reports, newest 20 kept |
//! | `/pgbaton/adopted/<id>` | none | [`Adopted`]: the last resolution a loser acknowledged |
//! | `/pgbaton/acks/<plan>/<id>` | the node's | [`Ack`]: a replica's progress on a plan |
//! | `/pgbaton/loads/<id>` | the node's | [`Load`]: a replica's sessions per backend |

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub const NODES: &str = "/pgbaton/nodes/";
pub const RELIABILITY: &str = "/pgbaton/reliability/";
pub const LEADER: &str = "/pgbaton/leader";
pub const TERM: &str = "/pgbaton/term";
pub const FLEET: &str = "/pgbaton/fleet";
pub const NUMBERS: &str = "/pgbaton/numbers/";
pub const ROUTING: &str = "/pgbaton/routing";
pub const PLAN: &str = "/pgbaton/plan";
pub const CONFLICTS: &str = "/pgbaton/conflicts/";
pub const RESOLUTIONS: &str = "/pgbaton/resolutions/";
pub const ADOPTED: &str = "/pgbaton/adopted/";
pub const ACKS: &str = "/pgbaton/acks/";
pub const LOADS: &str = "/pgbaton/loads/";

pub fn node_key(id: &str) -> String {
    format!("{NODES}{id}")
}

pub fn reliability_key(id: &str) -> String {
    format!("{RELIABILITY}{id}")
}

/// A live replica, under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub client_addr: String,
    pub admin_addr: String,
    /// Wall time of the registration, ms since the Unix epoch (display only:
    /// the order of registrations is the key's create revision).
    pub joined_at_ms: u64,
    /// Random, new at each registration: tells this run from an earlier one.
    pub instance: u64,
    pub pid: u32,
    /// The replica's number (1–255), the top byte of its cancel secrets;
    /// 0 when it has none.
    #[serde(default)]
    pub number: u8,
}

/// A node's failure count, which outlives its registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reliability {
    pub failures: u32,
    /// The instance registered and not yet cleanly resigned. Still set
    /// when that registration is gone means it ended without a clean
    /// resign: a failure, charged once (by the leader or the node's next
    /// registration), which clears it.
    pub running: Option<u64>,
    /// The last run ended with a clean resign (not a charge): the plans'
    /// barrier need not wait for a replica that left this way.
    #[serde(default)]
    pub resigned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub node: String,
    pub term: u64,
    pub instance: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRecord {
    pub term: u64,
    pub leader: String,
    pub members: Vec<String>,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// The term counter's value; `None` when it holds something else.
pub fn decode_term(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// One key per losing proposal, so two of one node never overwrite each
/// other.
pub fn conflict_key(node: &str, plan: &str) -> String {
    format!("{CONFLICTS}{node}/{plan}")
}

pub fn resolution_key(n: u64) -> String {
    // Zero-padded, so key order is number order.
    format!("{RESOLUTIONS}{n:020}")
}

pub fn adopted_key(node: &str) -> String {
    format!("{ADOPTED}{node}")
}

pub fn ack_key(plan: &str, node: &str) -> String {
    format!("{ACKS}{plan}/{node}")
}

pub fn load_key(node: &str) -> String {
    format!("{LOADS}{node}")
}

pub fn number_key(n: u8) -> String {
    format!("{NUMBERS}{n:03}")
}

/// The fleet's routing as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRecord {
    pub routing: crate::routing::Routing,
    /// The node whose configuration or proposal it is.
    pub by: String,
    /// The leader term that committed it (0: seeded by the first replica).
    pub term: u64,
    /// The plan that committed it, if one did.
    pub plan: Option<String>,
}

/// Sessions to move: those on `from` (every backend but `to` when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveSpec {
    pub from: Vec<String>,
    pub to: String,
    /// `admin`, `scale-out` or `drain`: how each replica times its moves out.
    pub origin: String,
    /// How long each session may take to reach a safe point (each
    /// replica's `migration_wait` when not given).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// A change of the fleet one replica asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// `<node>-<8 hex digits>`; the plan's id once committed.
    pub id: String,
    pub by: String,
    /// What was asked, for people: `MIGRATE ALL FROM pg1 TO pg2`.
    pub what: String,
    /// The revision of the plan slot the proposer read (0: empty): the
    /// older the view, the earlier the proposal.
    pub seen: u64,
    /// The routing revision the proposer read; a routing change was
    /// computed against it.
    pub routing_rev: u64,
    /// The routing after the change, when it changes it.
    pub routing: Option<crate::routing::Routing>,
    pub moves: Option<MoveSpec>,
}

impl Proposal {
    /// The backend sessions move to, if any.
    pub fn target(&self) -> Option<&str> {
        self.moves.as_ref().map(|m| m.to.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanState {
    /// Written by its proposer; the leader has not decided yet.
    Proposed,
    /// Committed by the leader: replicas apply its routing and move.
    Executing,
    /// Every replica acknowledged (or its lease expired and the grace
    /// passed).
    Done,
    /// Refused by the leader, with a reason.
    Aborted,
}

impl PlanState {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanState::Proposed => "proposed",
            PlanState::Executing => "executing",
            PlanState::Done => "done",
            PlanState::Aborted => "aborted",
        }
    }

    /// The slot is free for the next proposal.
    pub fn is_final(self) -> bool {
        matches!(self, PlanState::Done | PlanState::Aborted)
    }
}

/// The fleet's one change at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub proposal: Proposal,
    pub state: PlanState,
    /// Counts committed plans; acknowledgements name it.
    pub gen: u64,
    /// The leader term that last moved its state (0 while proposed).
    pub term: u64,
    /// Replicas live when it was committed: the barrier waits for them.
    pub members: Vec<String>,
    /// Why it was aborted, or who the barrier stopped waiting for.
    pub reason: Option<String>,
}

/// A proposal that lost the race for the slot, filed by its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictReport {
    pub proposal: Proposal,
    /// The slot's revision when the proposal lost.
    pub observed: u64,
    /// The plan that held the slot then.
    pub against: Option<String>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loser {
    pub id: String,
    pub by: String,
    pub what: String,
    pub why: String,
}

/// The leader's decision on a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub n: u64,
    pub term: u64,
    pub leader: String,
    pub winner: String,
    pub winner_what: String,
    pub losers: Vec<Loser>,
    pub at_ms: u64,
}

/// A loser's acknowledgement: it dropped its proposal and runs on the
/// committed routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopted {
    pub node: String,
    pub resolution: u64,
    pub routing_rev: u64,
}

/// One session's move in a plan, as its replica reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRow {
    pub session: u64,
    pub from: String,
    pub to: String,
    /// `waiting`, `done`, `pinned`, `aborted`.
    pub status: String,
    pub reason: Option<String>,
    pub pause_us: Option<u64>,
    pub total_us: Option<u64>,
}

/// A replica's progress on a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub plan: String,
    pub gen: u64,
    pub node: String,
    /// Every session the plan selects here has an outcome.
    pub done: bool,
    /// The routing revision the replica runs on.
    pub routing_rev: u64,
    /// At most [`Ack::MAX_ROWS`] rows; the counts cover all.
    pub rows: Vec<AckRow>,
    pub moved: usize,
    pub waiting: usize,
    pub pinned: usize,
    pub aborted: usize,
}

impl Ack {
    pub const MAX_ROWS: usize = 1000;
}

/// A replica's sessions per backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub node: String,
    pub backends: std::collections::BTreeMap<String, usize>,
    /// The routing revision the replica runs on.
    #[serde(default)]
    pub routing_rev: u64,
}
