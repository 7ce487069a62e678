//! The ledger's own, owned description of what one statement changed:
//! converted from the classifier's borrowed [`Effect`] only for statements
//! that change something, so a plain SELECT costs no allocation.

use crate::sql::{self, Discard, Effect, Role, SetScope, SetValue, Target, Transaction};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxControl {
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// PREPARE TRANSACTION: the transaction leaves this session.
    Prepare,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A session-scope SET; `value` is `None` for RESET / TO DEFAULT, and
    /// the raw text for anything else (the server check gives canonical
    /// values).
    Set {
        name: String,
        value: Option<String>,
    },
    ResetAll,
    /// `None` is `SET ROLE NONE` / `RESET ROLE`.
    Role(Option<String>),
    /// `None` is `DEFAULT` / RESET.
    SessionAuthorization(Option<String>),
    Prepare {
        name: String,
        text: String,
    },
    /// `None` is DEALLOCATE ALL.
    Deallocate(Option<String>),
    Listen(String),
    /// `None` is UNLISTEN *.
    Unlisten(Option<String>),
    Discard(Discard),
    Tx(TxControl),
    DeclareHold(String),
    /// `None` is CLOSE ALL.
    CloseCursor(Option<String>),
    CreateTemp,
    Load(String),
    AdvisoryLock,
    AdvisoryUnlock,
    AdvisoryUnlockAll,
    DblinkConnect,
    DblinkDisconnect,
    /// A set_config the text cannot fully see (name or scope not a
    /// constant): only the server check can tell what changed.
    OpaqueSetConfig,
    /// SQL EXECUTE of a prepared statement: its recorded changes apply.
    Execute(String),
}

/// Lower-cases a setting name: GUC names are case-insensitive.
pub fn setting_name(raw: String) -> String {
    raw.to_ascii_lowercase()
}

/// The value of a SET as the server stores it for the simple cases: a string
/// constant unquoted, anything else as written.
fn set_value(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let t = text.trim();
    if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') && !t[1..t.len() - 1].contains('\'')
    {
        return t[1..t.len() - 1].to_string();
    }
    if t.len() >= 2 && t.starts_with('\'') && t.ends_with('\'') {
        return t[1..t.len() - 1].replace("''", "'");
    }
    // An unquoted identifier is folded to lower case by the parser.
    if t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return t.to_ascii_lowercase();
    }
    t.to_string()
}

fn target(t: Target<'_>) -> Option<String> {
    match t {
        Target::Name(i) => Some(i.to_name()),
        Target::All => None,
    }
}

fn role(r: Role<'_>) -> Option<String> {
    match r {
        Role::Name(i) => Some(i.to_name()),
        Role::None | Role::Default => None,
    }
}

/// What one statement changes, appended to `out`. Nothing is appended (and
/// nothing allocated) for a statement that changes no session state.
pub fn changes_of(effect: Effect<'_>, out: &mut Vec<Change>) {
    match effect {
        Effect::Other | Effect::Notify { .. } | Effect::SetTransaction => {}
        Effect::Execute { name } => out.push(Change::Execute(name.to_name())),
        Effect::Set { scope, name, value } => {
            if scope == SetScope::Session {
                let value = match value {
                    SetValue::Value(v) => Some(set_value(v)),
                    SetValue::Default => None,
                    // The value is whatever it is now: known to the server.
                    SetValue::FromCurrent => Some(String::new()),
                };
                out.push(Change::Set {
                    name: setting_name(name.to_name()),
                    value,
                });
            }
        }
        Effect::Reset { name } => out.push(Change::Set {
            name: setting_name(name.to_name()),
            value: None,
        }),
        Effect::ResetAll => out.push(Change::ResetAll),
        Effect::SetRole { scope, role: r } => {
            if scope == SetScope::Session {
                out.push(Change::Role(role(r)));
            }
        }
        Effect::ResetRole => out.push(Change::Role(None)),
        Effect::SetSessionAuthorization { scope, user } => {
            if scope == SetScope::Session {
                out.push(Change::SessionAuthorization(role(user)));
            }
        }
        Effect::ResetSessionAuthorization => out.push(Change::SessionAuthorization(None)),
        Effect::SetSessionCharacteristics { modes } => {
            // Each clause sets its own default_transaction_* parameter; the
            // server check reads the values.
            let m = String::from_utf8_lossy(modes).to_ascii_lowercase();
            for (word, name) in [
                ("isolation", "default_transaction_isolation"),
                ("read", "default_transaction_read_only"),
                ("deferrable", "default_transaction_deferrable"),
            ] {
                if m.contains(word) {
                    out.push(Change::Set {
                        name: name.into(),
                        value: Some(String::new()),
                    });
                }
            }
        }
        Effect::Prepare { name, body, .. } => out.push(Change::Prepare {
            name: name.to_name(),
            text: String::from_utf8_lossy(body).into_owned(),
        }),
        Effect::Deallocate(t) => out.push(Change::Deallocate(target(t))),
        Effect::Listen { channel } => out.push(Change::Listen(channel.to_name())),
        Effect::Unlisten(t) => out.push(Change::Unlisten(target(t))),
        Effect::Discard(d) => out.push(Change::Discard(d)),
        Effect::Transaction(t) => {
            let c = match t {
                Transaction::Begin => TxControl::Begin,
                Transaction::Commit { .. } => TxControl::Commit,
                Transaction::Rollback { .. } => TxControl::Rollback,
                Transaction::Savepoint(s) => TxControl::Savepoint(s.to_name()),
                Transaction::Release(s) => TxControl::Release(s.to_name()),
                Transaction::RollbackTo(s) => TxControl::RollbackTo(s.to_name()),
                Transaction::Prepare(_) => TxControl::Prepare,
                Transaction::CommitPrepared(_) | Transaction::RollbackPrepared(_) => return,
            };
            out.push(Change::Tx(c));
        }
        Effect::DeclareCursor { name, with_hold } => {
            if with_hold {
                out.push(Change::DeclareHold(name.to_name()));
            }
        }
        Effect::Close(t) => out.push(Change::CloseCursor(target(t))),
        Effect::CreateTemp { .. } => out.push(Change::CreateTemp),
        Effect::Load { file } => out.push(Change::Load(file.to_name())),
        Effect::Calls(calls) => calls_changes(&calls, out),
    }
}

