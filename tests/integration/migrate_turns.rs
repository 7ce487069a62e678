//! How moves share the machine: a cutover runs alone (never beside a
//! pre-staging's login), but a target that takes its time to log in must
//! not hold up moves to other servers.

use crate::harness::{entry, foreign_config, one, request, tag_count, where_is};
use crate::harness::{start_servers, TestProxy, TestServer};
use pgbaton::migration::identity::Identity;
use std::time::Duration;

/// What a move would learn of `server`, with the setting names
/// `settable_sql` lists: to seed the proxy's cache for a backend it cannot
/// learn it from (one that never answers), or with another list.
pub(crate) async fn identity_of(server: &TestServer, settable_sql: &str) -> Identity {
    let direct = server.connect_direct("postgres").await;
    let sysid = one(
        &direct,
        "SELECT system_identifier::text FROM pg_control_system()",
    )
    .await;
    let version = one(&direct, "SELECT current_setting('server_version_num')").await;
    let names = one(&direct, settable_sql).await;
    Identity {
        system_identifier: sysid,
        version_num: version.parse().unwrap(),
        settable: names.split(',').map(str::to_string).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_answers_does_not_hold_up_moves_to_others() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    // pg3 accepts connections and never says a word.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let mut config = foreign_config(&[s1, s2], "");
    config.connect_timeout = Duration::from_secs(60);
    let mut pg3 = config.backends[1].clone();
    pg3.name = "pg3".into();
    pg3.host = hole_addr.ip().to_string();
    pg3.port = hole_addr.port();
    config.backends.push(pg3);
    let proxy = TestProxy::start(config).await;
    let identity = identity_of(s1, pgbaton::ledger::check::SETTABLE_NAMES_SQL).await;
    proxy.shared.env.moves.remember_identity("pg3", identity);

    let stuck = proxy.connect_app("postgres", "postgres", "stuck").await;
    let mover = proxy.connect_app("postgres", "postgres", "mover").await;
    let stuck_entry = entry(&proxy, "stuck").await;
    let stuck_move = tokio::spawn(async move { stuck_entry.migrate(request("pg3")).await });
    // Its pre-staging is logging in to pg3 now, and will wait there.
    accepted.recv().await.expect("pg3 gets a connection");

    // Another session moves to pg2 meanwhile and is done first.
    assert_eq!(tag_count(&mover, "/* pgbaton: migrate to=pg2 */;").await, 1);
    assert_eq!(where_is(&mover).await.1, s2.port());
    assert!(
        !stuck_move.is_finished(),
        "the move to pg2 waited for the move to pg3: {:?}",
        stuck_move.await
    );

    // pg3 goes away: that move fails, and its session stays where it was.
    holder.abort();
    let _ = holder.await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), stuck_move)
        .await
        .expect("the move to pg3 ends")
        .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(where_is(&stuck).await.1, s1.port());
}

/// Sends `sig` (`STOP`, `CONT`) to a server process.
fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_hangs_in_its_cutover_costs_one_budget_and_the_session_stays() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = TestProxy::start(foreign_config(&[s1, s2], "cutover_budget = \"300ms\"")).await;
    let stuck = proxy.connect_app("postgres", "postgres", "stuck").await;
    stuck
        .batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let mover = proxy.connect_app("postgres", "postgres", "mover").await;
    let (pid, port) = where_is(&stuck).await;
    assert_eq!(port, s1.port());

    // The source's server process stops answering; pre-staging (other
    // connections) still works, so the move reaches its cutover and its
    // check waits on the stopped process.
    signal(pid, "STOP");
    let outcome = entry(&proxy, "stuck").await.migrate(request("pg2")).await;
    let e = outcome.expect_err("the move cannot finish while its source hangs");
    assert!(
        matches!(e, pgbaton::migration::MoveError::OverBudget(_)),
        "{e:?}"
    );
    // Another session's move goes through meanwhile: no lock was kept.
    assert_eq!(tag_count(&mover, "/* pgbaton: migrate to=pg2 */;").await, 1);
    assert_eq!(where_is(&mover).await.1, s2.port());

    // The source wakes: the session is where it was, with its state, and
    // the check's late answer never reaches the client.
    signal(pid, "CONT");
    assert_eq!(where_is(&stuck).await, (pid, s1.port()));
    assert_eq!(one(&stuck, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(
        one(&stuck, "SELECT 'still in order'").await,
        "still in order"
    );
    // And it can move once its source answers again.
    assert_eq!(tag_count(&stuck, "/* pgbaton: migrate to=pg2 */;").await, 1);
    assert_eq!(where_is(&stuck).await.1, s2.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_cutover_keeps_its_place_while_its_session_is_busy() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = TestProxy::start(foreign_config(&[s1, s2], "")).await;
    let (first, mut first_rx) =
        crate::harness::connect_watched(&proxy, "postgres", "postgres", "first").await;
    first.batch_execute("LISTEN wake").await.unwrap();
    let second = proxy.connect_app("postgres", "postgres", "second").await;
    let (a, b) = (entry(&proxy, "first").await, entry(&proxy, "second").await);

    // Nobody gets a cutover turn while the test holds it.
    let held = proxy
        .shared
        .env
        .moves
        .cutover_turn
        .clone()
        .lock_owned()
        .await;
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let queued = |e: std::sync::Arc<pgbaton::session::registry::SessionEntry>| async move {
        e.live_moving() == Some("waiting for its cutover turn")
    };
    let tx = done_tx.clone();
    let (ea, eb) = (a.clone(), b.clone());
    tokio::spawn(async move {
        let r = ea.migrate(request("pg2")).await;
        let _ = tx.send(("first", r.is_ok()));
    });
    crate::harness::wait_for("the first move queued", || queued(a.clone())).await;
    tokio::spawn(async move {
        let r = eb.migrate(request("pg2")).await;
        let _ = done_tx.send(("second", r.is_ok()));
    });
    crate::harness::wait_for("the second move queued", || queued(b.clone())).await;

    // The first session's loop turns while it waits: notifications arrive.
    let direct = s1.connect_direct("postgres").await;
    for i in 0..3 {
        direct
            .batch_execute(&format!("NOTIFY wake, '{i}'"))
            .await
            .unwrap();
    }
    let mut seen = 0;
    while seen < 3 {
        match tokio::time::timeout(Duration::from_secs(30), first_rx.recv()).await {
            Ok(Some(tokio_postgres::AsyncMessage::Notification(_))) => seen += 1,
            Ok(Some(_)) => {}
            other => panic!("notifications for the first session: {other:?}"),
        }
    }
    drop(held);
    // Cutovers go one at a time, in the order they queued.
    assert_eq!(done.recv().await, Some(("first", true)));
    assert_eq!(done.recv().await, Some(("second", true)));
    assert_eq!(where_is(&first).await.1, s2.port());
    assert_eq!(where_is(&second).await.1, s2.port());
}
