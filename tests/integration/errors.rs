//! Errors pgbaton writes itself: real SQLSTATEs, the failing side named, and
//! a broken client never disturbing the others.

use crate::harness::raw::build;
use crate::harness::{sqlstate, start_servers, Raw, TestProxy};
use bytes::BytesMut;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_is_08006_naming_it() {
    let servers = start_servers(1).await;
    // A port nobody listens on: bind, note it, release it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.backends[0].port = dead.port();
    let proxy = TestProxy::start(config).await;
    let e = proxy
        .try_connect(&proxy.conn_str("postgres", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "08006");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(
        msg.contains("\"pg1\"") && msg.contains(&dead.port().to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_close_only_that_client() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let bystander = proxy.connect("postgres", "postgres").await;

    for bad in [
        // Length smaller than the length word itself.
        &b"Q\0\0\0\x02"[..],
        // A negative length.
        &b"Q\xff\xff\xff\xf0"[..],
        // A Sync claiming 1 MB: Postgres allows small messages 10000 bytes.
        &b"S\0\x10\0\0"[..],
    ] {
        let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
        raw.send(bad).await;
        let msgs = raw.until_closed().await;
        let e = msgs
            .iter()
            .find(|m| m.tag == b'E')
            .expect("an ErrorResponse before close");
        assert_eq!(e.code().as_deref(), Some("08P01"), "{:?}", e.message());
        assert_eq!(e.field(b'V').as_deref(), Some("FATAL"));
        bystander.simple_query("SELECT 1").await.unwrap();
    }

    // An oversized Query beyond max_message_size.
    let mut config = TestProxy::config(&[&servers[0]], "max_message_size = 4096");
    config.listen = "127.0.0.1:0".parse().unwrap();
    let small = TestProxy::start(config).await;
    let (mut raw, _) = Raw::login(small.addr, &[("user", "postgres")]).await;
    let mut out = BytesMut::new();
    build::message(b'Q', &vec![b'x'; 8192], &mut out);
    raw.send(&out[..64]).await;
    let msgs = raw.until_closed().await;
    assert_eq!(msgs[0].code().as_deref(), Some("08P01"));
    assert!(msgs[0].message().unwrap().contains("exceeds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_is_08p01() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&[0, 0, 0, 9, 0, 3, 0, 0, b'u']).await; // no terminator
    let msgs = raw.until_closed().await;
    assert_eq!(msgs[0].code().as_deref(), Some("08P01"));
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send(&[0x7f, 0xff, 0xff, 0xff]).await; // absurd length
                                               // As from Postgres: a length that cannot be a startup packet is logged
                                               // and the connection closed without a reply.
    assert!(raw.until_closed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_is_53300() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::start(TestProxy::config(&[&servers[0]], "max_clients = 2")).await;
    let a = proxy.connect("postgres", "postgres").await;
    let _b = proxy.connect("postgres", "postgres").await;
    let e = proxy
        .try_connect(&proxy.conn_str("postgres", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "53300");
    a.simple_query("SELECT 1").await.unwrap();
}
