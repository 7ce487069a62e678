//! The session ledger: what pgbaton knows about one session's state, kept
//! from the wire and checked against the server at a safe point.
//!
//! The wire is watched for what the server cannot tell (DESIGN "The ledger"):
//! startup parameters, custom setting names, protocol Parse bytes, the
//! unnamed statement, the search_path each statement was prepared under,
//! LISTEN channels, ParameterStatus seen, and blockers. Changes are applied
//! when the server confirms them: [`replies`] matches every reply to the
//! request that caused it (a queue of expected replies), so a statement
//! skipped after an error never counts, and [`vars`] follows transaction
//! semantics.
//!
//! - [`change`]: statement effects as owned changes.
//! - [`vars`]: transactional session variables.
//! - [`replies`]: the expected-reply queue and wire events.
//! - [`lazy`]: statements a move could not prepare, prepared at first use.
//! - [`view`]: rows and summaries for the admin console.

mod answers;
mod blocker;
pub mod change;
pub mod check;
pub mod in_flight;
pub mod lazy;
pub mod replies;
pub mod vars;
pub mod view;

pub use blocker::Blocker;

use crate::protocol::startup::StartupParam;
use change::Change;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vars::TxVars;

/// A statement that can be re-created on another server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub kind: PreparedKind,
    /// The search_path (as last SET on the wire) when it was prepared;
    /// `None` when the session had not set one.
    pub search_path: Option<String>,
    /// What executing it changes (e.g. a prepared `SELECT set_config(...)`).
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreparedKind {
    /// SQL `PREPARE`: the statement text after `AS`, and the parameter list.
    Sql { text: String },
    /// A protocol Parse: its body, verbatim (name, query, parameter OIDs).
    Protocol { parse_body: Vec<u8> },
}

impl Prepared {
    /// The SQL text, for display.
    pub fn query_text(&self) -> String {
        match &self.kind {
            PreparedKind::Sql { text } => text.clone(),
            PreparedKind::Protocol { parse_body } => {
                crate::protocol::frontend::parse_body(parse_body)
                    .map(|p| String::from_utf8_lossy(p.query).into_owned())
                    .unwrap_or_default()
            }
        }
    }
}

/// Blockers seen on the wire that survive a rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireBlockers {
    /// Session advisory locks taken minus released (re-entry counts).
    pub advisory_locks: u32,
    pub loaded_libraries: Vec<String>,
    pub dblink_connections: u32,
    /// A set_config whose name or scope the text did not show.
    pub opaque_set_config: bool,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// The client's startup parameters, in order, replayed verbatim.
    pub startup: Vec<StartupParam>,
    pub(crate) vars: TxVars,
    /// Named prepared statements, SQL and protocol alike (one namespace in
    /// Postgres: DEALLOCATE removes both kinds).
    pub(crate) prepared: BTreeMap<String, Prepared>,
    /// The unnamed protocol statement, if one is alive.
    pub(crate) unnamed: Option<Prepared>,
    /// Every custom (`x.y`) setting name the client ever touched; the server
    /// check asks for their values (pg_settings hides them).
    pub(crate) custom_names: BTreeSet<String>,
    pub(crate) blockers: WireBlockers,
    /// ParameterStatus values the client has seen, in first-seen order.
    pub(crate) reported: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) replies: replies::Replies,
    /// Bumped on every recorded change, so observers copy only what changed.
    pub(crate) version: u64,
    /// Replies stopped matching requests (a protocol the ledger does not
    /// understand); the server check is then the only truth.
    pub(crate) desynced: bool,
    /// Free buffers for unnamed Parse bodies: recording the unnamed statement
    /// of every extended-protocol query must not allocate each time.
    pub(crate) spare: Vec<Vec<u8>>,
    pub(crate) unnamed_pending: VecDeque<(Vec<u8>, Vec<Change>)>,
    /// Statements not prepared on the current server (see [`lazy`]): name
    /// and parameter types.
    pub(crate) deferred: BTreeMap<String, Vec<u32>>,
}

impl Ledger {
    pub fn new(startup: Vec<StartupParam>, reported: Vec<(Vec<u8>, Vec<u8>)>) -> Ledger {
        Ledger {
            startup,
            reported,
            ..Ledger::default()
        }
    }

    /// Committed session variables (what a move would carry).
    pub fn vars(&self) -> &vars::Vars {
        self.vars.committed()
    }

    pub fn prepared(&self) -> &BTreeMap<String, Prepared> {
        &self.prepared
    }

    pub fn unnamed(&self) -> Option<&Prepared> {
        self.unnamed.as_ref()
    }

    pub fn custom_names(&self) -> &BTreeSet<String> {
        &self.custom_names
    }

    pub fn blockers(&self) -> &WireBlockers {
        &self.blockers
    }

    pub fn reported(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.reported
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn is_desynced(&self) -> bool {
        self.desynced
    }

    /// The value of a custom setting as the ledger believes the server has
    /// it: `Some("")` after RESET, `None` if never set.
    pub fn custom_value(&self, name: &str) -> Option<&str> {
        let v = self.vars.committed();
        match v.settings.get(name) {
            Some(value) => Some(value.as_str()),
            None if v.reset_custom.contains(name) => Some(""),
            None => None,
        }
    }

    /// What the wire says pins this session now.
    pub fn pins(&self) -> Vec<Blocker> {
        let v = self.vars.committed();
        Blocker::present([
            Blocker::TempObjects(v.temp_objects),
            Blocker::HoldCursors(v.holdable_cursors.len() as u32),
            Blocker::AdvisoryLocks(self.blockers.advisory_locks),
            Blocker::LoadedLibraries(self.blockers.loaded_libraries.len() as u32),
            Blocker::DblinkConnections(self.blockers.dblink_connections),
        ])
    }

    /// Why the wire says this session cannot move right now, if it can't.
    pub fn pin_reason(&self) -> Option<String> {
        Blocker::reason(&self.pins())
    }
}

#[cfg(test)]
mod tests;
