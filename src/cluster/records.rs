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

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub const NODES: &str = "/pgbaton/nodes/";
pub const RELIABILITY: &str = "/pgbaton/reliability/";
pub const LEADER: &str = "/pgbaton/leader";
pub const TERM: &str = "/pgbaton/term";
pub const FLEET: &str = "/pgbaton/fleet";

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
