//! A failed move leaves everything as it was (DESIGN "How a session moves":
//! "Any failure before the swap closes the target connection and leaves the
//! session on the source, untouched. Nothing a client sent is ever lost or
//! reordered"). After each failure the session works on its SOURCE with its
//! state intact, and a counter table shows that every statement the client
//! sent ran exactly once.

use crate::harness::faulty::FaultyRelay;
use crate::harness::{
    err_text, foreign_config, on_all, one, request, tag_count, wait_for, where_is,
};
use crate::harness::{must_fail, sqlstate, start_servers, start_servers_with, Raw, TestProxy};
use pgbaton::localpg::{HostAuth, LocalPgOptions};
use pgbaton::migration::MoveError;
use std::time::Duration;
use tokio_postgres::Client;

const POLL_LIMIT: Duration = Duration::from_secs(30);

/// Session state every test sets, and checks after each failure.
const STATE: &str = "SET myapp.tenant = 'acme';
     SET search_path = public;
     SET TimeZone = 'Asia/Tokyo';
     PREPARE bump(int) AS INSERT INTO hits VALUES ($1);
     LISTEN failures_channel;";

/// The session is still on `port` with backend pid `pid`, its state intact,
/// and it can still write.
async fn intact(client: &Client, port: u16, pid: i32, next: i32) {
    assert_eq!(
        where_is(client).await,
        (pid, port),
        "the session stays on its source server connection"
    );
    assert_eq!(
        one(client, "SELECT current_setting('myapp.tenant')").await,
        "acme"
    );
    assert_eq!(one(client, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(
        one(
            client,
            "SELECT string_agg(c, ',') FROM pg_listening_channels() c"
        )
        .await,
        "failures_channel"
    );
    client
        .batch_execute(&format!("EXECUTE bump({next})"))
        .await
        .unwrap();
}

/// The counter table on a server, as `1,2,3`.
fn hits(server: &crate::harness::TestServer) -> String {
    server.psql(
        "postgres",
        "SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM hits",
    )
}

/// Polls a server until no backend with `application_name` `app` is left:
/// the target connection of a failed move was closed.
async fn no_backend_named(direct: &Client, app: &str) {
    let probe = format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}'");
    wait_for(&format!("no backend named {app} on the target"), || {
        let probe = &probe;
        async move { one(direct, probe).await == "0" }
    })
    .await;
}

/// Polls a server until a move's pre-staged connection for the session
/// named `app` is idle there after its replay and state check.
pub(crate) async fn prestaged_on(direct: &Client, app: &str) {
    let probe = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
         AND state = 'idle' AND query LIKE '%json_build_object%'"
    );
    wait_for(&format!("the pre-staged connection of {app}"), || {
        let probe = &probe;
        async move { one(direct, probe).await == "1" }
    })
    .await;
}

