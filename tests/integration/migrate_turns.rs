//! How moves share the machine: a cutover runs alone (never beside a
//! pre-staging's login), but a target that takes its time to log in must
//! not hold up moves to other servers.

use crate::harness::{start_servers, TestProxy, TestServer};
use crate::migrate::{entry, foreign_config, one, request, tag_count, where_is};
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
    proxy.shared.remember_identity("pg3", identity);

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
