//! The fleet: replicas of pgbaton that share one coordination store,
//! register under leases and elect a leader ranked by reliability.
//!
//! - [`store`]: the store trait and its backends (memory, Postgres, etcd).
//! - [`records`]: the keys pgbaton keeps in it and their JSON records.
//! - [`rank`]: who may lead (fewest failures, then earliest registration,
//!   then id) and where a newcomer's failure count starts.
//! - [`agent`]: one replica's membership and election loop; [`history`]
//!   its JSON-lines log of decisions; [`numbers`] the replica numbers
//!   that route cancels.
//! - [`plans`]: the fleet's shared routing and its one change at a time
//!   (proposed by any replica, decided by the leader by [`policy`],
//!   carried out by every replica, closed at a barrier).
//!
//! The data plane never waits on any of this: sessions relay and move on
//! what was last committed, whether or not the store answers.

pub mod agent;
pub mod history;
pub mod numbers;
pub mod plans;
pub mod policy;
pub mod rank;
pub mod records;
pub mod store;

pub use agent::{Cluster, ClusterError, ClusterView, NodeView, Role};

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;