/// What function calls change: set_config, advisory locks, dblink.
fn calls_changes(calls: &crate::sql::Calls<'_>, out: &mut Vec<Change>) {
    if calls.set_config() {
        for call in calls.set_configs() {
            match (call.name, call.is_local) {
                (Some(name), Some(false)) => {
                    let name = setting_name(name.to_name());
                    // A constant value is known; any expression is
                    // for the server check to read.
                    let value = call.value.map(|v| v.to_name());
                    match name.as_str() {
                        // The role is no setting: set_config('role', ...) is SET ROLE.
                        "role" => out.push(Change::Role(value.filter(|v| v != "none"))),
                        "session_authorization" => out.push(Change::SessionAuthorization(value)),
                        _ => out.push(Change::Set {
                            name,
                            value: Some(value.unwrap_or_default()),
                        }),
                    }
                }
                (Some(_), Some(true)) => {}
                _ => out.push(Change::OpaqueSetConfig),
            }
        }
    }
    if calls.advisory_lock() {
        out.push(Change::AdvisoryLock);
    }
    if calls.advisory_unlock() {
        out.push(Change::AdvisoryUnlock);
    }
    if calls.advisory_unlock_all() {
        out.push(Change::AdvisoryUnlockAll);
    }
    if calls.dblink_connect() {
        out.push(Change::DblinkConnect);
    }
    if calls.dblink_disconnect() {
        out.push(Change::DblinkDisconnect);
    }
}

/// Changes of every statement of a simple query, one entry per statement
/// (empty for statements that change nothing). `None` when the whole query
/// changes nothing: the common case, with no allocation at all.
pub fn query_changes(sql_text: &[u8]) -> Option<Vec<Vec<Change>>> {
    if !sql::changes_session_state(sql_text) {
        return None;
    }
    Some(
        sql::classify_all(sql_text)
            .map(|e| {
                let mut v = Vec::new();
                changes_of(e, &mut v);
                v
            })
            .collect(),
    )
}

/// What the first statement of `text` changes: for a Parse (one statement)
/// or the body of a PREPARE, which EXECUTE applies later.
pub fn statement_changes(text: &[u8]) -> Vec<Change> {
    query_changes(text)
        .and_then(|mut s| {
            if s.is_empty() {
                None
            } else {
                Some(s.swap_remove(0))
            }
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_unquoted_like_the_server_does() {
        assert_eq!(set_value(b"'Asia/Tokyo'"), "Asia/Tokyo");
        assert_eq!(set_value(b"'it''s'"), "it's");
        assert_eq!(set_value(b"Abc"), "abc");
        assert_eq!(set_value(b"5"), "5");
    }

    #[test]
    fn plain_queries_change_nothing() {
        assert!(query_changes(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1").is_none());
        let c = query_changes(b"SET search_path = a, b; SELECT 1; LISTEN \"Ch\"").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            c[0],
            vec![Change::Set {
                name: "search_path".into(),
                value: Some("a, b".into())
            }]
        );
        assert!(c[1].is_empty());
        assert_eq!(c[2], vec![Change::Listen("Ch".into())]);
    }

    #[test]
    fn set_local_is_not_session_state() {
        let c = query_changes(b"SET LOCAL work_mem = '1MB'").unwrap_or_default();
        assert!(c.iter().all(|s| s.is_empty()));
    }
}
