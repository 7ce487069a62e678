//! The server's truth about a session, read at a safe point, and how it
//! compares with the ledger. Two forms: the full check (settings with their
//! source, temp objects), and the light one a move runs first (current
//! values of the settable settings), which costs a third as much.
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

/// The part both checks share. Views are read through the functions under
/// them (`pg_prepared_statement()` for `pg_prepared_statements`, ...): a
/// view costs its backend a relcache load and a rewrite the first time, and
/// the check usually runs once on a backend, cold.
macro_rules! common_fields {
    () => {
        "'pid', pg_backend_pid(),
  'server_version_num', current_setting('server_version_num'),
  'session_user', session_user::text,
  'current_user', current_user::text,
  'role', current_setting('role'),
  'session_authorization', current_setting('session_authorization'),
  'custom', (SELECT coalesce(json_object_agg(n, current_setting(n, true)), '{}') FROM unnest($1::text[]) AS n),
  'prepared', (SELECT coalesce(json_agg(json_build_object('name', name, 'statement', statement,
                 'parameter_types', parameter_types::oid[]::int8[], 'from_sql', from_sql) ORDER BY name), '[]')
               FROM pg_prepared_statement() WHERE name <> $2),
  'listen', (SELECT coalesce(json_agg(c ORDER BY c), '[]') FROM pg_listening_channels() AS c),
  'holdable_cursors', (SELECT count(*) FROM pg_cursor() WHERE is_holdable),
  'temp_schema', pg_my_temp_schema()::int8,
  'accepts_writes', NOT pg_is_in_recovery() AND NOT current_setting('default_transaction_read_only')::bool"
    };
}

/// The full check. `$1`: text[] of custom setting names; `$2`: this
/// statement's name. Settings come from pg_settings with their source, which
/// is what a replay needs, but building that view is most of the check's
/// cost (about 0.5 ms warm).
pub const CHECK_SQL: &str = concat!(
    "SELECT json_build_object(\n  ",
    common_fields!(),
    ",
  'advisory_locks', (SELECT count(*) FROM pg_lock_status() WHERE locktype = 'advisory'
                       AND pid = pg_backend_pid() AND granted),
  'settings', (SELECT coalesce(json_object_agg(lower(name), setting), '{}') FROM pg_settings WHERE source = 'session'
                AND name NOT IN ('transaction_isolation', 'transaction_read_only', 'transaction_deferrable')),
  'temp_objects', CASE WHEN pg_my_temp_schema() = 0 THEN 0 ELSE
                  (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema())
                + (SELECT count(*) FROM pg_proc WHERE pronamespace = pg_my_temp_schema())
                + (SELECT count(*) FROM pg_type WHERE typnamespace = pg_my_temp_schema() AND typrelid = 0 AND typelem = 0) END
)::text"
);

/// The light check a move runs on both sides. `$3` is the text[] of every
/// setting a session can change ([`SETTABLE_NAMES_SQL`]), and the answer
/// holds their current values in that order (an aggregate over a plain
/// function scan keeps its order; an ORDER BY cost a third of the check).
/// `$4` says whether to count advisory locks: `pg_lock_status()` walks every
/// backend slot (about 0.3 ms per 1000 of max_connections), and a connection
/// pgbaton has just set up cannot hold one. Equal values on source and target
/// prove the settings moved; only when they differ (or the session ever had a
/// temp schema) does the move pay for the full check.
pub const LIGHT_CHECK_SQL: &str = concat!(
    "SELECT json_build_object(\n  ",
    common_fields!(),
    ",
  'values', (SELECT json_agg(current_setting(n, true)) FROM unnest($3::text[]) AS n),
  'advisory_locks', CASE WHEN $4 THEN (SELECT count(*) FROM pg_lock_status() WHERE locktype = 'advisory'
                       AND pid = pg_backend_pid() AND granted) ELSE 0 END
)::text"
);

/// The names [`LIGHT_CHECK_SQL`] reads, learned once per backend: every
/// setting a session can SET that every role can read. Left out: the
/// `transaction_*` ones, which follow their `default_` settings outside a
/// transaction, and the superuser-only ones (`current_setting` raises 42501
/// for them without pg_read_all_settings, even with `missing_ok`; pg_settings
/// already hides them from such roles, and these are the ones PG 15 has in
/// a settable context). Should a server have another, a light check that
/// meets it fails and the move reads the full state instead.
pub const SETTABLE_NAMES_SQL: &str = "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings
  WHERE context IN ('user', 'superuser') AND name NOT IN ('transaction_isolation', 'transaction_read_only',
  'transaction_deferrable', 'dynamic_library_path', 'session_preload_libraries', 'extension_destdir')";

/// Which check to run.
#[derive(Debug, Clone, Copy)]
pub enum Depth<'a> {
    /// Settings with their source, and temp objects counted.
    Full,
    /// Current values of these settings; no temp object count.
    Light(&'a [String]),
    /// The light check on a connection pgbaton has just set up (a move's
    /// target), which holds no advisory lock.
    Fresh(&'a [String]),
}

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
    /// Settings with source `session`, by lower-case name, canonical value
    /// (full check only).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Custom settings by name; `None` when it does not exist.
    pub custom: BTreeMap<String, Option<String>>,
    pub prepared: Vec<ServerPrepared>,
    pub listen: Vec<String>,
    pub holdable_cursors: i64,
    /// Counted by the full check only.
    #[serde(default)]
    pub temp_objects: i64,
    /// The session's temp schema; 0 when it never had one.
    #[serde(default)]
    pub temp_schema: i64,
    pub advisory_locks: i64,
    /// Whether the server takes writes from this session: not in recovery,
    /// and not read-only by default (how an old primary is made to refuse
    /// them before a switchover).
    #[serde(default)]
    pub accepts_writes: bool,
    /// The light check's current values of the settable settings, in the
    /// order of the names it was given; `None` from the full check.
    #[serde(default)]
    pub values: Option<Vec<Option<String>>>,
}

