//! Startup: TLS/GSS negotiation answers, protocol version negotiation,
//! parameters forwarded verbatim, replication refused, virtual keys.

use crate::harness::{start_servers, Raw, TestProxy};
use tokio::io::AsyncWriteExt;

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut p = ((8 + body.len()) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(body);
    p
}

fn show(msgs: &[crate::harness::Msg]) -> String {
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    // One text column: count(2) len(4) value.
    String::from_utf8_lossy(&row.body[6..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_are_forwarded_verbatim() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, startup) = Raw::login(
        proxy.addr,
        &[
            ("user", "postgres"),
            ("database", "postgres"),
            ("application_name", "verbatim-app"),
            (
                "options",
                "-c work_mem=7MB -c search_path=pg_catalog,public",
            ),
            ("statement_timeout", "1234"),
        ],
    )
    .await;
    let app = startup
        .iter()
        .find(|m| m.tag == b'S' && m.body.starts_with(b"application_name\0"))
        .expect("ParameterStatus application_name");
    assert_eq!(&app.body[..], b"application_name\0verbatim-app\0");
    assert_eq!(show(&raw.query("SHOW work_mem").await), "7MB");
    assert_eq!(show(&raw.query("SHOW statement_timeout").await), "1234ms");
    assert_eq!(
        show(&raw.query("SHOW search_path").await),
        "pg_catalog,public"
    );
    // They are `client` settings on the server, so RESET returns to them.
    raw.query("SET work_mem = '1MB'").await;
    raw.query("RESET work_mem").await;
    assert_eq!(show(&raw.query("SHOW work_mem").await), "7MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gss_requests_are_refused_without_a_certificate() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&packet(80877104, b"")).await;
    assert_eq!(raw.recv_byte().await, b'N', "GSSENCRequest");
    raw.send(&packet(80877103, b"")).await;
    assert_eq!(raw.recv_byte().await, b'N', "SSLRequest");
    raw.send_startup(&[("user", "postgres")]).await;
    let msgs = raw.until_rfq().await;
    assert!(msgs.iter().any(|m| m.tag == b'R'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_gets_negotiate_protocol_version() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&packet(
        (3 << 16) | 2,
        b"user\0postgres\0_pq_.test_option\0x\0\0",
    ))
    .await;
    let first = raw.recv().await.unwrap();
    assert_eq!(first.tag, b'v', "NegotiateProtocolVersion comes first");
    assert_eq!(
        &first.body[..4],
        &[0, 3, 0, 0],
        "newest minor supported is 3.0"
    );
    assert_eq!(&first.body[4..8], &[0, 0, 0, 1]);
    assert_eq!(&first.body[8..], b"_pq_.test_option\0");
    let msgs = raw.until_rfq().await;
    assert!(msgs.iter().all(|m| m.tag != b'E'));
    assert_eq!(show(&raw.query("SELECT 'still 3.0'").await), "still 3.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_major_version_is_refused() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&packet(2 << 16, b"user\0postgres\0\0")).await;
    let msgs = raw.until_closed().await;
    assert_eq!(msgs[0].code().as_deref(), Some("0A000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_connections_are_refused() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send_startup(&[("user", "postgres"), ("replication", "database")])
        .await;
    let msgs = raw.until_closed().await;
    let e = &msgs[0];
    assert_eq!(e.tag, b'E');
    assert_eq!(e.code().as_deref(), Some("0A000"));
    assert!(e.message().unwrap().contains("replication"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_learn_the_real_pid_of_their_server_backend() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, startup) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    let key = startup
        .iter()
        .find(|m| m.tag == b'K')
        .expect("BackendKeyData");
    let client_pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    let server_pid: i32 = show(&raw.query("SELECT pg_backend_pid()").await)
        .parse()
        .unwrap();
    assert_eq!(
        client_pid, server_pid,
        "BackendKeyData names the real backend"
    );

    // A notification the session sends itself carries that same pid, which
    // is how drivers tell their own notifications apart.
    raw.query("LISTEN me").await;
    let msgs = raw.query("NOTIFY me, 'hello'").await;
    let a = msgs.iter().find(|m| m.tag == b'A').expect("a notification");
    assert_eq!(
        i32::from_be_bytes(a.body[..4].try_into().unwrap()),
        client_pid
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_startup_parameter_is_refused() {
    let servers = start_servers(1).await;
    servers[0].psql("postgres", "CREATE ROLE app LOGIN");
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    // What Postgres would do with this packet is take the last `user`; an
    // authenticator that read the first would log the client in as another.
    for params in [
        &[
            ("user", "app"),
            ("database", "postgres"),
            ("user", "postgres"),
        ][..],
        &[
            ("user", "app"),
            ("options", "-c work_mem=1MB"),
            ("options", ""),
        ][..],
    ] {
        let mut raw = Raw::connect(proxy.addr).await;
        raw.send_startup(params).await;
        let msgs = raw.until_closed().await;
        assert_eq!(msgs.len(), 1, "one FATAL, then close: {msgs:?}");
        assert_eq!(msgs[0].code().as_deref(), Some("08P01"));
        assert_eq!(msgs[0].field(b'V').as_deref(), Some("FATAL"));
        assert!(
            msgs[0].message().unwrap().contains("repeats the parameter"),
            "{:?}",
            msgs[0].message()
        );
    }
    // The same user once is fine, and is who the server sees.
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "app"), ("database", "postgres")]).await;
    assert_eq!(show(&raw.query("SELECT current_user::text").await), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_startup_length_closes_without_a_reply() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    // A Terminate sent before any startup: its tag and length read as a
    // length of 1476395008, which Postgres closes on without a word.
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(b"X\0\0\0\x04").await;
    assert!(
        raw.until_closed().await.is_empty(),
        "no reply to a bad length"
    );
    // Too short to be a startup packet at all.
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&[0, 0, 0, 4]).await;
    assert!(
        raw.until_closed().await.is_empty(),
        "no reply to a bad length"
    );
    let client = proxy.connect("postgres", "postgres").await;
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_startup_does_not_disturb_others() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&[0, 0, 0, 40, 0, 3]).await;
    raw.stream.shutdown().await.unwrap();
    drop(raw);
    let client = proxy.connect("postgres", "postgres").await;
    client.simple_query("SELECT 1").await.unwrap();
}
