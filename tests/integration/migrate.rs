//! Moving live sessions (DESIGN "Migrating by SQL comment", "How a session
//! moves"): the whole session state arrives on the new server, refusals leave
//! the session where it was, blockers pin, cancel keys follow the session,
//! and a pgbench load survives hundreds of moves without losing or repeating
//! a transaction.
//!
//! Two independent local servers are different clusters, so the backends are
//! marked `foreign = true` (DESIGN "Identity"); the real same-cluster
//! switchover is in `switchover.rs`.

use crate::harness::helpers::*;
use crate::harness::raw::{build, Msg};
use crate::harness::{must_fail, sqlstate, start_servers, Raw};
use pgbaton::migration::MoveError;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// The message text of a notice or error message from the raw client.
fn msg_text(m: &Msg) -> String {
    m.message().unwrap_or_default()
}

/// Sends `sql`, which pgbaton must refuse with `code` and a message that
/// mentions `word`.
async fn refused_with(client: &Client, sql: &str, code: &str, word: &str) {
    let e = must_fail(client.simple_query(sql).await, sql);
    assert_eq!(sqlstate(&e), code, "{sql}: {}", err_text(&e));
    assert!(err_text(&e).contains(word), "{sql}: {}", err_text(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_session_state_arrives_on_the_new_server() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE ROLE app_reader NOLOGIN;
         CREATE SCHEMA app;
         CREATE TABLE app.items (id int PRIMARY KEY, name text);
         GRANT USAGE ON SCHEMA app TO app_reader;
         GRANT SELECT ON app.items TO app_reader;",
    );
    // The same schema, different rows: answers say which server ran them.
    s1.psql("postgres", "INSERT INTO app.items VALUES (1, 'row on pg1')");
    s2.psql("postgres", "INSERT INTO app.items VALUES (1, 'row on pg2')");
    // The second server reports a different IntervalStyle for this database:
    // after the move the client must be told (ParameterStatus).
    s2.psql(
        "postgres",
        "ALTER DATABASE postgres SET IntervalStyle = 'postgres_verbose'",
    );
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let (client, mut messages) = connect_watched(&proxy, "postgres", "postgres", "full").await;

    client
        .batch_execute(
            "SET search_path = app, public;
             SET TimeZone = 'Asia/Tokyo';
             SET myapp.tenant = 'acme';
             PREPARE get_item(int) AS SELECT name FROM items WHERE id = $1;
             LISTEN moves_channel;",
        )
        .await
        .unwrap();
    // A protocol-level named statement (tokio-postgres names it itself).
    let stmt = client
        .prepare("SELECT name FROM items WHERE id = $1")
        .await
        .unwrap();
    client.batch_execute("SET ROLE app_reader").await.unwrap();
    assert_eq!(one(&client, "EXECUTE get_item(1)").await, "row on pg1");
    let (pid1, port1) = where_is(&client).await;
    assert_eq!(port1, s1.port());

    let n = tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await;
    assert_eq!(n, 1, "command tag MIGRATE 1");
    let notice = next_notice(&mut messages).await;
    let (pid2, port2) = where_is(&client).await;
    assert_eq!(port2, s2.port(), "the session now runs on pg2");
    assert_ne!(pid2, pid1);
    assert!(
        notice.starts_with("pgbaton: session ")
            && notice.contains(&format!(
                "moved from pg1 (pid {pid1}) to pg2 (pid {pid2}), paused "
            )),
        "notice: {notice}"
    );

    assert_eq!(one(&client, "SHOW search_path").await, "app, public");
    assert_eq!(one(&client, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(
        one(&client, "SELECT current_setting('myapp.tenant')").await,
        "acme"
    );
    assert_eq!(one(&client, "EXECUTE get_item(1)").await, "row on pg2");
    let row = client.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "row on pg2");
    assert_eq!(
        rows(&client, "SELECT * FROM pg_listening_channels()").await,
        vec![vec![Some("moves_channel".to_string())]]
    );
    assert_eq!(
        rows(&client, "SELECT current_user, session_user").await,
        vec![vec![Some("app_reader".into()), Some("postgres".into())]]
    );
    assert_eq!(one(&client, "SHOW IntervalStyle").await, "postgres_verbose");
    // The role is in effect for real, not just reported: app_reader has no
    // CREATE on schema app.
    let e = must_fail(
        client.batch_execute("CREATE TABLE app.nope (x int)").await,
        "app_reader may not create tables",
    );
    assert_eq!(sqlstate(&e), "42501");

    // A notification sent on the NEW server, by someone else, reaches the client.
    drain(&mut messages);
    let direct = s2.connect_direct("postgres").await;
    direct
        .batch_execute("NOTIFY moves_channel, 'sent on pg2'")
        .await
        .unwrap();
    let note = loop {
        match tokio::time::timeout(POLL_LIMIT, messages.recv()).await {
            Ok(Some(AsyncMessage::Notification(n))) => break n,
            Ok(Some(_)) => continue,
            other => panic!("no notification from pg2: {other:?}"),
        }
    };
    assert_eq!(
        (note.channel(), note.payload()),
        ("moves_channel", "sent on pg2")
    );

    let live = entry(&proxy, "full").await.live();
    assert_eq!(
        (live.backend.as_str(), live.backend_pid, live.migrations),
        ("pg2", pid2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sees_parameter_status_it_should_after_a_move() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    // pg2 reports a different IntervalStyle for this database.
    s2.psql(
        "postgres",
        "ALTER DATABASE postgres SET IntervalStyle = 'postgres_verbose'",
    );
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let (mut raw, startup) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("database", "postgres")],
    )
    .await;
    let reported = |msgs: &[Msg]| -> BTreeMap<String, String> {
        msgs.iter().filter_map(Msg::parameter).collect()
    };
    let mut seen = reported(&startup);
    assert_eq!(
        seen.get("IntervalStyle").map(String::as_str),
        Some("postgres")
    );
    let msgs = raw.query("SET TimeZone = 'Asia/Tokyo'").await;
    seen.extend(reported(&msgs));
    assert_eq!(seen.get("TimeZone").map(String::as_str), Some("Asia/Tokyo"));

    let msgs = raw.query("/* pgbaton: migrate to=pg2 */;").await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert!(
        !tags.contains(&b'E'),
        "move failed: {:?}",
        msgs.iter().map(msg_text).collect::<Vec<_>>()
    );
    let notice = msgs.iter().find(|m| m.tag == b'N').expect("a NOTICE");
    assert!(msg_text(notice).contains("moved from pg1"), "{notice:?}");
    let complete = msgs
        .iter()
        .find(|m| m.tag == b'C')
        .expect("CommandComplete");
    assert_eq!(&complete.body[..], b"MIGRATE 1\0");
    let changed = reported(&msgs);
    // TimeZone is the same on the new server: not re-sent, or re-sent with
    // the same value, never with the server default.
    if let Some(tz) = changed.get("TimeZone") {
        assert_eq!(tz, "Asia/Tokyo");
    }
    assert_eq!(
        changed.get("IntervalStyle").map(String::as_str),
        Some("postgres_verbose"),
        "a value that differs on the new server is reported: {changed:?}"
    );
    seen.extend(changed);
    let msgs = raw.query("SHOW TimeZone").await;
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap();
    assert!(row.body.ends_with(b"Asia/Tokyo"));
    assert_eq!(seen.get("TimeZone").map(String::as_str), Some("Asia/Tokyo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_forms_and_refusals_leave_the_session_intact() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE ROLE plain LOGIN;
         CREATE TABLE hits (n int);
         GRANT INSERT, SELECT ON hits TO plain;",
    );
    let proxy = foreign_proxy(&[s1, s2], ADMIN).await;
    let (client, mut messages) = connect_watched(&proxy, "plain", "postgres", "forms").await;
    client
        .batch_execute(
            "SET myapp.tenant = 'acme'; SET search_path = public; PREPARE twice(int) AS SELECT $1 * 2",
        )
        .await
        .unwrap();

    // Move, then run the statement on the new server.
    let r = rows(
        &client,
        "/* pgbaton: migrate to=pg2 */ INSERT INTO hits VALUES (1) RETURNING inet_server_port()",
    )
    .await;
    assert_eq!(r, vec![vec![Some(s2.port().to_string())]]);
    assert!(next_notice(&mut messages).await.contains("moved from pg1"));
    let (pid, port) = where_is(&client).await;
    assert_eq!(port, s2.port());
    intact(&client, port, pid).await;

    // Dry run: said, not done.
    let n = tag_count(&client, "/* pgbaton: migrate to=pg1 dry_run */;").await;
    assert_eq!(n, 0, "MIGRATE 0");
    let notice = next_notice(&mut messages).await;
    assert!(
        notice.contains("can move from pg2") && notice.contains("dry run"),
        "{notice}"
    );
    intact(&client, port, pid).await;

    // Unknown backend.
    refused_with(&client, "/* pgbaton: migrate to=pg9 */;", "42704", "pg9").await;
    intact(&client, port, pid).await;

    // A word the command does not know.
    refused_with(
        &client,
        "/* pgbaton: migrate to=pg1 quickly */;",
        "42601",
        "quickly",
    )
    .await;
    // ... with a statement after it: the statement is not run either.
    refused_with(
        &client,
        "/* pgbaton: migrate to=pg1 speed=fast */ INSERT INTO hits VALUES (2)",
        "42601",
        "speed=fast",
    )
    .await;
    intact(&client, port, pid).await;

    // from= is for admin users only.
    let e = must_fail(
        client
            .simple_query("/* pgbaton: migrate from=pg2 to=pg1 */;")
            .await,
        "from= by a non-admin",
    );
    assert_eq!(sqlstate(&e), "42501");
    intact(&client, port, pid).await;

    // Inside a transaction: refused, and the transaction goes on untouched.
    client
        .batch_execute("BEGIN; INSERT INTO hits VALUES (3)")
        .await
        .unwrap();
    refused_with(
        &client,
        "/* pgbaton: migrate to=pg1 */;",
        "55000",
        "transaction",
    )
    .await;
    client
        .batch_execute("INSERT INTO hits VALUES (4); COMMIT")
        .await
        .unwrap();
    intact(&client, port, pid).await;

    // Nothing was lost or run twice: 1, 3 and 4 on pg2, nothing on pg1.
    assert_eq!(
        one(
            &client,
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM hits"
        )
        .await,
        "1,3,4"
    );
    assert_eq!(s1.psql("postgres", "SELECT count(*) FROM hits"), "0");

    // And a plain move back still works afterwards.
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg1 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s1.port());
    assert_eq!(one(&client, "EXECUTE twice(4)").await, "8");
    // Already there: nothing to do, said so.
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg1 */;").await,
        0
    );
}

/// The session is on the same server connection, with its state.
async fn intact(client: &Client, port: u16, pid: i32) {
    assert_eq!(
        where_is(client).await,
        (pid, port),
        "still on the same server"
    );
    assert_eq!(
        one(client, "SELECT current_setting('myapp.tenant')").await,
        "acme"
    );
    assert_eq!(one(client, "EXECUTE twice(21)").await, "42");
}

/// Moves by comment and returns the refusal's message, asserting 55000.
async fn refused(client: &Client, to: &str) -> String {
    let e = must_fail(
        client
            .simple_query(&format!("/* pgbaton: migrate to={to} */;"))
            .await,
        "a pinned session refuses to move",
    );
    assert_eq!(sqlstate(&e), "55000", "{e}");
    e.as_db_error().unwrap().message().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_blocker_pins_until_removed() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let client = proxy.connect("postgres", "postgres").await;
    client
        .batch_execute("SET myapp.tenant = 'acme'")
        .await
        .unwrap();

    // A temp table, on pg1.
    client
        .batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let why = refused(&client, "pg2").await;
    assert!(why.contains("temp"), "{why}");
    assert_eq!(where_is(&client).await.1, s1.port());
    assert_eq!(one(&client, "SELECT count(*) FROM scratch").await, "1");
    client.batch_execute("DISCARD TEMP").await.unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s2.port());

    // A session advisory lock, on pg2.
    client
        .batch_execute("SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    let why = refused(&client, "pg1").await;
    assert!(why.contains("advisory lock"), "{why}");
    assert_eq!(where_is(&client).await.1, s2.port());
    // The lock is still held by this session on pg2.
    let direct2 = s2.connect_direct("postgres").await;
    assert_eq!(
        one(&direct2, "SELECT pg_try_advisory_lock(42)::text").await,
        "false"
    );
    client
        .batch_execute("SELECT pg_advisory_unlock_all()")
        .await
        .unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg1 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s1.port());

    // A WITH HOLD cursor, on pg1.
    client
        .batch_execute(
            "BEGIN; DECLARE held CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g; COMMIT",
        )
        .await
        .unwrap();
    let why = refused(&client, "pg2").await;
    assert!(why.contains("WITH HOLD"), "{why}");
    assert_eq!(one(&client, "FETCH NEXT FROM held").await, "1");
    client.batch_execute("CLOSE held").await.unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s2.port());
    assert_eq!(
        one(&client, "SELECT current_setting('myapp.tenant')").await,
        "acme"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_cluster_refuses_statements_with_local_types() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(&[s1, s2], "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')");
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let client = proxy.connect("postgres", "postgres").await;
    client
        .batch_execute("PREPARE feel(mood) AS SELECT $1::text")
        .await
        .unwrap();
    let why = refused(&client, "pg2").await;
    assert!(why.contains("foreign"), "{why}");
    assert_eq!(where_is(&client).await.1, s1.port());
    assert_eq!(one(&client, "EXECUTE feel('happy')").await, "happy");
    client.batch_execute("DEALLOCATE feel").await.unwrap();
    // Built-in types only: the move goes through.
    client
        .batch_execute("PREPARE plain_one(int) AS SELECT $1 + 1")
        .await
        .unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(one(&client, "EXECUTE plain_one(1)").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_server_after_two_moves() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let client = proxy.connect("postgres", "postgres").await;
    let (pid0, _) = where_is(&client).await;
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg1 */;").await,
        1
    );
    let (pid, port) = where_is(&client).await;
    assert_eq!(port, s1.port());
    assert_ne!(pid, pid0, "a new server connection on pg1");

    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("SELECT pg_sleep(60)").await;
        (client, r)
    });
    let direct = s1.connect_direct("postgres").await;
    let probe = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' AND query LIKE '%pg_sleep(60)%'"
    );
    wait_for("the sleep to run on pg1", || {
        let (direct, probe) = (&direct, &probe);
        async move { one(direct, probe).await == "1" }
    })
    .await;
    token.cancel_query(NoTls).await.unwrap();
    let (client, r) = tokio::time::timeout(POLL_LIMIT, sleeper)
        .await
        .expect("the cancel ends the sleep")
        .unwrap();
    let e = must_fail(r, "cancelled sleep");
    assert_eq!(sqlstate(&e), "57014");
    assert_eq!(where_is(&client).await, (pid, port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_migrations_and_sessions_report_moves() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], ADMIN).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let client = proxy.connect("postgres", "postgres").await;
    let id = proxy.shared.env.sessions.list()[0].id.to_string();

    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    // From the console: a dry run, a refused move, a real one.
    let r = admin(&console, &format!("MIGRATE SESSION {id} TO pg1 DRY RUN"))
        .await
        .unwrap();
    assert_eq!(col(&r[0], "status"), Some("dry run"));
    client
        .batch_execute("CREATE TEMP TABLE pin (x int)")
        .await
        .unwrap();
    let e = must_fail(
        admin(&console, &format!("MIGRATE SESSION {id} TO pg1")).await,
        "pinned by a temp table",
    );
    assert_eq!(sqlstate(&e), "55000");
    client.batch_execute("DROP TABLE pin").await.unwrap();
    let r = admin(&console, &format!("MIGRATE SESSION {id} TO pg1"))
        .await
        .unwrap();
    assert_eq!(
        (col(&r[0], "from"), col(&r[0], "to"), col(&r[0], "status")),
        (Some("pg2"), Some("pg1"), Some("done"))
    );
    assert_eq!(where_is(&client).await.1, s1.port());
    let e = must_fail(
        admin(&console, "MIGRATE SESSION 999999 TO pg1").await,
        "unknown session",
    );
    assert_eq!(sqlstate(&e), "42704");

    let moves = admin(&console, "SHOW MIGRATIONS").await.unwrap();
    let mine: Vec<_> = moves
        .iter()
        .filter(|r| col(r, "session") == Some(id.as_str()))
        .collect();
    let summary: Vec<(Option<&str>, Option<&str>, Option<&str>)> = mine
        .iter()
        .map(|r| (col(r, "from"), col(r, "to"), col(r, "status")))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("pg1"), Some("pg2"), Some("done")),
            (Some("pg2"), Some("pg1"), Some("dry run")),
            (Some("pg2"), Some("pg1"), Some("aborted")),
            (Some("pg2"), Some("pg1"), Some("done")),
        ],
        "{moves:?}"
    );
    assert!(col(mine[1], "reason").unwrap_or("").contains("dry run"));
    assert_eq!(col(mine[1], "pause_us"), None, "a dry run pauses nothing");
    assert!(col(mine[2], "reason").unwrap().contains("temp"));
    // The first move needed the light check only; the last came after a
    // temp table, whose schema the light check cannot see into.
    assert_eq!(col(mine[0], "check"), Some("light"));
    assert_eq!(col(mine[3], "check"), Some("full"));
    let direct = s1.connect_direct("postgres").await;
    for r in [mine[0], mine[3]] {
        let pause: u64 = col(r, "pause_us").unwrap().parse().unwrap();
        let total: u64 = col(r, "total_us").unwrap().parse().unwrap();
        assert!(pause > 0 && total >= pause, "{r:?}");
        assert_eq!(col(r, "reason"), None, "{r:?}");
        // A timestamp with time zone, as Postgres itself reads it.
        let started = col(r, "started_at").unwrap();
        let recent = one(
            &direct,
            &format!("SELECT (now() - '{started}'::timestamptz < interval '10 minutes')::text"),
        )
        .await;
        assert_eq!(recent, "true", "{r:?}");
    }
    let ids: Vec<u64> = mine
        .iter()
        .map(|r| col(r, "id").unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend: {ids:?}");

    let sessions = admin(&console, "SHOW SESSIONS").await.unwrap();
    let me = sessions
        .iter()
        .find(|r| col(r, "id") == Some(id.as_str()))
        .unwrap();
    assert_eq!(col(me, "migrations"), Some("2"), "{me:?}");
    assert_eq!(col(me, "backend"), Some("pg1"));
    let (pid, _) = where_is(&client).await;
    assert_eq!(col(me, "backend_pid"), Some(pid.to_string().as_str()));
}

