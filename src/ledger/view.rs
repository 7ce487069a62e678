//! The ledger as the admin console shows it: one row per item with what a
//! move does with it (replayed, re-created, pins), and a one-line summary.

use super::{Ledger, PreparedKind};

/// One row of `SHOW SESSION <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub kind: &'static str,
    pub name: String,
    pub value: String,
    /// What a move does with it.
    pub on_move: &'static str,
}

fn row(
    kind: &'static str,
    name: impl Into<String>,
    value: impl Into<String>,
    on_move: &'static str,
) -> LedgerRow {
    LedgerRow {
        kind,
        name: name.into(),
        value: value.into(),
        on_move,
    }
}

/// Counts for `SHOW SESSIONS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    pub settings: usize,
    pub prepared: usize,
    pub listening: usize,
    pub pinned: Option<String>,
    /// The current `application_name`, as the server last reported it
    /// (the startup packet's before any report).
    pub application_name: String,
}

impl Ledger {
    /// The session's `application_name` now: the server reports every
    /// change of it (it is a GUC_REPORT setting).
    pub fn application_name(&self) -> String {
        let reported = self
            .reported
            .iter()
            .find(|(n, _)| n == b"application_name")
            .map(|(_, v)| v.as_slice());
        let startup = || {
            self.startup
                .iter()
                .find(|p| p.name == b"application_name")
                .map(|p| p.value.as_slice())
        };
        String::from_utf8_lossy(reported.or_else(startup).unwrap_or_default()).into_owned()
    }

    /// What a move does with a prepared statement: re-create it, or (when
    /// its Parse failed on this server after a move) it is not there yet.
    fn on_move_of(&self, name: &str) -> &'static str {
        if self.deferred.contains_key(name) {
            "deferred: prepared at its first use (its Parse failed on this server)"
        } else {
            "re-created"
        }
    }

    pub fn summary(&self) -> LedgerSummary {
        let v = self.vars();
        LedgerSummary {
            settings: v.settings.len() + v.reset_custom.len(),
            prepared: self.prepared.len() + usize::from(self.unnamed.is_some()),
            listening: v.listen.len(),
            pinned: self.pin_reason(),
            application_name: self.application_name(),
        }
    }

    pub fn rows(&self) -> Vec<LedgerRow> {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut rows = Vec::new();
        for p in &self.startup {
            rows.push(row(
                "startup",
                lossy(&p.name),
                lossy(&p.value),
                "replayed verbatim",
            ));
        }
        let v = self.vars();
        if let Some(a) = &v.session_authorization {
            rows.push(row(
                "session authorization",
                "session_authorization",
                a.clone(),
                "re-created",
            ));
        }
        for (name, value) in &v.settings {
            let kind = if name.contains('.') {
                "custom setting"
            } else {
                "setting"
            };
            rows.push(row(kind, name.clone(), value.clone(), "re-created"));
        }
        for name in &v.reset_custom {
            rows.push(row("custom setting", name.clone(), "", "re-created"));
        }
        for (name, p) in &self.prepared {
            let kind = match p.kind {
                PreparedKind::Sql { .. } => "prepared (SQL)",
                PreparedKind::Protocol { .. } => "prepared (protocol)",
            };
            rows.push(row(
                kind,
                name.clone(),
                p.query_text(),
                self.on_move_of(name),
            ));
        }
        if let Some(p) = &self.unnamed {
            rows.push(row(
                "unnamed statement",
                "",
                p.query_text(),
                self.on_move_of(""),
            ));
        }
        for ch in &v.listen {
            rows.push(row("listen", ch.clone(), "", "re-created"));
        }
        if let Some(r) = &v.role {
            rows.push(row("role", "role", r.clone(), "re-created (last)"));
        }
        self.blocker_rows(&mut rows);
        for (n, val) in &self.reported {
            rows.push(row(
                "reported",
                lossy(n),
                lossy(val),
                "sent again if it differs",
            ));
        }
        rows
    }

    /// What pins the session, and notes on what the wire could not see.
    fn blocker_rows(&self, rows: &mut Vec<LedgerRow>) {
        let v = self.vars();
        if v.temp_objects > 0 {
            rows.push(row(
                "blocker",
                "temp objects",
                v.temp_objects.to_string(),
                "pins",
            ));
        }
        for c in &v.holdable_cursors {
            rows.push(row("blocker", "WITH HOLD cursor", c.clone(), "pins"));
        }
        let b = &self.blockers;
        if b.advisory_locks > 0 {
            rows.push(row(
                "blocker",
                "session advisory locks",
                b.advisory_locks.to_string(),
                "pins",
            ));
        }
        for lib in &b.loaded_libraries {
            rows.push(row("blocker", "LOAD", lib.clone(), "pins"));
        }
        if b.dblink_connections > 0 {
            rows.push(row(
                "blocker",
                "dblink connections",
                b.dblink_connections.to_string(),
                "pins",
            ));
        }
        if b.opaque_set_config {
            rows.push(row(
                "note",
                "set_config",
                "name or scope not constant",
                "server check decides",
            ));
        }
        if self.desynced {
            rows.push(row(
                "note",
                "replies",
                "the ledger lost track of the server's replies",
                "moves read the server's state in full",
            ));
        }
    }
}
