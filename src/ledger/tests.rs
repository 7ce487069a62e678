//! Scripted wire sequences through the ledger: requests, then the replies a
//! PG 15 server sends, checking what is recorded.

use super::lazy::ClientState;
use super::replies::Fate;
use super::Ledger;
use crate::protocol::backend::BackendTag as B;
use crate::protocol::frontend::FrontendTag as F;

fn query(l: &mut Ledger, sql: &str) {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    l.on_frontend(F::Query, &body);
}

fn complete(l: &mut Ledger, tag: &str) {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    l.on_backend(B::CommandComplete, &body);
}

fn ready(l: &mut Ledger, status: u8) {
    l.on_backend(B::ReadyForQuery, &[status]);
}

fn parse(l: &mut Ledger, name: &str, sql: &str) {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    l.on_frontend(F::Parse, &body);
}

#[test]
fn execute_applies_what_the_prepared_statement_changes() {
    let mut l = Ledger::default();
    query(
        &mut l,
        "PREPARE py AS SELECT set_config('myapp.tenant', '42', false)",
    );
    complete(&mut l, "PREPARE");
    ready(&mut l, b'I');
    assert!(l.custom_names().contains("myapp.tenant"));
    query(&mut l, "EXECUTE py");
    complete(&mut l, "SELECT 1");
    ready(&mut l, b'I');
    assert_eq!(l.custom_value("myapp.tenant"), Some("42"));
}

#[test]
fn parse_after_an_error_is_never_recorded() {
    let mut l = Ledger::default();
    parse(&mut l, "", "SELECT 1/0");
    l.on_frontend(F::Bind, b"\0\0\0\0\0\0\0\0");
    l.on_frontend(F::Execute, b"\0\0\0\0\0");
    parse(&mut l, "s_after", "SELECT 1");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    l.on_backend(B::ErrorResponse, b"SERROR\0C22012\0\0");
    ready(&mut l, b'I');
    assert!(l.prepared().is_empty());
    assert!(l.unnamed().is_some(), "the first Parse completed");
    assert!(!l.is_desynced());
}

#[test]
fn a_simple_query_destroys_the_unnamed_statement() {
    let mut l = Ledger::default();
    parse(&mut l, "", "SELECT 1");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    ready(&mut l, b'I');
    assert!(l.unnamed().is_some());
    query(&mut l, "SELECT 2");
    complete(&mut l, "SELECT 1");
    ready(&mut l, b'I');
    assert!(l.unnamed().is_none());
}

#[test]
fn statements_skipped_after_an_error_change_nothing() {
    let mut l = Ledger::default();
    query(
        &mut l,
        "SET work_mem = '1MB'; SELECT 1/0; SET TimeZone = 'UTC'",
    );
    complete(&mut l, "SET");
    l.on_backend(B::ErrorResponse, b"SERROR\0C22012\0\0");
    ready(&mut l, b'I');
    assert!(
        l.vars().settings.is_empty(),
        "the implicit transaction rolled back"
    );
}

#[test]
fn close_and_deallocate_remove_statements() {
    let mut l = Ledger::default();
    parse(&mut l, "a", "SELECT 1");
    parse(&mut l, "b", "SELECT 2");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    l.on_backend(B::ParseComplete, b"");
    ready(&mut l, b'I');
    assert_eq!(l.prepared().len(), 2);
    l.on_frontend(F::Close, b"Sa\0");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::CloseComplete, b"");
    ready(&mut l, b'I');
    assert_eq!(l.prepared().keys().collect::<Vec<_>>(), vec!["b"]);
    query(&mut l, "DEALLOCATE ALL");
    complete(&mut l, "DEALLOCATE ALL");
    ready(&mut l, b'I');
    assert!(l.prepared().is_empty());
}

#[test]
fn listen_in_a_rolled_back_transaction_is_undone_but_prepare_stays() {
    let mut l = Ledger::default();
    for (sql, tag) in [
        ("BEGIN", "BEGIN"),
        ("LISTEN ch", "LISTEN"),
        ("PREPARE p AS SELECT 1", "PREPARE"),
    ] {
        query(&mut l, sql);
        complete(&mut l, tag);
        ready(&mut l, b'T');
    }
    query(&mut l, "ROLLBACK");
    complete(&mut l, "ROLLBACK");
    ready(&mut l, b'I');
    assert!(l.vars().listen.is_empty());
    assert!(l.prepared().contains_key("p"));
}

#[test]
fn messages_after_an_error_and_before_their_sync_expect_nothing() {
    // What a driver's pipeline does: the error comes back while the client
    // is still sending the rest of the batch.
    let mut l = Ledger::default();
    parse(&mut l, "s1", "SELECT 1/0");
    l.on_frontend(F::Bind, b"\0s1\0\0\0\0\0\0\0");
    l.on_frontend(F::Execute, b"\0\0\0\0\0");
    l.on_backend(B::ParseComplete, b"");
    l.on_backend(B::BindComplete, b"");
    l.on_backend(B::ErrorResponse, b"SERROR\0C22012\0\0");
    assert!(l.skipping());
    // Sent after the error: skipped by the server, so never answered.
    parse(&mut l, "s2", "SELECT 2");
    l.on_frontend(F::Bind, b"\0s2\0\0\0\0\0\0\0");
    query(&mut l, "SET work_mem = '7MB'");
    l.on_frontend(F::Sync, b"");
    assert!(!l.skipping());
    ready(&mut l, b'I');
    assert!(
        !l.is_desynced(),
        "a correct client never desyncs the ledger"
    );
    assert!(l.prepared().contains_key("s1"));
    assert!(!l.prepared().contains_key("s2"), "skipped by the server");
    // And the next batch is matched as usual.
    parse(&mut l, "s3", "SELECT 3");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    ready(&mut l, b'I');
    assert!(l.prepared().contains_key("s3"));
    assert!(!l.is_desynced());
}

