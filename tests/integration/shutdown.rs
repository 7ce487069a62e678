//! Graceful shutdown through `ProxyHandle::shutdown` (what SIGTERM calls):
//! idle sessions are closed with 57P01 once quiet for a second or answered,
//! sessions in a transaction may
//! finish it until `shutdown_timeout`, new connections are refused, and the
//! proxy task ends once every session has.

use crate::harness::raw::Msg;
use crate::harness::{must_fail, start_servers, Raw, TestProxy, TestServer};
use std::time::Duration;

/// A failure bound for things that normally happen at once.
const LIMIT: Duration = Duration::from_secs(60);

/// A shutdown_timeout no test run ever reaches.
const LONG: Duration = Duration::from_secs(600);

fn assert_admin_shutdown(m: &Msg) {
    assert_eq!(
        m.tag, b'E',
        "expected an ErrorResponse, got tag {}",
        m.tag as char
    );
    assert_eq!(m.code().as_deref(), Some("57P01"), "{:?}", m.message());
    assert_eq!(m.field(b'V').as_deref(), Some("FATAL"), "{:?}", m.message());
}

fn assert_ok(msgs: &[Msg], what: &str) {
    if let Some(e) = msgs.iter().find(|m| m.tag == b'E') {
        panic!("{what} failed: {:?} {:?}", e.code(), e.message());
    }
}

/// The transaction status of the ReadyForQuery ending `msgs`.
fn status(msgs: &[Msg]) -> u8 {
    let z = msgs.last().expect("messages");
    assert_eq!(z.tag, b'Z');
    z.body[0]
}