/// Two servers with a `hits` table; backend `pg{which+1}` reached through a
/// fault-injecting relay.
async fn behind_relay(
    s1: &crate::harness::TestServer,
    s2: &crate::harness::TestServer,
    which: usize,
) -> (FaultyRelay, TestProxy) {
    on_all(&[s1, s2], "CREATE TABLE hits (n int)");
    let relay = FaultyRelay::start(&[s1, s2][which].addr()).await;
    let mut config = foreign_config(&[s1, s2], "");
    config.backends[which].port = relay.addr.port();
    config.backends[which].host = relay.addr.ip().to_string();
    (relay, TestProxy::start(config).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_down() {
    let servers = start_servers(1).await;
    let s1 = &servers[0];
    s1.psql("postgres", "CREATE TABLE hits (n int)");
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = foreign_config(&[s1, s1], "");
    config.backends[1].host = "127.0.0.1".into();
    config.backends[1].port = dead;
    let proxy = TestProxy::start(config).await;
    let client = proxy.connect_app("postgres", "postgres", "down").await;
    client.batch_execute(STATE).await.unwrap();
    client.batch_execute("EXECUTE bump(1)").await.unwrap();
    let (pid, port) = where_is(&client).await;

    let e = must_fail(
        client.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "target down",
    );
    assert_eq!(sqlstate(&e), "08006", "{}", err_text(&e));
    assert!(err_text(&e).contains("pg2"), "{}", err_text(&e));
    intact(&client, port, pid, 2).await;

    // With a statement after the comment: the move fails, the statement is
    // not run (the client got an error for it), nothing half-done.
    let e = must_fail(
        client
            .simple_query("/* pgbaton: migrate to=pg2 */ EXECUTE bump(99)")
            .await,
        "target down",
    );
    assert_eq!(sqlstate(&e), "08006");
    intact(&client, port, pid, 3).await;
    assert_eq!(hits(s1), "1,2,3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_refuses_the_password() {
    let mut servers = start_servers(1).await;
    servers.extend(
        start_servers_with(
            1,
            LocalPgOptions {
                host_auth: HostAuth::ScramSha256,
                ..Default::default()
            },
        )
        .await,
    );
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE TABLE hits (n int); GRANT ALL ON hits TO PUBLIC",
    );
    s1.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'app-password'");
    // On pg2 the role has another password than the one pgbaton knows.
    s2.psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'not-the-same'");
    let config = foreign_config(
        &[s1, s2],
        "[[users]]\nname = \"app\"\npassword = \"app-password\"\n",
    );
    let proxy = TestProxy::start(config).await;
    let client = proxy.connect_app("app", "postgres", "pw").await;
    client.batch_execute(STATE).await.unwrap();
    client.batch_execute("EXECUTE bump(1)").await.unwrap();
    let (pid, port) = where_is(&client).await;
    let e = must_fail(
        client.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "wrong password on the target",
    );
    assert_eq!(sqlstate(&e), "28P01", "{}", err_text(&e));
    intact(&client, port, pid, 2).await;
    assert_eq!(hits(s1), "1,2");
    assert_eq!(hits(s2), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_lacks_the_role_or_the_database() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE TABLE hits (n int); GRANT ALL ON hits TO PUBLIC",
    );
    // Only on pg1: the role `app` and the database `appdb`.
    s1.psql("postgres", "CREATE ROLE app LOGIN; CREATE DATABASE appdb");
    s1.psql("appdb", "CREATE TABLE hits (n int)");
    let proxy = TestProxy::start(foreign_config(&[s1, s2], "")).await;

    let no_role = proxy.connect_app("app", "postgres", "norole").await;
    no_role.batch_execute(STATE).await.unwrap();
    let (pid, port) = where_is(&no_role).await;
    let e = must_fail(
        no_role.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "no such role on the target",
    );
    assert_eq!(sqlstate(&e), "28000", "{}", err_text(&e));
    intact(&no_role, port, pid, 1).await;

    let no_db = proxy.connect_app("postgres", "appdb", "nodb").await;
    no_db.batch_execute(STATE).await.unwrap();
    let (pid, port) = where_is(&no_db).await;
    let e = must_fail(
        no_db.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "no such database on the target",
    );
    assert_eq!(sqlstate(&e), "3D000", "{}", err_text(&e));
    intact(&no_db, port, pid, 2).await;

    assert_eq!(hits(s1), "1");
    assert_eq!(
        s1.psql("appdb", "SELECT string_agg(n::text, ',') FROM hits"),
        "2"
    );
    assert_eq!(hits(s2), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_dies_during_replay() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let (relay, proxy) = behind_relay(s1, s2, 1).await;
    let client = proxy.connect_app("postgres", "postgres", "replay").await;
    client.batch_execute(STATE).await.unwrap();
    client.batch_execute("EXECUTE bump(1)").await.unwrap();
    let (pid, port) = where_is(&client).await;
    // Through the relay, a move works (this also learns pg2's identity, so
    // the next move's first connection to pg2 is the pre-staging one).
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 dry_run */;").await,
        0
    );
    let direct2 = s2.connect_direct("postgres").await;

    // The target goes away a few bytes into the replay.
    relay.cut_after_startup_plus(10);
    let cuts = relay.cuts();
    let e = must_fail(
        client.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "target cut during replay",
    );
    assert!(relay.cuts() > cuts, "the relay cut a connection");
    assert!(
        ["08006", "55000"].contains(&sqlstate(&e).as_str()),
        "{}: {}",
        sqlstate(&e),
        err_text(&e)
    );
    assert!(err_text(&e).contains("pg2"), "{}", err_text(&e));
    intact(&client, port, pid, 2).await;
    no_backend_named(&direct2, "replay").await;

    // Healed, the same move goes through and the session goes on on pg2.
    relay.heal();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s2.port());
    client.batch_execute("EXECUTE bump(3)").await.unwrap();
    assert_eq!(hits(s1), "1,2");
    assert_eq!(hits(s2), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_dies_while_the_move_waits_for_a_safe_point() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let (relay, proxy) = behind_relay(s1, s2, 1).await;
    let client = proxy.connect_app("postgres", "postgres", "waiting").await;
    client.batch_execute(STATE).await.unwrap();
    let (pid, port) = where_is(&client).await;
    let direct2 = s2.connect_direct("postgres").await;

    // An open transaction: no safe point until it ends.
    client
        .batch_execute("BEGIN; EXECUTE bump(1)")
        .await
        .unwrap();
    let entry = crate::harness::entry(&proxy, "waiting").await;
    let mover = tokio::spawn(async move { entry.migrate(request("pg2")).await });
    prestaged_on(&direct2, "waiting").await;
    // The target connection breaks while the move waits.
    relay.cut_all();
    no_backend_named(&direct2, "waiting").await;
    // The transaction ends: a safe point. The move must notice its target is
    // gone and leave the session where it is.
    client
        .batch_execute("EXECUTE bump(2); COMMIT")
        .await
        .unwrap();
    let r = tokio::time::timeout(POLL_LIMIT, mover)
        .await
        .expect("the move ends")
        .unwrap();
    let after = client.simple_query("SELECT 1").await;
    assert!(
        r.is_err() && after.is_ok(),
        "a move onto a dead target connection must fail and leave the session on pg1; \
         the move answered {r:?} and the session's next query {:?}",
        after.as_ref().map(|_| ()).map_err(err_text)
    );
    intact(&client, port, pid, 3).await;
    assert_eq!(hits(s1), "1,2,3");
    assert_eq!(hits(s2), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_statement_fails_on_the_target() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE TABLE hits (n int); GRANT ALL ON hits TO PUBLIC",
    );
    // Only on pg1: a role to SET ROLE to, and a table a statement uses.
    s1.psql(
        "postgres",
        "CREATE ROLE only_here NOLOGIN; CREATE TABLE only_here_t (x int)",
    );
    let proxy = TestProxy::start(foreign_config(&[s1, s2], "")).await;
    let direct2 = s2.connect_direct("postgres").await;

    let by_role = proxy.connect_app("postgres", "postgres", "byrole").await;
    by_role.batch_execute(STATE).await.unwrap();
    by_role.batch_execute("SET ROLE only_here").await.unwrap();
    let (pid, port) = where_is(&by_role).await;
    let e = must_fail(
        by_role.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "SET ROLE fails on the target",
    );
    assert_eq!(sqlstate(&e), "55000", "{}", err_text(&e));
    assert!(err_text(&e).contains("only_here"), "{}", err_text(&e));
    assert_eq!(one(&by_role, "SELECT current_user").await, "only_here");
    intact(&by_role, port, pid, 1).await;
    no_backend_named(&direct2, "byrole").await;

    let by_stmt = proxy.connect_app("postgres", "postgres", "bystmt").await;
    by_stmt.batch_execute(STATE).await.unwrap();
    by_stmt
        .batch_execute("PREPARE peek AS SELECT count(*) FROM only_here_t")
        .await
        .unwrap();
    let (pid, port) = where_is(&by_stmt).await;
    let e = must_fail(
        by_stmt.simple_query("/* pgbaton: migrate to=pg2 */;").await,
        "a prepared statement fails on the target",
    );
    assert_eq!(sqlstate(&e), "55000", "{}", err_text(&e));
    assert!(err_text(&e).contains("only_here_t"), "{}", err_text(&e));
    assert_eq!(one(&by_stmt, "EXECUTE peek").await, "0");
    intact(&by_stmt, port, pid, 2).await;
    no_backend_named(&direct2, "bystmt").await;

    assert_eq!(hits(s1), "1,2");
    assert_eq!(hits(s2), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_fails_at_the_safe_point() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    // pg1 behind a relay that can break the session's own server connection.
    let (relay, proxy) = behind_relay(s1, s2, 0).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[
            ("user", "postgres"),
            ("database", "postgres"),
            ("application_name", "atsafe"),
        ],
    )
    .await;
    let err = |msgs: &[crate::harness::Msg]| {
        msgs.iter().find(|m| m.tag == b'E').map(|m| {
            (
                m.code().unwrap_or_default(),
                m.message().unwrap_or_default(),
            )
        })
    };
    assert_eq!(err(&raw.query("INSERT INTO hits VALUES (1)").await), None);
    // A dry run learns both identities over control connections first.
    let msgs = raw.query("/* pgbaton: migrate to=pg2 dry_run */;").await;
    assert_eq!(err(&msgs), None, "{msgs:?}");

    // The next thing pgbaton sends to pg1 is the state check at the safe
    // point: the source connection breaks right then.
    relay.cut_on_next_client_bytes();
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("/* pgbaton: migrate to=pg2 */;", &mut out)
        .unwrap();
    raw.send(&out).await;
    // The client hears why, and the connection ends: no hang (Raw bounds
    // every wait).
    let msgs = raw.until_closed().await;
    let codes: Vec<String> = msgs
        .iter()
        .filter(|m| m.tag == b'E')
        .filter_map(|m| m.code())
        .collect();
    assert!(
        codes.iter().any(|c| c == "08006" || c == "57P01"),
        "expected a connection failure, got {msgs:?}"
    );
    assert_eq!(relay.cuts(), 1);
    // Nothing ran twice, nothing ran on pg2.
    assert_eq!(hits(s1), "1");
    assert_eq!(hits(s2), "");
    // pgbaton goes on: new sessions work.
    relay.heal();
    let c = proxy.connect("postgres", "postgres").await;
    assert_eq!(one(&c, "SELECT count(*) FROM hits").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_dies_while_the_move_waits() {
    let mut servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(&[s1, s2], "CREATE TABLE hits (n int)");
    let proxy = TestProxy::start(foreign_config(&[s1, s2], "")).await;
    let direct1 = s1.connect_direct("postgres").await;
    let direct2 = s2.connect_direct("postgres").await;

    // 1. The session's backend is terminated while its move waits for the
    //    end of a transaction.
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[
            ("user", "postgres"),
            ("database", "postgres"),
            ("application_name", "killed"),
        ],
    )
    .await;
    raw.query("BEGIN; INSERT INTO hits VALUES (1)").await;
    let entry = crate::harness::entry(&proxy, "killed").await;
    let pid = entry.live().backend_pid;
    let mover = tokio::spawn(async move { entry.migrate(request("pg2")).await });
    prestaged_on(&direct2, "killed").await;
    assert_eq!(
        one(
            &direct1,
            &format!("SELECT pg_terminate_backend({pid})::text")
        )
        .await,
        "true"
    );
    let msgs = raw.until_closed().await;
    let codes: Vec<String> = msgs.iter().filter_map(|m| m.code()).collect();
    assert!(
        codes.iter().any(|c| c == "57P01"),
        "the client hears its server was terminated: {msgs:?}"
    );
    let r = tokio::time::timeout(POLL_LIMIT, mover)
        .await
        .expect("the move ends")
        .unwrap();
    assert!(
        matches!(r, Err(MoveError::Ended) | Err(MoveError::SourceLost(_))),
        "{r:?}"
    );
    no_backend_named(&direct2, "killed").await;
    // The open transaction was never committed anywhere.
    assert_eq!(hits(s1), "");
    assert_eq!(hits(s2), "");

    // 2. The whole source server stops while a move waits.
    let client = proxy.connect_app("postgres", "postgres", "stopped").await;
    client
        .batch_execute("INSERT INTO hits VALUES (2); BEGIN; INSERT INTO hits VALUES (3)")
        .await
        .unwrap();
    let entry = crate::harness::entry(&proxy, "stopped").await;
    let mover = tokio::spawn(async move { entry.migrate(request("pg2")).await });
    prestaged_on(&direct2, "stopped").await;
    drop(direct1);
    let mut s1 = servers.remove(0);
    let s1 = tokio::task::spawn_blocking(move || {
        s1.local_mut().stop().expect("stop pg1");
        s1
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(POLL_LIMIT, mover)
        .await
        .expect("the move ends")
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    let e = must_fail(
        tokio::time::timeout(POLL_LIMIT, client.simple_query("COMMIT"))
            .await
            .expect("an answer, not a hang"),
        "the source is gone",
    );
    // tokio-postgres reports a closed connection without a SQLSTATE, or the
    // FATAL pgbaton sent.
    if let Some(code) = e.code() {
        assert!(["08006", "57P01"].contains(&code.code()), "{e:?}");
    } else {
        assert!(e.is_closed(), "{e:?}");
    }
    let s2 = &servers[0];
    no_backend_named(&direct2, "stopped").await;
    assert_eq!(hits(s2), "");
    drop(s1);
}