/// Parses pgbench's summary line `prefix N...`.
fn pgbench_number(out: &str, prefix: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in pgbench output:\n{out}"));
    line.trim_start()[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.split('/').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"))
}

/// pgbench clients, rounds of moves, and how long pgbench runs: long enough
/// for the rounds on a slow 2-core machine (it is an upper bound that makes
/// a broken run fail, not a measurement).
const BENCH_CLIENTS: usize = 16;
const BENCH_ROUNDS: usize = 20;
const BENCH_SECONDS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_survives_moving_every_session_back_and_forth() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE TABLE moves_log (id bigserial PRIMARY KEY, v int NOT NULL)",
    );
    let proxy = foreign_proxy(&[s1, s2], ADMIN).await;
    let dir = std::env::temp_dir().join(format!("pgbaton-moves-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("moves.sql");
    std::fs::write(&script, "INSERT INTO moves_log (v) VALUES (1);\n").unwrap();

    let bench = tokio::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &BENCH_CLIENTS.to_string()])
        .args(["-T", &BENCH_SECONDS.to_string()])
        .arg("-f")
        .arg(&script)
        .args(["-h", "127.0.0.1", "-p", &proxy.port().to_string()])
        .args(["-U", "postgres", "postgres"])
        .env("PGAPPNAME", "bench")
        .kill_on_drop(true)
        .output();
    let bench = tokio::spawn(bench);

    let shared = proxy.shared.clone();
    wait_for("every pgbench client to connect", || {
        let shared = shared.clone();
        async move {
            shared
                .env
                .sessions
                .list()
                .iter()
                .filter(|e| e.application_name() == "bench")
                .count()
                == BENCH_CLIENTS
        }
    })
    .await;

    // The mover: every session to pg2, back to pg1, ... BENCH_ROUNDS times,
    // each round's moves concurrently.
    let mut moved: BTreeMap<u64, u32> = BTreeMap::new();
    let mut timeouts = 0usize;
    for round in 0..BENCH_ROUNDS {
        let to = if round % 2 == 0 { "pg2" } else { "pg1" };
        let sessions: Vec<_> = shared
            .env
            .sessions
            .list()
            .into_iter()
            .filter(|e| e.application_name() == "bench")
            .collect();
        assert_eq!(
            sessions.len(),
            BENCH_CLIENTS,
            "pgbench ended (or lost clients) before round {round} of {BENCH_ROUNDS}"
        );
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|e| {
                let mut req = request(to);
                req.wait = Duration::from_secs(5);
                tokio::spawn(async move { (e.id, e.migrate(req).await) })
            })
            .collect();
        for t in tasks {
            let (id, r) = t.await.unwrap();
            match r {
                Ok(o) => {
                    assert!(!o.dry_run);
                    *moved.entry(id).or_default() += 1;
                }
                Err(MoveError::NoSafePoint { .. }) => timeouts += 1,
                // A session left behind by an earlier timeout.
                Err(MoveError::AlreadyThere(_)) => {}
                Err(e) => panic!("round {round}: session {id} failed to move: {e}"),
            }
        }
    }
    // Every session moved, and the registry counted the same moves.
    for e in shared.env.sessions.list() {
        if e.application_name() == "bench" {
            assert_eq!(
                e.live().migrations,
                moved.get(&e.id).copied().unwrap_or(0),
                "session {}",
                e.id
            );
        }
    }
    assert_eq!(moved.len(), BENCH_CLIENTS, "every session moved: {moved:?}");
    let done: u32 = moved.values().sum();
    assert!(
        done as usize + timeouts >= BENCH_ROUNDS * BENCH_CLIENTS,
        "{done} moves and {timeouts} timeouts"
    );
    assert!(
        done as usize >= BENCH_ROUNDS * BENCH_CLIENTS / 2,
        "most moves went through: {done} done, {timeouts} timeouts"
    );
    // The pgbench sessions were still all there after the last round.
    assert_eq!(
        shared
            .env
            .sessions
            .list()
            .iter()
            .filter(|e| e.application_name() == "bench")
            .count(),
        BENCH_CLIENTS,
        "pgbench ended before the last round"
    );

    let out = tokio::time::timeout(Duration::from_secs(BENCH_SECONDS + 60), bench)
        .await
        .expect("pgbench ends")
        .unwrap()
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pgbench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("pgbench:\n{stdout}\n{done} moves done, {timeouts} timed out");
    let processed = pgbench_number(&stdout, "number of transactions actually processed:");
    if stdout.contains("number of failed transactions:") {
        assert_eq!(
            pgbench_number(&stdout, "number of failed transactions:"),
            0,
            "{stdout}"
        );
    }
    assert!(!stderr.contains("aborted"), "{stderr}");
    let c1: u64 = s1
        .psql("postgres", "SELECT count(*) FROM moves_log")
        .parse()
        .unwrap();
    let c2: u64 = s2
        .psql("postgres", "SELECT count(*) FROM moves_log")
        .parse()
        .unwrap();
    assert!(c1 > 0 && c2 > 0, "rows on both servers: {c1} + {c2}");
    assert_eq!(
        c1 + c2,
        processed,
        "pgbench's count equals the rows the servers hold ({c1} on pg1 + {c2} on pg2)"
    );

    // SHOW MIGRATIONS agrees.
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let moves = admin(&console, "SHOW MIGRATIONS").await.unwrap();
    let done_rows = moves
        .iter()
        .filter(|r| col(r, "status") == Some("done"))
        .count();
    assert_eq!(done_rows, done as usize);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_all_from_the_console() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], ADMIN).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let mut clients = Vec::new();
    for i in 0..4 {
        let c = proxy.connect("postgres", "postgres").await;
        c.batch_execute(&format!("SET myapp.n = '{i}'"))
            .await
            .unwrap();
        clients.push(c);
    }
    let r = admin(&console, "MIGRATE ALL FROM pg1 TO pg2")
        .await
        .unwrap();
    assert_eq!(col(&r[0], "sessions"), Some("4"));
    let shared = proxy.shared.clone();
    wait_for("every session on pg2", || {
        let shared = shared.clone();
        async move { shared.env.sessions.count_on("pg2") == 4 }
    })
    .await;
    for (i, c) in clients.iter().enumerate() {
        assert_eq!(where_is(c).await.1, s2.port());
        assert_eq!(
            one(c, "SELECT current_setting('myapp.n')").await,
            i.to_string()
        );
    }
    let e = must_fail(
        admin(&console, "MIGRATE ALL FROM pg1 TO nowhere").await,
        "unknown target",
    );
    assert_eq!(sqlstate(&e), "42704");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_inside_an_open_batch_is_an_ordinary_comment() {
    // A JDBC batch: several statements, one Sync. The comment in the second
    // Parse cannot be answered before the first statement's replies, which
    // come only at the Sync behind it: it runs as the comment it is to
    // Postgres (it used to be held, and the session hung).
    let servers = start_servers(2).await;
    let s1 = &servers[0];
    let proxy = foreign_proxy(&[s1, &servers[1]], "").await;
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    let mut out = bytes::BytesMut::new();
    build::parse("", "SELECT 1", &mut out);
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::parse(
        "",
        "/* pgbaton: migrate to=pg2 */ SELECT inet_server_port()::text",
        &mut out,
    );
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(
        tags,
        b"12DC12DCZ".to_vec(),
        "{}",
        String::from_utf8_lossy(&tags)
    );
    let msgs = raw.query("SELECT inet_server_port()::text").await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(
        row.body.ends_with(s1.port().to_string().as_bytes()),
        "not moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_at_the_start_of_the_first_parse_moves_too() {
    // DESIGN: "The same comment at the start of the first Parse of an
    // extended-protocol request works too."
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("database", "postgres")],
    )
    .await;
    let mut out = bytes::BytesMut::new();
    build::parse(
        "",
        "/* pgbaton: migrate to=pg2 */ SELECT inet_server_port()::text",
        &mut out,
    );
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let msgs = raw.until_rfq().await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "{:?}",
        msgs.iter().map(msg_text).collect::<Vec<_>>()
    );
    let notice = msgs.iter().find(|m| m.tag == b'N');
    assert!(
        notice.is_some_and(|n| msg_text(n).contains("moved from pg1")),
        "a NOTICE says the session moved: {msgs:?}"
    );
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(
        row.body.ends_with(s2.port().to_string().as_bytes()),
        "the statement ran on pg2 (port {}): {row:?}",
        s2.port()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_pipelined_behind_the_comment_run_once_after_the_move() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(&[s1, s2], "CREATE TABLE hits (n int)");
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("database", "postgres")],
    )
    .await;
    // One write: the comment, an extended-protocol INSERT, a simple SELECT.
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("/* pgbaton: migrate to=pg2 */;", &mut out)
        .unwrap();
    build::parse("", "INSERT INTO hits VALUES (1)", &mut out);
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    postgres_protocol::message::frontend::query(
        "INSERT INTO hits VALUES (2); SELECT inet_server_port()::text",
        &mut out,
    )
    .unwrap();
    raw.send(&out).await;
    let tags = |msgs: &[Msg]| msgs.iter().map(|m| m.tag).collect::<Vec<u8>>();
    let first = raw.until_rfq().await;
    assert_eq!(tags(&first), b"NCZ", "{first:?}");
    assert_eq!(&first[1].body[..], b"MIGRATE 1\0");
    let second = raw.until_rfq().await;
    assert_eq!(tags(&second), b"12CZ", "{second:?}");
    let third = raw.until_rfq().await;
    assert_eq!(tags(&third), b"CTDCZ", "{third:?}");
    assert!(third[2].body.ends_with(s2.port().to_string().as_bytes()));
    assert_eq!(
        s2.psql(
            "postgres",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM hits"
        ),
        "1,2"
    );
    assert_eq!(s1.psql("postgres", "SELECT count(*) FROM hits"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statement_and_session_authorization_move() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE ROLE alice NOLOGIN; CREATE ROLE bob NOLOGIN; GRANT bob TO alice;",
    );
    let proxy = foreign_proxy(&[s1, s2], "").await;

    // The unnamed statement, parsed on pg1 and bound after the move.
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("database", "postgres")],
    )
    .await;
    let mut out = bytes::BytesMut::new();
    build::parse("", "SELECT inet_server_port()::text", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(tags, b"1Z");
    let msgs = raw.query("/* pgbaton: migrate to=pg2 */;").await;
    assert!(msgs.iter().all(|m| m.tag != b'E'), "{msgs:?}");
    out.clear();
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let msgs = raw.until_rfq().await;
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap_or_else(|| {
        panic!(
            "the unnamed statement exists after the move: {:?}",
            msgs.iter().map(msg_text).collect::<Vec<_>>()
        )
    });
    assert!(row.body.ends_with(s2.port().to_string().as_bytes()));

    // SET SESSION AUTHORIZATION and SET ROLE on top of it.
    let client = proxy.connect("postgres", "postgres").await;
    client
        .batch_execute("SET SESSION AUTHORIZATION alice; SET ROLE bob")
        .await
        .unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s2.port());
    assert_eq!(
        rows(&client, "SELECT session_user, current_user").await,
        vec![vec![Some("alice".into()), Some("bob".into())]]
    );
    client.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(one(&client, "SELECT current_user").await, "alice");
    // The session may still go back to who it logged in as.
    client
        .batch_execute("RESET SESSION AUTHORIZATION")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT session_user, current_user").await,
        vec![vec![Some("postgres".into()), Some("postgres".into())]]
    );
}

