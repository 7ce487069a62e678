//! Session state that follows transaction semantics (a SET in a transaction
//! that rolls back never happened):
//! settings, role, session authorization, LISTEN channels, holdable cursors
//! and temp objects. A change counts once its transaction commits; ROLLBACK
//! and ROLLBACK TO SAVEPOINT undo it. Prepared statements and advisory locks
//! are not here: they survive a rollback.

use super::change::{Change, TxControl};
use crate::sql::Discard;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    /// Session-scope settings by lower-case name. The value is the text the
    /// client wrote (unquoted when it was a string constant).
    pub settings: BTreeMap<String, String>,
    /// Custom (`x.y`) settings after RESET: they still exist, empty.
    pub reset_custom: BTreeSet<String>,
    pub role: Option<String>,
    pub session_authorization: Option<String>,
    pub listen: BTreeSet<String>,
    pub holdable_cursors: BTreeSet<String>,
    /// Temp objects created (the wire cannot see them dropped; the server
    /// check counts them).
    pub temp_objects: u32,
}

impl Vars {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Set { name, value } => match value {
                Some(v) => {
                    self.reset_custom.remove(name);
                    self.settings.insert(name.clone(), v.clone());
                }
                None => {
                    self.settings.remove(name);
                    if name.contains('.') {
                        self.reset_custom.insert(name.clone());
                    }
                }
            },
            Change::ResetAll => {
                // RESET ALL keeps ROLE; custom settings stay, empty.
                let custom: Vec<String> = self
                    .settings
                    .keys()
                    .filter(|k| k.contains('.'))
                    .cloned()
                    .collect();
                self.reset_custom.extend(custom);
                self.settings.clear();
            }
            Change::Role(r) => self.role = r.clone(),
            Change::SessionAuthorization(a) => {
                self.session_authorization = a.clone();
                // Setting the session user also resets the current role.
                self.role = None;
            }
            Change::Listen(ch) => {
                self.listen.insert(ch.clone());
            }
            Change::Unlisten(Some(ch)) => {
                self.listen.remove(ch);
            }
            Change::Unlisten(None) => self.listen.clear(),
            Change::DeclareHold(c) => {
                self.holdable_cursors.insert(c.clone());
            }
            Change::CloseCursor(Some(c)) => {
                self.holdable_cursors.remove(c);
            }
            Change::CloseCursor(None) => self.holdable_cursors.clear(),
            Change::CreateTemp => self.temp_objects = self.temp_objects.saturating_add(1),
            Change::Discard(Discard::Temp) => self.temp_objects = 0,
            Change::Discard(Discard::All) => {
                let reset_custom = std::mem::take(&mut self.reset_custom);
                let custom: BTreeSet<String> = self
                    .settings
                    .keys()
                    .filter(|k| k.contains('.'))
                    .cloned()
                    .chain(reset_custom)
                    .collect();
                *self = Vars {
                    reset_custom: custom,
                    ..Vars::default()
                };
            }
            _ => {}
        }
    }
}

/// The committed state, the in-flight state, and the savepoints between.
#[derive(Debug, Clone, Default)]
pub struct TxVars {
    committed: Vars,
    current: Vars,
    savepoints: Vec<(String, Vars)>,
    /// `current` differs from `committed`.
    dirty: bool,
}

impl TxVars {
    /// What the session would keep if its transaction committed now.
    pub fn current(&self) -> &Vars {
        &self.current
    }

    pub fn committed(&self) -> &Vars {
        &self.committed
    }

