//! The server's truth about a session, read at a safe point, and how it
//! compares with the ledger.
//!
//! The query is built after `reference/capture-example.sql` (verified on PG
//! 15): custom setting names are passed in because pg_settings hides them,
//! the capture statement's own name is excluded from pg_prepared_statements,
//! and only holdable cursors count (the capture portal shows up as a cursor).

use super::Ledger;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the statement and portal pgbaton uses on a client's connection.
pub const CHECK_NAME: &str = "pgbaton_check";

/// `$1`: text[] of custom setting names; `$2`: this statement's name.
pub const CHECK_SQL: &str = "SELECT json_build_object(
  'pid', pg_backend_pid(),
  'server_version_num', current_setting('server_version_num'),
  'session_user', session_user::text,
  'current_user', current_user::text,
  'role', current_setting('role'),
  'session_authorization', current_setting('session_authorization'),
  'settings', (SELECT coalesce(json_object_agg(lower(name), setting), '{}') FROM pg_settings WHERE source = 'session'
                AND name NOT IN ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')),
  'custom', (SELECT coalesce(json_object_agg(n, current_setting(n, true)), '{}') FROM unnest($1::text[]) AS n),
  'prepared', (SELECT coalesce(json_agg(json_build_object('name', name, 'statement', statement,
                 'parameter_types', parameter_types::oid[]::int8[], 'from_sql', from_sql) ORDER BY name), '[]')
               FROM pg_prepared_statements WHERE name <> $2),
  'listen', (SELECT coalesce(json_agg(c ORDER BY c), '[]') FROM pg_listening_channels() AS c),
  'holdable_cursors', (SELECT count(*) FROM pg_cursors WHERE is_holdable),
  'temp_objects', (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())
                + (SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema())
                + (SELECT count(*) FROM pg_type WHERE typnamespace = pg_my_temp_schema() AND typrelid = 0 AND typelem = 0),
  'advisory_locks', (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
                       AND granted)
)::text";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerPrepared {
    pub name: String,
    pub statement: String,
    pub parameter_types: Vec<u32>,
    pub from_sql: bool,
}

/// What the server says about the session.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerState {
    pub pid: i32,
    pub server_version_num: String,
    pub session_user: String,
    pub current_user: String,
    /// `none` when no SET ROLE is in effect.
    pub role: String,
    pub session_authorization: String,
    /// Settings with source `session`, by lower-case name, canonical value.
    pub settings: BTreeMap<String, String>,
    /// Custom settings by name; `None` when it does not exist.
    pub custom: BTreeMap<String, Option<String>>,
    pub prepared: Vec<ServerPrepared>,
    pub listen: Vec<String>,
    pub holdable_cursors: i64,
    pub temp_objects: i64,
    pub advisory_locks: i64,
}

impl ServerState {
    pub fn from_json(text: &str) -> Result<ServerState, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Why the server says the session cannot move, if it can't.
    pub fn pin_reason(&self) -> Option<String> {
        let mut r = Vec::new();
        if self.temp_objects > 0 {
            r.push(format!("{} temp object(s)", self.temp_objects));
        }
        if self.holdable_cursors > 0 {
            r.push(format!("{} WITH HOLD cursor(s)", self.holdable_cursors));
        }
        if self.advisory_locks > 0 {
            r.push(format!("{} session advisory lock(s)", self.advisory_locks));
        }
        if r.is_empty() {
            None
        } else {
            Some(r.join(", "))
        }
    }
}

/// Appends the check's Parse, Bind, Execute and Close (no Sync, so a caller
/// can put it at the end of a longer batch).
pub fn check_batch(custom_names: &BTreeSet<String>, out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    use postgres_protocol::message::frontend;
    const TEXT_ARRAY_OID: u32 = 1009;
    const TEXT_OID: u32 = 25;
    let names = text_array_literal(custom_names);
    frontend::parse(CHECK_NAME, CHECK_SQL, [TEXT_ARRAY_OID, TEXT_OID], out)
        .expect("static names have no NUL");
    crate::protocol::write::message(out, b'B', |b| {
        b.put_slice(CHECK_NAME.as_bytes());
        b.put_u8(0);
        b.put_slice(CHECK_NAME.as_bytes());
        b.put_u8(0);
        b.put_i16(0); // all parameters in text
        b.put_i16(2);
        for v in [names.as_bytes(), CHECK_NAME.as_bytes()] {
            b.put_i32(v.len() as i32);
            b.put_slice(v);
        }
        b.put_i16(0); // results in text
    });
    frontend::execute(CHECK_NAME, 0, out).expect("static name");
    frontend::close(b'S', CHECK_NAME, out).expect("static name");
}