async fn count_rows(server: &TestServer, table: &str) -> i64 {
    let direct = server.connect_direct("postgres").await;
    direct
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Polls (a condition nothing can await) until no server process with this
/// application_name is left.
async fn wait_backend_gone(server: &TestServer, app: &str) {
    let direct = server.connect_direct("postgres").await;
    crate::harness::wait_for(&format!("the server process of {app} to exit"), || async {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        n == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_get_57p01_and_are_closed() {
    let servers = start_servers(1).await;
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.shutdown_timeout = LONG;
    let proxy = TestProxy::start(config).await;

    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "idle-raw")],
    )
    .await;
    assert_ok(&raw.query("SELECT 1").await, "SELECT 1");

    // A driver too: its connection ends with the FATAL as its error.
    let (client, conn) = tokio_postgres::connect(
        &proxy.conn_str("postgres", "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();

    proxy.handle.shutdown();

    let msgs = raw.until_closed().await;
    assert_eq!(msgs.len(), 1, "one FATAL, then the close: {msgs:?}");
    assert_admin_shutdown(&msgs[0]);

    let ended = tokio::time::timeout(LIMIT, conn)
        .await
        .expect("the driver's connection ends")
        .unwrap();
    let err = ended.expect_err("the connection ends with the FATAL");
    assert_eq!(
        err.code().map(|c| c.code()),
        Some("57P01"),
        "driver saw: {err:?}"
    );
    assert!(client.is_closed());
    assert!(client.simple_query("SELECT 1").await.is_err());

    // The server processes went away with them.
    wait_backend_gone(&servers[0], "idle-raw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transaction_may_finish_then_gets_57p01() {
    let servers = start_servers(1).await;
    servers[0].psql("postgres", "CREATE TABLE drained (x int)");
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.shutdown_timeout = LONG;
    let proxy = TestProxy::start(config).await;

    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    assert_ok(&raw.query("BEGIN").await, "BEGIN");
    assert_ok(&raw.query("INSERT INTO drained VALUES (1)").await, "INSERT");

    proxy.handle.shutdown();

    // Still inside its transaction: statements keep working.
    let msgs = raw.query("INSERT INTO drained VALUES (2)").await;
    assert_ok(&msgs, "INSERT after shutdown began");
    assert_eq!(status(&msgs), b'T');
    let msgs = raw.query("SELECT count(*) FROM drained").await;
    assert_ok(&msgs, "SELECT after shutdown began");
    assert_eq!(status(&msgs), b'T');

    let msgs = raw.query("COMMIT").await;
    assert_ok(&msgs, "COMMIT after shutdown began");
    assert_eq!(status(&msgs), b'I');
    // Right after the ReadyForQuery 'I': the FATAL, then the close.
    let rest = raw.until_closed().await;
    assert_eq!(rest.len(), 1, "one FATAL, then the close: {rest:?}");
    assert_admin_shutdown(&rest[0]);

    assert_eq!(count_rows(&servers[0], "drained").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_ends_a_lingering_transaction_without_committing() {
    let servers = start_servers(1).await;
    servers[0].psql("postgres", "CREATE TABLE lingering (x int)");
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.shutdown_timeout = Duration::from_millis(500);
    let proxy = TestProxy::start(config).await;

    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "lingering")],
    )
    .await;
    assert_ok(&raw.query("BEGIN").await, "BEGIN");
    assert_ok(
        &raw.query("INSERT INTO lingering VALUES (1)").await,
        "INSERT",
    );

    proxy.handle.shutdown();

    // The client stays in its transaction and sends nothing more.
    let msgs = raw.until_closed().await;
    assert_eq!(msgs.len(), 1, "one FATAL, then the close: {msgs:?}");
    assert_admin_shutdown(&msgs[0]);
    assert!(
        msgs[0].message().unwrap().contains("shutdown_timeout"),
        "{:?}",
        msgs[0].message()
    );

    // Once the server process is gone its transaction was rolled back.
    wait_backend_gone(&servers[0], "lingering").await;
    assert_eq!(count_rows(&servers[0], "lingering").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_are_refused_and_the_proxy_ends_after_its_sessions() {
    let servers = start_servers(1).await;
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.shutdown_timeout = LONG;
    let mut proxy = TestProxy::start(config).await;

    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    assert_ok(&raw.query("BEGIN").await, "BEGIN");

    proxy.handle.shutdown();

    // The listener closes as the accept loop notices; poll for it (a
    // connection that raced the close is accepted and dropped, or reset).
    crate::harness::wait_for("pgbaton to refuse connections after shutdown", || async {
        matches!(
            tokio::net::TcpStream::connect(proxy.addr).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    })
    .await;
    let e = must_fail(
        proxy
            .try_connect(&proxy.conn_str("postgres", "postgres"))
            .await,
        "a driver cannot connect after shutdown began",
    );
    assert!(e.code().is_none(), "refused before any protocol: {e:?}");

    // A session in its transaction keeps the proxy running.
    assert!(!proxy.task.is_finished());
    assert_ok(&raw.query("SELECT 1").await, "SELECT in the transaction");
    assert!(!proxy.task.is_finished());

    let msgs = raw.query("COMMIT").await;
    assert_ok(&msgs, "COMMIT");
    assert_eq!(status(&msgs), b'I');
    let rest = raw.until_closed().await;
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_admin_shutdown(&rest[0]);

    tokio::time::timeout(LIMIT, &mut proxy.task)
        .await
        .expect("the proxy task ends once its sessions did")
        .expect("the proxy task did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_requested_before_the_proxy_runs_still_stops_it() {
    // What a Ctrl-C right after start does: the request comes before the
    // proxy's task was first polled. It used to be missed, and the demo
    // then never stopped.
    let servers = start_servers(1).await;
    let proxy = pgbaton::proxy::Proxy::bind(
        TestProxy::config(&[&servers[0]], ""),
        pgbaton::admin::console,
        pgbaton::net::busy_poll::BusyPoll::off(),
    )
    .await
    .unwrap();
    proxy.handle().shutdown();
    tokio::time::timeout(LIMIT, proxy.run())
        .await
        .expect("the proxy stops");
}

/// A busy client, never a second quiet (the idle grace of a shutdown never
/// runs out for it), is still closed between its requests, with 57P01,
/// long before `shutdown_timeout`: not cut at the deadline.
#[tokio::test]
async fn a_busy_session_is_closed_between_requests_not_at_the_deadline() {
    let servers = start_servers(1).await;
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.shutdown_timeout = LONG;
    let proxy = TestProxy::start(config).await;
    let (client, conn) = tokio_postgres::connect(
        &proxy.conn_str("postgres", "postgres"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    client.simple_query("SELECT 1").await.unwrap();
    proxy.handle.shutdown();
    tokio::time::timeout(LIMIT, async {
        // Pacing of a busy client, not a wait for an event.
        while client.simple_query("SELECT 1").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the busy session is closed before shutdown_timeout");
    let err = conn
        .await
        .unwrap()
        .expect_err("the connection ends with the FATAL");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(db.code().code(), "57P01", "{db:?}");
    assert!(
        !db.message().contains("shutdown_timeout"),
        "{}",
        db.message()
    );
}
