//! Memory a client can make pgbaton hold: a header's length is only a claim
//! (nothing is reserved before the bytes arrive), and what really arrives
//! is bounded across all clients by `max_client_memory`: the message that
//! does not fit is refused with 53200 and its session goes on.
//!
//! A test binary of its own (`cargo test --test memory`): it reads the
//! process's address-space size, which other tests would disturb.

// Not every helper is used here.
#[allow(unused_imports)]
#[path = "integration/harness/mod.rs"]
mod harness;

use bytes::BytesMut;
use harness::raw::build;
use harness::{start_servers, Raw, TestProxy};
use postgres_protocol::message::frontend;

/// The process's virtual size in KiB (`VmSize`): what reserving memory
/// grows, touched or not.
fn vm_size_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status")
}

/// Bytes pgbaton has not yet read from the client at `client_port`: the
/// receive queue of pgbaton's end of that connection in /proc/net/tcp.
fn unread_by_proxy(proxy_port: u16, client_port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if port(f[1]) == proxy_port && port(f[2]) == client_port {
            let rx = f[4].split(':').nth(1).unwrap();
            return u64::from_str_radix(rx, 16).unwrap();
        }
    }
    panic!("no connection from port {client_port} to pgbaton");
}

/// Waits until pgbaton has read everything `raw` sent (the event a read
/// loop's reaction follows), bounded only to end a broken run.
async fn read_by_proxy(proxy: &TestProxy, raw: &Raw) {
    let client_port = raw.stream.local_addr().unwrap().port();
    for _ in 0..3000 {
        if unread_by_proxy(proxy.port(), client_port) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("pgbaton never read what the client sent");
}

/// A Query of `len` bytes of SQL: `SELECT length('xxx...')`.
fn big_query(len: usize) -> BytesMut {
    let sql = format!("SELECT length('{}')", "x".repeat(len - 17));
    let mut out = BytesMut::new();
    frontend::query(&sql, &mut out).unwrap();
    out
}

fn row_value(msgs: &[harness::Msg]) -> String {
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    String::from_utf8_lossy(&row.body[6..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_reserves_nothing() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::start(TestProxy::config(
        &[&servers[0]],
        "max_message_size = 1073741823\nmax_client_memory = 2147483648",
    ))
    .await;
    let before = vm_size_kib();
    let mut claimants = Vec::new();
    for _ in 0..20 {
        let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
        // A Query that claims 1 GiB and brings 10 bytes.
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&(1073741823i32).to_be_bytes());
        msg.extend_from_slice(b"SELECT 1; ");
        raw.send(&msg).await;
        read_by_proxy(&proxy, &raw).await;
        claimants.push(raw);
    }
    let grown_mib = vm_size_kib().saturating_sub(before) >> 10;
    assert!(
        grown_mib < 1024,
        "20 claims of 1 GiB grew the address space by {grown_mib} MiB"
    );
    let (mut bystander, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    assert_eq!(row_value(&bystander.query("SELECT 7").await), "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_bytes_are_bounded_across_clients() {
    let servers = start_servers(1).await;
    servers[0].psql("postgres", "CREATE TABLE kept (x int)");
    let proxy = TestProxy::start(TestProxy::config(
        &[&servers[0]],
        "max_message_size = 50331648\nmax_client_memory = 67108864",
    ))
    .await;
    let budget = proxy.shared.env.client_memory.clone();
    let len = 40 << 20;

    // The first client sends all of a 40 MiB statement but its last byte:
    // pgbaton holds it, charged to the budget (exactly: no doubling past
    // the message's length).
    let (mut first, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    let q = big_query(len);
    first.send(&q[..q.len() - 1]).await;
    read_by_proxy(&proxy, &first).await;
    let charged = budget.used();
    assert!(
        charged > 32 << 20 && charged <= len,
        "charged {charged} for {len}"
    );

    // The second sends one as large, whole, inside a transaction: it does
    // not fit. It is told so in its turn, the transaction is aborted as by
    // the server's own out of memory, and the session goes on.
    let (mut second, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    second.query("BEGIN").await;
    second.query("INSERT INTO kept VALUES (1)").await;
    second.send(&big_query(len)).await;
    let msgs = second.until_rfq().await;
    let e = msgs
        .iter()
        .find(|m| m.tag == b'E')
        .expect("an ErrorResponse");
    assert_eq!(e.code().as_deref(), Some("53200"), "{:?}", e.message());
    assert_eq!(e.field(b'V').as_deref(), Some("ERROR"));
    assert!(e.message().unwrap().contains("max_client_memory"));
    assert_eq!(
        &msgs.last().unwrap().body[..],
        b"E",
        "the transaction failed"
    );
    let done = second.query("COMMIT").await;
    let tag = done
        .iter()
        .find(|m| m.tag == b'C')
        .expect("CommandComplete");
    assert_eq!(
        &tag.body[..],
        b"ROLLBACK\0",
        "a failed transaction rolls back"
    );
    assert_eq!(
        row_value(&second.query("SELECT count(*) FROM kept").await),
        "0"
    );
    assert!(budget.used() <= budget.limit());

    // Ordinary clients are never charged: they run meanwhile.
    let (mut small, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    assert_eq!(row_value(&small.query("SELECT 3").await), "3");

    // A Parse that does not fit cannot be refused with its batch intact:
    // that session ends (FATAL 53200; a client still sending may see the
    // connection reset first), and no one else's does.
    let (mut parser, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    let mut batch = BytesMut::new();
    let sql = format!("SELECT length('{}')", "x".repeat(len - 17));
    build::parse("big", &sql, &mut batch);
    build::sync(&mut batch);
    let _ = tokio::io::AsyncWriteExt::write_all(&mut parser.stream, &batch).await;
    let msgs = parser.until_closed().await;
    if let Some(m) = msgs.first() {
        assert_eq!(m.code().as_deref(), Some("53200"), "{:?}", m.message());
        assert_eq!(m.field(b'V').as_deref(), Some("FATAL"));
    }
    assert_eq!(row_value(&small.query("SELECT 5").await), "5");

    // The first one's statement completes and runs; once it has gone on,
    // its memory is given back.
    first.send(&q[q.len() - 1..]).await;
    let msgs = first.until_rfq().await;
    assert_eq!(row_value(&msgs), (len - 17).to_string());
    assert_eq!(row_value(&first.query("SELECT 4").await), "4");
    assert_eq!(budget.used(), 0, "everything given back");
}
