//! An error in the middle of a pipeline: the server skips everything up to
//! the batch's Sync, including what the client sent after the error came
//! back. pgbaton's ledger and tracker must expect exactly that, so the
//! session stays movable and its state right; where the ledger truly
//! cannot know, a move reads the server's state in full.

use crate::harness::raw::build;
use crate::harness::{admin, col, entry, foreign_proxy, request, ADMIN};
use crate::harness::{start_servers, Raw};
use crate::ledger::ledger_rows;
use bytes::BytesMut;
use pgbaton::session::registry::SessionEntry;

fn show(msgs: &[crate::harness::Msg]) -> String {
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    String::from_utf8_lossy(&row.body[6..]).into_owned()
}

async fn notes(entry: &SessionEntry) -> Vec<String> {
    ledger_rows(entry)
        .await
        .into_iter()
        .filter(|(kind, _, _)| kind == "note")
        .map(|(_, name, value)| format!("{name}: {value}"))
        .collect()
}

/// The `check` column of the last move of session `id` in SHOW MIGRATIONS.
async fn last_check(console: &tokio_postgres::Client, id: u64) -> Option<String> {
    admin(console, "SHOW MIGRATIONS")
        .await
        .unwrap()
        .iter()
        .rev()
        .find(|r| col(r, "session") == Some(id.to_string().as_str()))
        .and_then(|r| col(r, "check").map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_client_sends_after_an_error_is_skipped_and_expected_so() {
    let servers = start_servers(2).await;
    let proxy = foreign_proxy(&[&servers[0], &servers[1]], ADMIN).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "piped")],
    )
    .await;
    raw.query("SET search_path = pg_catalog").await;

    // A batch that fails, flushed so the error comes back at once.
    let mut out = BytesMut::new();
    build::parse("s1", "SELECT 1/(random() * 0)::int", &mut out);
    build::bind("", "s1", &mut out);
    build::execute("", &mut out);
    build::flush(&mut out);
    raw.send(&out).await;
    let mut tags = Vec::new();
    loop {
        let m = raw.recv().await.expect("the batch's answer");
        tags.push(m.tag);
        if m.tag == b'E' {
            assert_eq!(m.code().as_deref(), Some("22012"));
            break;
        }
    }
    assert_eq!(tags, vec![b'1', b'2', b'E'], "the error came at Execute");

    // Sent after the error arrived, before the Sync: all skipped by the
    // server, a Query among them, and only the Sync answered.
    let mut out = BytesMut::new();
    build::parse("s2", "SELECT 2", &mut out);
    build::bind("", "s2", &mut out);
    build::execute("", &mut out);
    postgres_protocol::message::frontend::query("SET work_mem = '7MB'", &mut out).unwrap();
    build::sync(&mut out);
    raw.send(&out).await;
    assert_eq!(raw.tags_until_rfq().await, vec![b'Z']);
    assert_eq!(show(&raw.query("SHOW work_mem").await), "4MB");

    let e = entry(&proxy, "piped").await;
    assert!(notes(&e).await.is_empty(), "{:?}", notes(&e).await);
    // At a safe point (nothing counted as in flight), so it moves; the
    // wire kept track, so the light check is enough.
    let moved = e.migrate(request("pg2")).await.expect("the session moves");
    assert_eq!(moved.to, "pg2");
    assert_eq!(last_check(&console, e.id).await.as_deref(), Some("light"));
    assert_eq!(show(&raw.query("SHOW search_path").await), "pg_catalog");
    // s1 was prepared before the error, s2 never was.
    let msgs = raw
        .query("SELECT string_agg(name, ',' ORDER BY name) FROM pg_prepared_statements")
        .await;
    assert_eq!(show(&msgs), "s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_lost_track_makes_the_move_read_the_server() {
    let servers = start_servers(2).await;
    let proxy = foreign_proxy(&[&servers[0], &servers[1]], ADMIN).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "lost")],
    )
    .await;
    raw.query("SET work_mem = '7MB'").await;
    // A Parse the ledger cannot read (no parameter count), which the
    // server refuses, then more of its batch: replies the ledger cannot
    // match.
    let mut out = BytesMut::new();
    build::message(b'P', b"bad\0SELECT 1\0", &mut out);
    build::flush(&mut out);
    raw.send(&out).await;
    let m = raw.recv().await.expect("an answer");
    assert_eq!(m.code().as_deref(), Some("08P01"), "{:?}", m.message());
    let mut out = BytesMut::new();
    build::parse("after", "SELECT 2", &mut out);
    build::bind("", "after", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    assert_eq!(raw.tags_until_rfq().await, vec![b'Z']);
    let e = entry(&proxy, "lost").await;
    let n = notes(&e).await;
    assert!(n.iter().any(|n| n.starts_with("replies")), "{n:?}");

    // So the move does not trust it: the server's state is read in full
    // and replayed, and the session keeps what it had.
    e.migrate(request("pg2")).await.expect("the session moves");
    assert_eq!(last_check(&console, e.id).await.as_deref(), Some("full"));
    assert_eq!(show(&raw.query("SHOW work_mem").await), "7MB");
    assert_eq!(
        show(&raw.query("SELECT inet_server_port()::text").await),
        servers[1].port().to_string()
    );
}
