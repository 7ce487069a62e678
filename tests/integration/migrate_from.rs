//! The comment's `from=` (an admin's fleet-wide move of one backend's
//! sessions): answered exactly once, the statement after it run, and the
//! forms that cannot mean anything refused.

use crate::harness::{connect_watched, foreign_proxy, rows, wait_for, where_is, ADMIN};
use crate::harness::{must_fail, sqlstate, start_servers};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

/// Bounds a broken run only: the answer normally comes at once; before the
/// fix it never ended (the reply was repeated forever).
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// The command tags of `sql`'s answer.
async fn tags(client: &tokio_postgres::Client, sql: &str) -> Vec<u64> {
    let msgs = tokio::time::timeout(ANSWER_LIMIT, client.simple_query(sql))
        .await
        .expect("answered in time")
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_moves_a_backends_sessions_and_answers_once() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], ADMIN).await;
    let (admin, mut notices) = connect_watched(&proxy, "postgres", "postgres", "admin").await;
    let other = proxy.connect_app("postgres", "postgres", "other").await;

    // A bare comment: one NOTICE, one `MIGRATE n`, one ReadyForQuery.
    assert_eq!(
        tags(&admin, "/* pgbaton: migrate from=pg1 to=pg2 */;")
            .await
            .len(),
        1
    );
    let notice = crate::harness::next_notice(&mut notices).await;
    assert!(notice.contains("from pg1 to pg2"), "{notice}");
    wait_for("the other session to reach pg2", || {
        let other = &other;
        async move { where_is(other).await.1 == s2.port() }
    })
    .await;
    assert_eq!(rows(&admin, "SELECT 1").await, vec![vec![Some("1".into())]]);

    // With a statement after it: the statement runs, once.
    let r = tokio::time::timeout(
        ANSWER_LIMIT,
        rows(&admin, "/* pgbaton: migrate from=pg2 to=pg1 */ SELECT 42"),
    )
    .await
    .expect("answered in time");
    assert_eq!(r, vec![vec![Some("42".into())]]);
    wait_for("the other session to be back on pg1", || {
        let other = &other;
        async move { where_is(other).await.1 == s1.port() }
    })
    .await;

    // From nowhere: still one answer, zero sessions.
    let none = tags(&admin, "/* pgbaton: migrate from=pg2 to=pg1 */;").await;
    assert_eq!(none.len(), 1);

    // The same backend on both sides, a dry run, an unknown backend.
    for (sql, code) in [
        ("/* pgbaton: migrate from=pg1 to=pg1 */;", "22023"),
        ("/* pgbaton: migrate from=pg1 to=pg2 dry_run */;", "0A000"),
        ("/* pgbaton: migrate from=pg9 to=pg2 */;", "42704"),
    ] {
        let e = must_fail(admin.simple_query(sql).await, sql);
        assert_eq!(sqlstate(&e), code, "{sql}");
    }
    assert_eq!(where_is(&other).await.1, s1.port(), "nothing moved");
    other.simple_query("SELECT 1").await.unwrap();
}