/// tokio-postgres's `copy_in` runs COPY FROM STDIN in the extended protocol:
/// Bind, Execute, Sync, the data, CopyDone, Sync. Postgres ignores the first
/// Sync in copy-in mode, so two Syncs get one ReadyForQuery. The session
/// must still reach safe points after it: it moves, and it answers in
/// order.
#[tokio::test]
async fn a_session_that_copied_in_through_the_extended_protocol_still_moves() {
    use futures_util::SinkExt;
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(&[s1, s2], "CREATE TABLE copied (line text)");
    let proxy = crate::harness::TestProxy::start(crate::harness::TestProxy::config(
        &[s1, s2],
        "migration_wait = \"5s\"",
    ))
    .await;
    let client = proxy.connect("postgres", "postgres").await;
    let sink = client.copy_in("COPY copied FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"one\ntwo\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(one(&client, "SELECT count(*) FROM copied").await, "2");
    let (_, before) = where_is(&client).await;
    assert_eq!(before, s1.port());
    client
        .simple_query("/* pgbaton: migrate to=pg2 */;")
        .await
        .expect("the move after a COPY");
    let (_, after) = where_is(&client).await;
    assert_eq!(after, s2.port());
    assert_eq!(one(&client, "SELECT count(*) FROM copied").await, "0");
}
