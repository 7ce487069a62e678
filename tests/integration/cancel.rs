//! Cancel: pgbaton's own keys, forwarded to the right server connection;
//! wrong keys do nothing.

use crate::harness::{sqlstate, start_servers, Raw, TestProxy};

async fn wait_until_active(server: &crate::harness::TestServer, app: &str) {
    let direct = server.connect_direct("postgres").await;
    crate::harness::wait_for(&format!("the query of {app} to be active"), || async {
        let n: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        n > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_the_running_query() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let client = proxy.connect("postgres", "postgres").await;
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(60)")
            .await
            .map(|_| client)
    });
    wait_until_active(&servers[0], "").await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = crate::harness::must_fail(sleeping.await.unwrap(), "the query was cancelled");
    assert_eq!(sqlstate(&err), "57014");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let child = tokio::process::Command::new("psql")
        .args(["-X", "-c", "SELECT pg_sleep(60)"])
        .arg(format!(
            "{} application_name=ctrlc",
            proxy.conn_str("postgres", "postgres")
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql starts");
    wait_until_active(&servers[0], "ctrlc").await;
    // What Ctrl-C does in a terminal: SIGINT to psql, which sends a CancelRequest.
    let pid = child.id().expect("psql pid") as i32;
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql said: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_do_nothing() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, startup) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "wrongkey")],
    )
    .await;
    let key = startup.iter().find(|m| m.tag == b'K').unwrap();
    let pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    let secret = i32::from_be_bytes(key.body[4..8].try_into().unwrap());

    let mut q = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT pg_sleep(1.5), 'done'", &mut q).unwrap();
    raw.send(&q).await;
    wait_until_active(&servers[0], "wrongkey").await;
    for (p, k) in [(pid, secret.wrapping_add(1)), (pid + 1000, secret)] {
        cancel_like_libpq(&proxy, p, k).await;
    }
    let msgs = raw.until_rfq().await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "the query was not cancelled"
    );
    assert!(msgs.iter().any(|m| m.tag == b'D'));
}

/// Sends a CancelRequest as libpq's PQcancel does, and returns once the
/// connection is closed (which PQcancel takes to mean "handled").
async fn cancel_like_libpq(proxy: &TestProxy, pid: i32, secret: i32) {
    let mut c = Raw::connect(proxy.addr).await;
    let mut pkt = 16i32.to_be_bytes().to_vec();
    pkt.extend_from_slice(&80877102i32.to_be_bytes());
    pkt.extend_from_slice(&pid.to_be_bytes());
    pkt.extend_from_slice(&secret.to_be_bytes());
    c.send(&pkt).await;
    assert!(c.until_closed().await.is_empty(), "a cancel gets no answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_closed_only_once_it_has_happened() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, startup) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    let key = startup.iter().find(|m| m.tag == b'K').unwrap();
    let pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    let secret = i32::from_be_bytes(key.body[4..8].try_into().unwrap());
    // A cancel sent when nothing runs, then at once the next query: the
    // cancel must have been dealt with before its socket closed, or it
    // lands on the next query (which it did 30 times out of 30).
    for round in 0..10 {
        cancel_like_libpq(&proxy, pid, secret).await;
        let msgs = raw.query("SELECT pg_sleep(0.2)").await;
        let error = msgs.iter().find(|m| m.tag == b'E');
        assert!(
            error.is_none(),
            "round {round}: the next query was killed: {:?}",
            error.and_then(|e| e.message())
        );
    }
}
