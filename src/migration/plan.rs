//! What to replay on a move's target, and the batch that does it, in the
//! order DESIGN.md gives: session authorization, settings (timeouts last),
//! prepared statements each under the search_path they were prepared with,
//! the unnamed statement, LISTEN, SET ROLE last.
//!
//! A plan is built twice: from the ledger for pre-staging (the client keeps
//! working meanwhile), and from the server's truth at the safe point when
//! the target's state turns out to differ.

use super::MoveError;
use crate::ledger::check::ServerState;
use crate::ledger::{Ledger, PreparedKind};
use crate::protocol::frontend::parse_body;
use crate::protocol::write;
use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;

/// Settings that change how the replay itself behaves: applied last (a
/// `statement_timeout` or `default_transaction_read_only` set first would
/// act on the replay itself).
const LATE_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "default_transaction_read_only",
];

/// pgbaton's own statement names on a target; closed before the batch ends.
const SET_STMT: &str = "pgbaton_set";
const UTIL_STMT: &str = "pgbaton_util";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStatement {
    pub name: String,
    pub query: String,
    pub param_types: Vec<u32>,
    pub search_path: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayPlan {
    pub session_authorization: Option<String>,
    /// (name, value), in replay order.
    pub settings: Vec<(String, String)>,
    pub custom: Vec<(String, String)>,
    pub prepared: Vec<PlannedStatement>,
    /// The unnamed statement's Parse body and its search_path.
    pub unnamed: Option<(Vec<u8>, Option<String>)>,
    pub listen: Vec<String>,
    pub role: Option<String>,
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn order_settings(mut settings: Vec<(String, String)>) -> Vec<(String, String)> {
    settings.retain(|(n, _)| !n.starts_with("transaction_"));
    settings.sort_by_key(|(n, _)| (LATE_SETTINGS.contains(&n.as_str()), n.clone()));
    settings
}

fn statement_of(ledger: &Ledger, name: &str) -> Option<(String, Option<String>)> {
    let p = ledger.prepared().get(name)?;
    Some((p.query_text(), p.search_path.clone()))
}

impl ReplayPlan {
    /// From the ledger alone: what pre-staging replays while the client
    /// keeps working. Values the wire could not see are left out; the check
    /// at the safe point finds them.
    pub fn from_ledger(ledger: &Ledger) -> ReplayPlan {
        let v = ledger.vars();
        let settings = v
            .settings
            .iter()
            .filter(|(n, val)| !n.contains('.') && !val.is_empty())
            .map(|(n, val)| (n.clone(), val.clone()))
            .collect();
        let custom = ledger
            .custom_names()
            .iter()
            .filter_map(|n| {
                ledger
                    .custom_value(n)
                    .map(|val| (n.clone(), val.to_string()))
            })
            .collect();
        let prepared = ledger
            .prepared()
            .iter()
            .map(|(name, p)| {
                let param_types = match &p.kind {
                    PreparedKind::Protocol { parse_body: b } => {
                        parse_body(b).map(|x| x.param_types).unwrap_or_default()
                    }
                    PreparedKind::Sql { .. } => Vec::new(),
                };
                PlannedStatement {
                    name: name.clone(),
                    query: p.query_text(),
                    param_types,
                    search_path: p.search_path.clone(),
                }
            })
            .collect();
        ReplayPlan {
            session_authorization: v.session_authorization.clone(),
            settings: order_settings(settings),
            custom,
            prepared,
            unnamed: unnamed_of(ledger),
            listen: v.listen.iter().cloned().collect(),
            role: v.role.clone(),
        }
    }

    /// From the server's truth at the safe point, with texts and
    /// search_paths the server cannot tell taken from the ledger.
    pub fn from_server(
        server: &ServerState,
        ledger: &Ledger,
        login_user: &str,
    ) -> Result<ReplayPlan, MoveError> {
        let mut prepared = Vec::with_capacity(server.prepared.len());
        for p in &server.prepared {
            let (query, search_path) = statement_of(ledger, &p.name).ok_or_else(|| {
                MoveError::Pinned(format!(
                    "prepared statement \"{}\" was created where pgbaton could not see its text (inside a function?)",
                    p.name
                ))
            })?;
            prepared.push(PlannedStatement {
                name: p.name.clone(),
                query,
                param_types: p.parameter_types.clone(),
                search_path,
            });
        }
        Ok(ReplayPlan {
            session_authorization: (server.session_authorization != login_user)
                .then(|| server.session_authorization.clone()),
            settings: order_settings(
                server
                    .settings
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
            ),
            custom: server
                .custom
                .iter()
                .filter_map(|(n, v)| v.as_ref().map(|v| (n.clone(), v.clone())))
                .collect(),
            prepared,
            unnamed: unnamed_of(ledger),
            listen: server.listen.clone(),
            role: (server.role != "none").then(|| server.role.clone()),
        })
    }

    /// Parameter types of a protocol statement, from its Parse body.
    pub fn unnamed_param_types(p: &crate::ledger::Prepared) -> Vec<u32> {
        match &p.kind {
            PreparedKind::Protocol { parse_body: b } => {
                parse_body(b).map(|x| x.param_types).unwrap_or_default()
            }
            PreparedKind::Sql { .. } => Vec::new(),
        }
    }

    fn search_path(&self) -> Option<&str> {
        self.settings
            .iter()
            .find(|(n, _)| n == "search_path")
            .map(|(_, v)| v.as_str())
    }

    /// Appends the replay, in Sync-terminated parts. Each prepared
    /// statement's Parse is a part of its own, so one that fails there (its
    /// table dropped since it was prepared, say) fails alone and is
    /// prepared lazily after the move (see `ledger::lazy`); its search_path
    /// is set in the part before, which its failure cannot roll back. A
    /// failure anywhere else fails the move (the connection is dropped).
    pub fn write(&self, out: &mut BytesMut) -> ReplayParts {
        let mut parts = ReplayParts::default();
        let sync = |out: &mut BytesMut, parts: &mut ReplayParts| {
            write::message(out, b'S', |_| {});
            parts.syncs += 1;
        };
        if let Some(a) = &self.session_authorization {
            utility(
                out,
                &format!("SET SESSION AUTHORIZATION {}", quote_ident(a)),
            );
        }
        frontend::parse(
            SET_STMT,
            "SELECT pg_catalog.set_config($1, $2, false)",
            [25, 25],
            out,
        )
        .expect("static names have no NUL");
        let (early, late): (Vec<_>, Vec<_>) = self
            .settings
            .iter()
            .partition(|(n, _)| !LATE_SETTINGS.contains(&n.as_str()));
        for (n, v) in early.iter().copied().chain(self.custom.iter()) {
            set(out, n, v);
        }
        let final_path = self.search_path().map(str::to_string);
        let mut current = final_path.clone();
        // Where the last part ended: a Parse needs a Sync before it only
        // when something was written since.
        let mut part_start = usize::MAX;
        for p in &self.prepared {
            use_search_path(out, &mut current, p.search_path.as_deref());
            if out.len() != part_start {
                sync(out, &mut parts);
            }
            if frontend::parse(&p.name, &p.query, p.param_types.iter().copied(), out).is_ok() {
                parts
                    .lazy
                    .push((parts.syncs, p.name.clone(), p.param_types.clone()));
            }
            sync(out, &mut parts);
            part_start = out.len();
        }
        if let Some((body, path)) = &self.unnamed {
            use_search_path(out, &mut current, path.as_deref());
            if out.len() != part_start {
                sync(out, &mut parts);
            }
            write::message(out, b'P', |b| b.put_slice(body));
            let types = parse_body(body).map(|p| p.param_types).unwrap_or_default();
            parts.lazy.push((parts.syncs, String::new(), types));
            sync(out, &mut parts);
        }
        use_search_path(out, &mut current, final_path.as_deref());
        for ch in &self.listen {
            utility(out, &format!("LISTEN {}", quote_ident(ch)));
        }
        for (n, v) in late {
            set(out, n, v);
        }
        frontend::close(b'S', SET_STMT, out).expect("static name");
        if let Some(r) = &self.role {
            utility(out, &format!("SET ROLE {}", quote_ident(r)));
        }
        sync(out, &mut parts);
        parts
    }
}

/// The Sync-terminated parts a replay wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayParts {
    pub syncs: usize,
    /// Parts (from 0) that prepare one statement each: the statement's name
    /// (empty for the unnamed one) and parameter types.
    pub lazy: Vec<(usize, String, Vec<u32>)>,
}

/// Switches the search_path for the next Parse when it differs from the
/// current one (a statement must resolve names as when it was prepared).
fn use_search_path(out: &mut BytesMut, current: &mut Option<String>, path: Option<&str>) {
    if current.as_deref() == path {
        return;
    }
    match path {
        Some(p) => set(out, "search_path", p),
        None => utility(out, "RESET search_path"),
    }
    *current = path.map(str::to_string);
}

fn unnamed_of(ledger: &Ledger) -> Option<(Vec<u8>, Option<String>)> {
    ledger.unnamed().and_then(|p| match &p.kind {
        PreparedKind::Protocol { parse_body } => Some((parse_body.clone(), p.search_path.clone())),
        PreparedKind::Sql { .. } => None,
    })
}

/// `set_config(name, value, false)` through the named statement.
fn set(out: &mut BytesMut, name: &str, value: &str) {
    write::message(out, b'B', |b| {
        b.put_u8(0); // unnamed portal
        b.put_slice(SET_STMT.as_bytes());
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(2);
        for v in [name.as_bytes(), value.as_bytes()] {
            b.put_i32(v.len() as i32);
            b.put_slice(v);
        }
        b.put_i16(0);
    });
    frontend::execute("", 0, out).expect("no NUL");
}

/// A utility statement through a named statement, so the client's unnamed
/// statement (replayed separately) is never touched.
fn utility(out: &mut BytesMut, sql: &str) {
    if frontend::parse(UTIL_STMT, sql, std::iter::empty(), out).is_err() {
        return;
    }
    write::message(out, b'B', |b| {
        b.put_u8(0);
        b.put_slice(UTIL_STMT.as_bytes());
        b.put_u8(0);
        b.put_i16(0);
        b.put_i16(0);
        b.put_i16(0);
    });
    frontend::execute("", 0, out).expect("no NUL");
    frontend::close(b'S', UTIL_STMT, out).expect("static name");
}

/// Where two server states differ in what a move must carry. The process
/// id, and the statement text of SQL-prepared statements (Postgres keeps
/// the whole query string), are not compared.
///
/// Two light states compare the current values of the settable settings,
/// named from `settable` (the list both checks were given).
pub fn state_differences(
    source: &ServerState,
    target: &ServerState,
    settable: &[String],
) -> Vec<String> {
    let mut d = Vec::new();
    if let (Some(s), Some(t)) = (&source.values, &target.values) {
        if s.len() != t.len() {
            d.push("settings: the checks read different lists".into());
        }
        for (i, (a, b)) in s.iter().zip(t).enumerate().filter(|(_, (a, b))| a != b) {
            let name = settable.get(i).map(String::as_str).unwrap_or("?");
            d.push(format!("setting {name}: source {a:?}, target {b:?}"));
        }
    }
    if source.settings != target.settings {
        for (k, v) in &source.settings {
            if target.settings.get(k) != Some(v) {
                d.push(format!(
                    "setting {k}: source {v:?}, target {:?}",
                    target.settings.get(k)
                ));
            }
        }
        for k in target
            .settings
            .keys()
            .filter(|k| !source.settings.contains_key(*k))
        {
            d.push(format!("setting {k}: only on the target"));
        }
    }
    for (k, v) in &source.custom {
        let t = target.custom.get(k).cloned().flatten();
        let same = match (v.as_deref(), t.as_deref()) {
            (None, None) | (None, Some("")) => true,
            (a, b) => a == b,
        };
        if !same {
            d.push(format!("custom setting {k}: source {v:?}, target {t:?}"));
        }
    }
    let sig = |s: &ServerState| -> Vec<(String, Vec<u32>)> {
        s.prepared
            .iter()
            .map(|p| (p.name.clone(), p.parameter_types.clone()))
            .collect()
    };
    if sig(source) != sig(target) {
        d.push(format!(
            "prepared statements: source {:?}, target {:?}",
            sig(source),
            sig(target)
        ));
    }
    if source.listen != target.listen {
        d.push(format!(
            "channels: source {:?}, target {:?}",
            source.listen, target.listen
        ));
    }
    if source.role != target.role {
        d.push(format!(
            "role: source {}, target {}",
            source.role, target.role
        ));
    }
    if source.session_authorization != target.session_authorization
        || source.current_user != target.current_user
    {
        d.push(format!(
            "user: source {}/{}, target {}/{}",
            source.session_authorization,
            source.current_user,
            target.session_authorization,
            target.current_user
        ));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light(values: &[Option<&str>]) -> ServerState {
        let values: Vec<Option<String>> = values.iter().map(|v| v.map(str::to_string)).collect();
        let json = serde_json::json!({
            "pid": 1, "server_version_num": "150000", "session_user": "u", "current_user": "u",
            "role": "none", "session_authorization": "u", "custom": {}, "prepared": [],
            "listen": [], "holdable_cursors": 0, "temp_schema": 0, "advisory_locks": 0,
            "values": values,
        });
        ServerState::from_json(&json.to_string()).unwrap()
    }

    #[test]
    fn light_states_compare_values_and_name_the_setting() {
        let names = ["DateStyle".to_string(), "work_mem".to_string()];
        let a = light(&[Some("ISO, MDY"), Some("4MB")]);
        assert!(state_differences(&a, &a.clone(), &names).is_empty());
        let b = light(&[Some("ISO, MDY"), Some("7MB")]);
        let d = state_differences(&a, &b, &names);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("work_mem") && d[0].contains("7MB"), "{d:?}");
        // A setting only one side knows is a difference too.
        let c = light(&[Some("ISO, MDY"), None]);
        assert_eq!(state_differences(&a, &c, &names).len(), 1);
    }
}