impl ServerState {
    pub fn from_json(text: &str) -> Result<ServerState, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Whether the light check produced this.
    pub fn is_light(&self) -> bool {
        self.values.is_some()
    }

    /// Why the server says the session cannot move, if it can't. The light
    /// check cannot see temp objects; a caller that finds `temp_schema` set
    /// reads the full state.
    pub fn pin_reason(&self) -> Option<String> {
        super::Blocker::reason(&self.pins())
    }

    /// What the server counts that pins the session.
    pub fn pins(&self) -> Vec<super::Blocker> {
        use super::Blocker;
        Blocker::present([
            Blocker::TempObjects(self.temp_objects as u32),
            Blocker::HoldCursors(self.holdable_cursors as u32),
            Blocker::AdvisoryLocks(self.advisory_locks as u32),
            Blocker::LoadedLibraries(0),
            Blocker::DblinkConnections(0),
        ])
    }
}

/// Appends the check's Close, Parse, Bind, Execute and Close (no Sync, so a
/// caller can put it at the end of a longer batch). The first Close (of a
/// statement that normally does not exist, which is no error) removes what
/// a check that failed before its final Close left on the connection.
pub fn check_batch(custom_names: &BTreeSet<String>, depth: Depth<'_>, out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    use postgres_protocol::message::frontend;
    const TEXT_ARRAY_OID: u32 = 1009;
    const TEXT_OID: u32 = 25;
    const BOOL_OID: u32 = 16;
    let names = text_array_literal(custom_names);
    let (settable, locks) = match depth {
        Depth::Full => (None, None),
        Depth::Light(list) => (Some(text_array_literal(list)), Some("true")),
        Depth::Fresh(list) => (Some(text_array_literal(list)), Some("false")),
    };
    frontend::close(b'S', CHECK_NAME, out).expect("static name");
    match &settable {
        None => frontend::parse(CHECK_NAME, CHECK_SQL, [TEXT_ARRAY_OID, TEXT_OID], out),
        Some(_) => frontend::parse(
            CHECK_NAME,
            LIGHT_CHECK_SQL,
            [TEXT_ARRAY_OID, TEXT_OID, TEXT_ARRAY_OID, BOOL_OID],
            out,
        ),
    }
    .expect("static names have no NUL");
    crate::protocol::write::message(out, b'B', |b| {
        b.put_slice(CHECK_NAME.as_bytes());
        b.put_u8(0);
        b.put_slice(CHECK_NAME.as_bytes());
        b.put_u8(0);
        b.put_i16(0); // all parameters in text
        let params = [
            Some(names.as_bytes()),
            Some(CHECK_NAME.as_bytes()),
            settable.as_ref().map(|s| s.as_bytes()),
            locks.map(str::as_bytes),
        ];
        let params: Vec<&[u8]> = params.into_iter().flatten().collect();
        b.put_i16(params.len() as i16);
        for v in params {
            b.put_i32(v.len() as i32);
            b.put_slice(v);
        }
        b.put_i16(0); // results in text
    });
    frontend::execute(CHECK_NAME, 0, out).expect("static name");
    frontend::close(b'S', CHECK_NAME, out).expect("static name");
}

/// A text[] literal for a parameter: every name double-quoted and escaped.
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
    // Deferred statements are the ledger's until their first use (`lazy`).
    let ledger_prepared: BTreeSet<&str> = ledger
        .prepared()
        .keys()
        .map(String::as_str)
        .filter(|n| !ledger.deferred().contains_key(*n))
        .collect();
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
        assert_eq!(s.pin_reason().as_deref(), Some("temp objects (1)"));
    }

    #[test]
    fn parses_the_light_answer() {
        let json = r#"{"pid": 7, "server_version_num": "150018", "session_user": "u", "current_user": "u",
          "role": "none", "session_authorization": "u", "custom": {}, "prepared": [], "listen": [],
          "holdable_cursors": 0, "temp_schema": 16390, "advisory_locks": 0,
          "values": ["on", null, "4MB"]}"#;
        let s = ServerState::from_json(json).unwrap();
        assert!(s.is_light());
        assert!(s.settings.is_empty());
        assert_eq!(
            s.values.as_deref(),
            Some(&[Some("on".into()), None, Some("4MB".into())][..])
        );
        // Temp objects are the full check's to count.
        assert_eq!(s.temp_schema, 16390);
        assert_eq!(s.pin_reason(), None);
    }

    #[test]
    fn the_light_check_binds_four_parameters_and_clears_leftovers() {
        let mut out = bytes::BytesMut::new();
        let names = vec!["work_mem".to_string()];
        check_batch(&BTreeSet::new(), Depth::Fresh(&names), &mut out);
        let mut tags = Vec::new();
        let mut rest = &out[..];
        while let Ok(Some((frame, _))) = crate::protocol::codec::split_message(rest, |_| usize::MAX)
        {
            tags.push(frame.tag);
            rest = &rest[frame.total..];
        }
        assert!(rest.is_empty());
        assert_eq!(tags, b"CPBEC");
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("false") && text.contains("\"work_mem\""));
    }
}
