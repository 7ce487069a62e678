//! Unit tests for the `sql` module, with helpers that render results as short
//! strings so each case reads as one table row.

mod classify;
mod command;
mod lexing;
mod props;

use super::{statements, Calls, Effect, Role, SetScope, SetValue, Target, Transaction};

/// The statements of `sql`, as (lossy) strings.
fn stmts(sql: &str) -> Vec<String> {
    statements(sql).map(lossy).collect()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Renders an effect compactly, decoding every name.
fn show(e: &Effect<'_>) -> String {
    let scope = |s: &SetScope| match s {
        SetScope::Session => "session",
        SetScope::Local => "local",
    };
    let role = |r: &Role<'_>| match r {
        Role::Name(n) => n.to_name(),
        Role::None => "<none>".into(),
        Role::Default => "<default>".into(),
    };
    let target = |t: &Target<'_>| match t {
        Target::Name(n) => n.to_name(),
        Target::All => "ALL".into(),
    };
    let chain = |c: &bool| if *c { " and chain" } else { "" };
    match e {
        Effect::Other => "other".into(),
        Effect::Set {
            scope: s,
            name,
            value,
        } => {
            let value = match value {
                SetValue::Value(v) => format!("= {}", lossy(v)),
                SetValue::Default => "default".into(),
                SetValue::FromCurrent => "from current".into(),
            };
            format!("set {} {name} {value}", scope(s))
        }
        Effect::Reset { name } => format!("reset {name}"),
        Effect::ResetAll => "reset all".into(),
        Effect::SetRole { scope: s, role: r } => format!("set role {} {}", scope(s), role(r)),
        Effect::ResetRole => "reset role".into(),
        Effect::SetSessionAuthorization { scope: s, user } => {
            format!("set session authorization {} {}", scope(s), role(user))
        }
        Effect::ResetSessionAuthorization => "reset session authorization".into(),
        Effect::SetSessionCharacteristics { modes } => format!("characteristics {}", lossy(modes)),
        Effect::SetTransaction => "set transaction".into(),
        Effect::Prepare { name, params, body } => format!(
            "prepare {name} ({}) {}",
            params.map_or("-".into(), lossy),
            lossy(body)
        ),
        Effect::Execute { name } => format!("execute {name}"),
        Effect::Deallocate(t) => format!("deallocate {}", target(t)),
        Effect::Listen { channel } => format!("listen {channel}"),
        Effect::Unlisten(t) => format!("unlisten {}", target(t)),
        Effect::Notify { channel } => format!("notify {channel}"),
        Effect::Discard(d) => format!("discard {d:?}"),
        Effect::Transaction(t) => match t {
            Transaction::Begin => "begin".into(),
            Transaction::Commit { chain: c } => format!("commit{}", chain(c)),
            Transaction::Rollback { chain: c } => format!("rollback{}", chain(c)),
            Transaction::Savepoint(n) => format!("savepoint {n}"),
            Transaction::Release(n) => format!("release {n}"),
            Transaction::RollbackTo(n) => format!("rollback to {n}"),
            Transaction::Prepare(n) => format!("prepare transaction {n}"),
            Transaction::CommitPrepared(n) => format!("commit prepared {n}"),
            Transaction::RollbackPrepared(n) => format!("rollback prepared {n}"),
        },
        Effect::DeclareCursor { name, with_hold } => {
            format!(
                "declare {name}{}",
                if *with_hold { " with hold" } else { "" }
            )
        }
        Effect::Close(t) => format!("close {}", target(t)),
        Effect::CreateTemp { object } => format!("temp {}", lossy(object)),
        Effect::Load { file } => format!("load {file}"),
        Effect::Calls(c) => show_calls(c),
    }
}

fn show_calls(c: &Calls<'_>) -> String {
    let mut out = String::from("calls");
    let flags = [
        (c.advisory_lock(), "lock"),
        (c.advisory_unlock(), "unlock"),
        (c.advisory_unlock_all(), "unlock_all"),
        (c.xact_advisory_lock(), "xact"),
        (c.dblink_connect(), "dblink"),
        (c.dblink_disconnect(), "dblink_disconnect"),
    ];
    for (_, name) in flags.iter().filter(|(on, _)| *on) {
        out.push(' ');
        out.push_str(name);
    }
    if c.set_config() {
        let calls: Vec<String> = c
            .set_configs()
            .map(|s| {
                let name = s.name.map_or("?".into(), |n| n.to_name());
                let local = s.is_local.map_or("?".into(), |l| l.to_string());
                format!("{name}:{local}")
            })
            .collect();
        out.push_str(&format!(" set_config[{}]", calls.join(", ")));
    }
    out
}

/// `show(classify(sql))`.
fn class(sql: &str) -> String {
    show(&super::classify(sql))
}

/// Checks each (sql, expected `show`) row.
fn check(rows: &[(&str, &str)]) {
    for (sql, want) in rows {
        assert_eq!(class(sql), *want, "classify({sql:?})");
    }
}