    /// Applies a statement's change once its CommandComplete arrived.
    /// `tag` is the command tag (a COMMIT of a failed transaction answers
    /// ROLLBACK).
    pub fn apply(&mut self, change: &Change, tag: &[u8]) {
        match change {
            Change::Tx(TxControl::Commit) => {
                if tag.starts_with(b"ROLLBACK") {
                    self.rollback();
                } else {
                    self.commit();
                }
            }
            Change::Tx(TxControl::Rollback) | Change::Tx(TxControl::Prepare) => self.rollback(),
            Change::Tx(TxControl::Begin) => {}
            Change::Tx(TxControl::Savepoint(name)) => {
                self.savepoints.push((name.clone(), self.current.clone()))
            }
            Change::Tx(TxControl::RollbackTo(name)) => {
                if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                    self.savepoints.truncate(i + 1);
                    self.current = self.savepoints[i].1.clone();
                }
            }
            Change::Tx(TxControl::Release(name)) => {
                if let Some(i) = self.savepoints.iter().rposition(|(n, _)| n == name) {
                    self.savepoints.truncate(i);
                }
            }
            other => {
                self.current.apply(other);
                self.dirty = true;
            }
        }
    }

    /// A ReadyForQuery: with status 'I' the transaction (explicit or
    /// implicit) is over; it committed unless an error ended it.
    /// Returns true when the committed state may have changed.
    pub fn ready(&mut self, status: u8, error_since_last_ready: bool) -> bool {
        if status != b'I' {
            return false;
        }
        if error_since_last_ready {
            self.rollback();
            false
        } else {
            self.commit()
        }
    }

    fn commit(&mut self) -> bool {
        self.savepoints.clear();
        if !self.dirty {
            return false;
        }
        self.committed = self.current.clone();
        self.dirty = false;
        true
    }

    fn rollback(&mut self) {
        if self.dirty {
            self.current = self.committed.clone();
            self.dirty = false;
        }
        self.savepoints.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: &str, v: &str) -> Change {
        Change::Set {
            name: n.into(),
            value: Some(v.into()),
        }
    }

    #[test]
    fn rollback_undoes_and_commit_keeps() {
        let mut t = TxVars::default();
        t.apply(&Change::Tx(TxControl::Begin), b"BEGIN");
        t.apply(&set("timezone", "Asia/Tokyo"), b"SET");
        t.ready(b'T', false);
        t.apply(&Change::Tx(TxControl::Rollback), b"ROLLBACK");
        t.ready(b'I', false);
        assert!(t.committed().settings.is_empty());
        t.apply(&set("timezone", "UTC"), b"SET");
        t.ready(b'I', false);
        assert_eq!(t.committed().settings["timezone"], "UTC");
    }

    #[test]
    fn savepoints_restore_and_release() {
        let mut t = TxVars::default();
        t.apply(&Change::Tx(TxControl::Begin), b"BEGIN");
        t.apply(&set("a.x", "1"), b"SET");
        t.apply(&Change::Tx(TxControl::Savepoint("s".into())), b"SAVEPOINT");
        t.apply(&set("a.x", "2"), b"SET");
        t.apply(&Change::Listen("ch".into()), b"LISTEN");
        t.apply(&Change::Tx(TxControl::RollbackTo("s".into())), b"ROLLBACK");
        assert_eq!(t.current().settings["a.x"], "1");
        assert!(t.current().listen.is_empty());
        t.apply(&Change::Tx(TxControl::Release("s".into())), b"RELEASE");
        t.apply(&Change::Tx(TxControl::Commit), b"COMMIT");
        assert_eq!(t.committed().settings["a.x"], "1");
    }

    #[test]
    fn commit_of_a_failed_transaction_rolls_back() {
        let mut t = TxVars::default();
        t.apply(&Change::Tx(TxControl::Begin), b"BEGIN");
        t.apply(&set("work_mem", "1MB"), b"SET");
        t.ready(b'E', true);
        t.apply(&Change::Tx(TxControl::Commit), b"ROLLBACK");
        t.ready(b'I', false);
        assert!(t.committed().settings.is_empty());
    }

    #[test]
    fn implicit_transaction_error_rolls_back() {
        let mut t = TxVars::default();
        t.apply(&set("work_mem", "1MB"), b"SET");
        t.ready(b'I', true);
        assert!(t.committed().settings.is_empty());
    }

    #[test]
    fn reset_all_keeps_role_and_empties_custom() {
        let mut t = TxVars::default();
        t.apply(&Change::Role(Some("r".into())), b"SET");
        t.apply(&set("my.x", "1"), b"SET");
        t.apply(&set("work_mem", "1MB"), b"SET");
        t.apply(&Change::ResetAll, b"RESET");
        t.ready(b'I', false);
        let c = t.committed();
        assert_eq!(c.role.as_deref(), Some("r"));
        assert!(c.settings.is_empty());
        assert!(c.reset_custom.contains("my.x"));
    }
}