/// The array literal for `$1`: every name double-quoted and escaped.
pub fn text_array_literal<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let mut out = String::from("{");
    for (i, n) in names.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in n.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// Where ledger and server disagree, one line per item. Setting values are
/// compared by name only for ordinary settings (the server canonicalises
/// them: `48MB` is `49152`), and by value for custom settings (stored as
/// text) when the ledger knows the value.
pub fn differences(ledger: &Ledger, server: &ServerState) -> Vec<String> {
    let mut out = Vec::new();
    let v = ledger.vars();
    let ledger_settings: BTreeSet<&str> = v
        .settings
        .keys()
        .filter(|k| !k.contains('.'))
        .map(String::as_str)
        .collect();
    let server_settings: BTreeSet<&str> = server.settings.keys().map(String::as_str).collect();
    for s in ledger_settings.difference(&server_settings) {
        out.push(format!("setting {s}: in the ledger, not set on the server"));
    }
    for s in server_settings.difference(&ledger_settings) {
        out.push(format!("setting {s}: set on the server, not in the ledger"));
    }
    for (name, server_value) in &server.custom {
        let ledger_value = ledger.custom_value(name);
        let known = !matches!(ledger_value, Some(""));
        match (ledger_value, server_value.as_deref()) {
            (Some(a), Some(b)) if a == b => {}
            (None, None) | (None, Some("")) => {}
            (Some(""), Some(_)) | (Some(""), None) => {}
            (a, b) if known => {
                out.push(format!("custom setting {name}: ledger {a:?}, server {b:?}"))
            }
            _ => {}
        }
    }
    let ledger_prepared: BTreeSet<&str> = ledger.prepared().keys().map(String::as_str).collect();
    let server_prepared: BTreeSet<&str> = server.prepared.iter().map(|p| p.name.as_str()).collect();
    if ledger_prepared != server_prepared {
        out.push(format!(
            "prepared statements: ledger {ledger_prepared:?}, server {server_prepared:?}"
        ));
    }
    let ledger_listen: BTreeSet<&str> = v.listen.iter().map(String::as_str).collect();
    let server_listen: BTreeSet<&str> = server.listen.iter().map(String::as_str).collect();
    if ledger_listen != server_listen {
        out.push(format!(
            "channels: ledger {ledger_listen:?}, server {server_listen:?}"
        ));
    }
    let ledger_role = v.role.as_deref().unwrap_or("none");
    if ledger_role != server.role {
        out.push(format!(
            "role: ledger {ledger_role:?}, server {:?}",
            server.role
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literal_escapes() {
        let names = vec![
            "a.b".to_string(),
            "x\"y".to_string(),
            "back\\slash".to_string(),
        ];
        assert_eq!(
            text_array_literal(&names),
            r#"{"a.b","x\"y","back\\slash"}"#
        );
        assert_eq!(text_array_literal(&Vec::<String>::new()), "{}");
    }

    #[test]
    fn parses_the_servers_answer() {
        let json = r#"{"pid": 7, "server_version_num": "150018", "session_user": "u", "current_user": "u",
          "role": "none", "session_authorization": "u", "settings": {"timezone": "UTC"},
          "custom": {"my.x": "1", "my.y": null}, "prepared": [{"name": "p", "statement": "PREPARE p AS SELECT 1",
          "parameter_types": [], "from_sql": true}], "listen": ["ch"], "holdable_cursors": 0,
          "temp_objects": 1, "advisory_locks": 0}"#;
        let s = ServerState::from_json(json).unwrap();
        assert_eq!(s.custom["my.y"], None);
        assert_eq!(s.pin_reason().as_deref(), Some("1 temp object(s)"));
    }
}
