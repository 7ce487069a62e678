//! Dry runs answer "no, because" as an answer, not an error; a request that
//! names no backend is told so even while the session is moving.

use crate::harness::{
    admin, col, connect_watched, entry, foreign_proxy, next_notice, request, tag_count, wait_for,
    ADMIN,
};
use crate::harness::{must_fail, sqlstate, start_servers};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_that_would_fail_says_why_with_migrate_0() {
    let servers = start_servers(2).await;
    let proxy = foreign_proxy(&[&servers[0], &servers[1]], ADMIN).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let (client, mut notices) = connect_watched(&proxy, "postgres", "postgres", "dry").await;
    client
        .batch_execute("CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();

    let n = tag_count(&client, "/* pgbaton: migrate to=pg2 dry_run */;").await;
    assert_eq!(n, 0, "MIGRATE 0");
    let notice = next_notice(&mut notices).await;
    assert!(
        notice.contains("cannot move") && notice.contains("temp") && notice.contains("dry run"),
        "{notice}"
    );

    // From the console: a row that says so.
    let id = entry(&proxy, "dry").await.id;
    let r = admin(&console, &format!("MIGRATE SESSION {id} TO pg2 DRY RUN"))
        .await
        .expect("a dry run answers");
    assert_eq!(col(&r[0], "status"), Some("dry run"));
    assert!(col(&r[0], "message").unwrap().contains("temp"), "{r:?}");

    // SHOW MIGRATIONS: dry runs as such, with their verdict, no pause.
    let moves = admin(&console, "SHOW MIGRATIONS").await.unwrap();
    assert_eq!(moves.len(), 2, "{moves:?}");
    for m in &moves {
        assert_eq!(col(m, "status"), Some("dry run"), "{m:?}");
        assert!(col(m, "reason").unwrap().contains("temp"), "{m:?}");
        assert_eq!(col(m, "pause_us"), None, "{m:?}");
    }
    // And the session is where it was, its table with it.
    client
        .batch_execute("INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_backend_is_named_even_during_a_move() {
    let servers = start_servers(2).await;
    let proxy = foreign_proxy(&[&servers[0], &servers[1]], ADMIN).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;
    let client = proxy.connect_app("postgres", "postgres", "busy").await;
    // In a transaction, so the move waits for its safe point.
    client.batch_execute("BEGIN").await.unwrap();
    let e = entry(&proxy, "busy").await;
    let moving = {
        let e = e.clone();
        tokio::spawn(async move { e.migrate(request("pg2")).await })
    };
    wait_for("the move to be waiting", || async {
        admin(&console, "SHOW MIGRATIONS")
            .await
            .unwrap()
            .iter()
            .any(|m| col(m, "status") == Some("waiting"))
    })
    .await;
    let err = must_fail(
        admin(&console, &format!("MIGRATE SESSION {} TO nosuch", e.id)).await,
        "an unknown backend",
    );
    assert_eq!(sqlstate(&err), "42704", "{err:?}");
    // A real second move is told the first is in progress.
    let err = must_fail(
        admin(&console, &format!("MIGRATE SESSION {} TO pg2", e.id)).await,
        "a second move",
    );
    assert_eq!(sqlstate(&err), "55006", "{err:?}");
    client.batch_execute("COMMIT").await.unwrap();
    let moved = moving.await.unwrap().expect("the first move completes");
    assert_eq!(moved.to, "pg2");
}