#[test]
fn a_query_inside_a_failed_batch_is_skipped_with_it() {
    let mut l = Ledger::default();
    parse(&mut l, "bad", "SELECT 1/0");
    query(&mut l, "SET work_mem = '7MB'");
    l.on_frontend(F::Sync, b"");
    assert_eq!(l.in_flight().outstanding(), 2, "the Query and the Sync");
    l.on_backend(B::ErrorResponse, b"SERROR\0C42601\0\0");
    assert_eq!(l.in_flight().outstanding(), 1, "the Query gets no reply");
    assert!(!l.skipping(), "its Sync was already sent");
    ready(&mut l, b'I');
    assert!(!l.is_desynced());
}

#[test]
fn an_error_in_a_simple_query_skips_nothing() {
    let mut l = Ledger::default();
    query(&mut l, "SELECT 1/0");
    parse(&mut l, "after", "SELECT 1");
    l.on_backend(B::ErrorResponse, b"SERROR\0C22012\0\0");
    assert!(!l.skipping());
    ready(&mut l, b'I');
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    ready(&mut l, b'I');
    assert!(l.prepared().contains_key("after"));
    assert!(!l.is_desynced());
}

fn idle() -> ClientState {
    ClientState {
        quiet_idle: true,
        ..ClientState::default()
    }
}

fn deferred_ledger() -> Ledger {
    let mut l = Ledger::default();
    parse(&mut l, "s1", "SELECT x FROM t");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    ready(&mut l, b'I');
    l.defer([("s1".to_string(), vec![])].into_iter().collect());
    l
}

#[test]
fn a_deferred_statement_is_prepared_before_its_first_bind() {
    let mut l = deferred_ledger();
    let bind = b"\0s1\0\0\0\0\0\0\0";
    let msgs = l
        .lazy_parse_for(F::Bind, bind, idle())
        .expect("a Parse first");
    assert_eq!(msgs[0], b'P');
    assert!(l.lazy_parse_for(F::Bind, bind, idle()).is_none(), "once");
    l.on_frontend(F::Bind, bind);
    l.on_frontend(F::Execute, b"\0\0\0\0\0");
    l.on_frontend(F::Sync, b"");
    l.on_backend(B::ParseComplete, b"");
    assert_eq!(l.take_fate(), Fate::Drop, "pgbaton's own ParseComplete");
    l.on_backend(B::BindComplete, b"");
    assert_eq!(l.take_fate(), Fate::Forward);
    complete(&mut l, "SELECT 1");
    ready(&mut l, b'I');
    assert_eq!(l.take_fate(), Fate::Forward);
    assert!(l.deferred().is_empty());
    assert!(!l.is_desynced());
}

#[test]
fn a_failed_lazy_prepare_answers_the_statement_that_uses_it() {
    let mut l = deferred_ledger();
    let msgs = l
        .lazy_parse_for(F::Query, b"SELECT 1; EXECUTE s1\0", idle())
        .expect("Parse and Sync first");
    assert_eq!((msgs[0], msgs[msgs.len() - 5]), (b'P', b'S'));
    query(&mut l, "SELECT 1; EXECUTE s1");
    // The Parse fails: kept for the statement that uses it.
    l.on_backend(B::ErrorResponse, b"SERROR\0C42P01\0\0");
    assert_eq!(l.take_fate(), Fate::Keep("s1".into()));
    ready(&mut l, b'I');
    assert_eq!(
        l.take_fate(),
        Fate::Drop,
        "pgbaton's own Sync's ReadyForQuery"
    );
    // SELECT 1 runs and is the client's; the EXECUTE's own error (no such
    // statement) is replaced by the kept one.
    complete(&mut l, "SELECT 1");
    assert_eq!(l.take_fate(), Fate::Forward);
    l.on_backend(B::ErrorResponse, b"SERROR\0C26000\0\0");
    assert_eq!(l.take_fate(), Fate::Replace("s1".into()));
    ready(&mut l, b'I');
    assert_eq!(l.take_fate(), Fate::Forward, "the query's ReadyForQuery");
    assert!(l.deferred().contains_key("s1"), "still deferred");
    assert!(!l.is_desynced());
    // Not helped inside an extended batch, nor in a failed transaction;
    // in an open one only when the first statement is the first use.
    let state = |batch_open, tx_failed, quiet_idle| ClientState {
        batch_open,
        tx_failed,
        quiet_idle,
    };
    let q = b"EXECUTE s1\0";
    assert!(l
        .lazy_parse_for(F::Query, q, state(true, false, false))
        .is_none());
    assert!(l
        .lazy_parse_for(F::Query, q, state(false, true, false))
        .is_none());
    let second = b"INSERT INTO t VALUES (1); EXECUTE s1\0";
    assert!(l
        .lazy_parse_for(F::Query, second, state(false, false, false))
        .is_none());
    assert!(l
        .lazy_parse_for(F::Query, q, state(false, false, false))
        .is_some());
}
