//! Transparent relay: what a client sends reaches the server unchanged, and
//! what the server sends reaches the client, for every kind of traffic.

use crate::harness::raw::build;
use crate::harness::{sqlstate, start_servers, Raw, TestProxy};
use bytes::BytesMut;
use futures_util::{pin_mut, SinkExt, TryStreamExt};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_multi_statement_queries() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let client = proxy.connect("postgres", "postgres").await;

    let rows = client
        .simple_query(
            "CREATE TEMP TABLE t(x int); INSERT INTO t VALUES (1),(2); SELECT sum(x)::text FROM t",
        )
        .await
        .unwrap();
    let sum = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    assert_eq!(sum, "3");
    // An error in the middle of a multi-statement query rolls back the whole
    // implicit transaction, exactly as without a proxy.
    let err = client
        .simple_query("INSERT INTO t VALUES (3); SELECT 1/0; INSERT INTO t VALUES (4)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_pipeline_with_an_error_in_the_middle() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let client = proxy.connect("postgres", "postgres").await;

    let stmt = client.prepare("SELECT $1::int * 2").await.unwrap();
    // tokio-postgres pipelines queries that are polled together.
    let a = client.query_one(&stmt, &[&1i32]);
    let b = client.query_one("SELECT 1 / $1::int", &[&0i32]);
    let c = client.query_one(&stmt, &[&21i32]);
    let (a, b, c) = tokio::join!(a, b, c);
    assert_eq!(a.unwrap().get::<_, i32>(0), 2);
    assert_eq!(sqlstate(&b.unwrap_err()), "22012");
    assert_eq!(c.unwrap().get::<_, i32>(0), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_without_sync_gets_results_and_no_ready_for_query() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("database", "postgres")],
    )
    .await;

    let mut out = BytesMut::new();
    build::parse("", "SELECT 7", &mut out);
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::flush(&mut out);
    raw.send(&out).await;
    let tags: Vec<u8> = [
        raw.recv().await,
        raw.recv().await,
        raw.recv().await,
        raw.recv().await,
    ]
    .into_iter()
    .map(|m| m.unwrap().tag)
    .collect();
    assert_eq!(
        tags, b"12DC",
        "ParseComplete, BindComplete, DataRow, CommandComplete"
    );
    out.clear();
    build::sync(&mut out);
    raw.send(&out).await;
    let z = raw.recv().await.unwrap();
    assert_eq!((z.tag, &z.body[..]), (b'Z', &b"I"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_pipeline_skips_to_sync() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;

    let mut out = BytesMut::new();
    build::parse("", "SELECT 1 / (0 * random())::int", &mut out);
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::parse("s_after", "SELECT 1", &mut out);
    build::sync(&mut out);
    build::parse("", "SELECT 2", &mut out);
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let first = raw.tags_until_rfq().await;
    assert_eq!(first, b"12EZ");
    let second = raw.tags_until_rfq().await;
    assert_eq!(second, b"12DCZ");
    // The Parse after the error was skipped by the server.
    let msgs = raw
        .query("SELECT count(*) FROM pg_prepared_statements WHERE name = 's_after'")
        .await;
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap();
    assert!(row.body.ends_with(b"0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_100_mb_in_and_out() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let client = proxy.connect("postgres", "postgres").await;
    client
        .batch_execute("CREATE TABLE big (line text)")
        .await
        .unwrap();

    // 100 MB in 1 KiB lines.
    let line = format!("{}\n", "x".repeat(1023));
    let lines = 100 * 1024;
    let sink = client.copy_in("COPY big FROM STDIN").await.unwrap();
    pin_mut!(sink);
    let chunk = bytes::Bytes::from(line.repeat(256));
    for _ in 0..lines / 256 {
        sink.send(chunk.clone()).await.unwrap();
    }
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, lines as u64);

    let stream = client.copy_out("COPY big TO STDOUT").await.unwrap();
    let total: usize = stream
        .map_ok(|b| b.len())
        .try_fold(0, |a, n| async move { Ok(a + n) })
        .await
        .unwrap();
    assert_eq!(total, lines * 1024);
    // The session is usable afterwards.
    let n: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, lines as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fail_leaves_the_session_working() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    raw.query("CREATE TABLE c (x int)").await;
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::query("COPY c FROM STDIN", &mut out).unwrap();
    raw.send(&out).await;
    assert_eq!(raw.recv().await.unwrap().tag, b'G');
    out.clear();
    build::message(b'd', b"1\n", &mut out);
    build::message(b'f', b"client gave up\0", &mut out);
    raw.send(&out).await;
    let msgs = raw.until_rfq().await;
    assert_eq!(msgs[0].code().as_deref(), Some("57014"));
    let msgs = raw.query("SELECT count(*) FROM c").await;
    assert!(msgs.iter().any(|m| m.tag == b'D' && m.body.ends_with(b"0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_tens_of_megabytes() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let client = proxy.connect("postgres", "postgres").await;
    let row = client
        .query_one(
            "SELECT repeat('ab', 15 * 1024 * 1024) AS v, 'after' AS w",
            &[],
        )
        .await
        .unwrap();
    let v: &str = row.get(0);
    assert_eq!(v.len(), 30 * 1024 * 1024);
    assert_eq!(row.get::<_, &str>(1), "after");
    // And a large value sent by the client.
    let big = "z".repeat(20 * 1024 * 1024);
    let n: i32 = client
        .query_one("SELECT length($1::text)", &[&big])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, big.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_arrive_while_idle_and_notices_pass() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    raw.query("LISTEN jobs").await;
    // Another client notifies; the listener is idle and sends nothing.
    let other = proxy.connect("postgres", "postgres").await;
    other
        .batch_execute("NOTIFY jobs, 'payload-1'")
        .await
        .unwrap();
    let m = raw.recv().await.unwrap();
    assert_eq!(m.tag, b'A');
    assert!(m.body.windows(9).any(|w| w == b"payload-1"));

    let msgs = raw
        .query("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        .await;
    let notice = msgs
        .iter()
        .find(|m| m.tag == b'N')
        .expect("NoticeResponse relayed");
    assert_eq!(notice.message().as_deref(), Some("hello from plpgsql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_and_unknown_tags_are_forwarded() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    // FunctionCall of int4pl(20, 22): OID 177.
    let mut body = Vec::new();
    body.extend_from_slice(&177u32.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes()); // one format code
    body.extend_from_slice(&1i16.to_be_bytes()); // binary
    body.extend_from_slice(&2i16.to_be_bytes()); // two args
    for v in [20i32, 22] {
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&v.to_be_bytes());
    }
    body.extend_from_slice(&1i16.to_be_bytes()); // binary result
    let mut out = BytesMut::new();
    build::message(b'F', &body, &mut out);
    raw.send(&out).await;
    let msgs = raw.until_rfq().await;
    let v = msgs
        .iter()
        .find(|m| m.tag == b'V')
        .expect("FunctionCallResponse");
    assert_eq!(&v.body[..], &[0, 0, 0, 4, 0, 0, 0, 42]);

    // An unknown tag is the server's business: it answers with its own
    // FATAL (pgbaton did not reject it) and closes.
    out.clear();
    build::message(b'y', b"whatever", &mut out);
    raw.send(&out).await;
    let msgs = raw.until_closed().await;
    let e = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .expect("the server's error");
    assert_eq!(e.code().as_deref(), Some("08P01"));
    assert!(
        e.message()
            .unwrap()
            .contains("invalid frontend message type 121"),
        "{:?}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_closes_the_server_connection() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "to-terminate")],
    )
    .await;
    let mut out = BytesMut::new();
    build::terminate(&mut out);
    raw.send(&out).await;
    assert!(raw.until_closed().await.is_empty());
    // The server process goes away: Postgres exits the backend on Terminate.
    let direct = servers[0].connect_direct("postgres").await;
    crate::harness::wait_for("the server process to exit", || async {
        let remaining: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'to-terminate'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        remaining == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fatal_reaches_the_client_which_is_then_closed() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let client = proxy.connect("postgres", "postgres").await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let direct = servers[0].connect_direct("postgres").await;
    direct
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    // Either the FATAL itself, or the closed connection right after it.
    if let Some(code) = err.code() {
        assert_eq!(code.code(), "57P01");
    }
    assert!(client.is_closed() || client.simple_query("SELECT 1").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_independent() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let a = proxy.connect("postgres", "postgres").await;
    let b = proxy.connect("postgres", "postgres").await;
    a.batch_execute("SET application_name = 'a'").await.unwrap();
    let pa: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let pb: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(pa, pb);
    let name: String = b
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(name, "a");
}
