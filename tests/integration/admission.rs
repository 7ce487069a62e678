//! Who gets in: only authenticated clients count against `max_clients`,
//! clients still starting up are bounded apart (the oldest gives way), and
//! admin users keep slots of their own.

use crate::harness::{must_fail, sqlstate, start_servers, Raw, TestProxy};

/// Sockets that connect and say nothing.
async fn silent(proxy: &TestProxy, n: usize) -> Vec<Raw> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Raw::connect(proxy.addr).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_take_client_slots() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::start(TestProxy::config(&[&servers[0]], "max_clients = 5")).await;
    let _silent = silent(&proxy, 50).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let c = proxy.connect("postgres", "postgres").await;
        c.simple_query("SELECT 1").await.unwrap();
        clients.push(c);
    }
    // The sixth authenticated client is one too many.
    let e = must_fail(
        proxy
            .try_connect(&proxy.conn_str("postgres", "postgres"))
            .await,
        "a sixth client",
    );
    assert_eq!(sqlstate(&e), "53300");
    drop(clients.pop());
    // A slot given back is a slot for the next one (the session ends
    // asynchronously once its client has gone, so retry until it has).
    crate::harness::wait_for("a free slot", || async {
        proxy
            .try_connect(&proxy.conn_str("postgres", "postgres"))
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_starting_client_gives_way() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::start(TestProxy::config(
        &[&servers[0]],
        "max_startup_clients = 10",
    ))
    .await;
    let mut quiet = silent(&proxy, 30).await;
    let client = proxy.connect("postgres", "postgres").await;
    client.simple_query("SELECT 1").await.unwrap();
    // 31 came, 10 may wait: the 21 oldest were closed, without a word.
    for (i, raw) in quiet.iter_mut().take(21).enumerate() {
        assert!(
            raw.until_closed().await.is_empty(),
            "silent socket {i} got an answer"
        );
    }
    // One that did start in time logs in as usual.
    let mut late = quiet.pop().unwrap();
    late.send_startup(&[("user", "postgres")]).await;
    assert!(late.until_rfq().await.iter().all(|m| m.tag != b'E'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_users_keep_reserved_slots() {
    let servers = start_servers(1).await;
    servers[0].psql("postgres", "CREATE ROLE app LOGIN");
    let proxy = TestProxy::start(TestProxy::config(
        &[&servers[0]],
        "max_clients = 3\nadmin_reserved_clients = 1\nadmin_users = [\"postgres\"]",
    ))
    .await;
    let _a = proxy.connect("app", "postgres").await;
    let _b = proxy.connect("app", "postgres").await;
    let e = must_fail(
        proxy.try_connect(&proxy.conn_str("app", "postgres")).await,
        "app in the reserved slot",
    );
    assert_eq!(sqlstate(&e), "53300");
    assert!(
        e.as_db_error().unwrap().message().contains("reserved"),
        "{e:?}"
    );
    // The admin gets in, to the console.
    let console = proxy.connect("postgres", "pgbaton").await;
    console.simple_query("SHOW VERSION").await.unwrap();
    // And then every slot is taken, for admins too.
    let e = must_fail(
        proxy
            .try_connect(&proxy.conn_str("postgres", "postgres"))
            .await,
        "a fourth client",
    );
    assert_eq!(sqlstate(&e), "53300");
    assert!(e.as_db_error().unwrap().message().contains("too many"));
}
