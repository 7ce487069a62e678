//! A prepared statement whose table was dropped does not pin its session:
//! the move defers it, and it is prepared on the new server at its first
//! use, answering the error the old server would have given while the
//! table is missing, and working again once it is back.

use crate::harness::{entry, foreign_proxy, on_all, one, rows, tag_count, where_is};
use crate::harness::{must_fail, sqlstate, start_servers, Raw};
use tokio_postgres::SimpleQueryMessage;

/// `sql` fails with `code` (tokio-postgres reports a simple query's first
/// error; the tests after it show the session still answering).
async fn fails_with(client: &tokio_postgres::Client, sql: &str, code: &str) {
    let e = must_fail(client.simple_query(sql).await, sql);
    assert_eq!(sqlstate(&e), code, "{sql}: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_table_is_gone_moves_and_is_prepared_at_first_use() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)",
    );
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let client = proxy.connect_app("postgres", "postgres", "lazy").await;
    let by_protocol = client.prepare("SELECT x FROM t ORDER BY x").await.unwrap();
    client
        .batch_execute(
            "PREPARE by_sql AS SELECT count(*) FROM t; PREPARE gone AS SELECT x FROM t; PREPARE fine AS SELECT 1",
        )
        .await
        .unwrap();
    // The table goes away (on both: on the old server too, where the
    // statements stay prepared and would fail when executed).
    on_all(&[s1, s2], "DROP TABLE t");
    fails_with(&client, "EXECUTE by_sql", "42P01").await;

    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1,
        "the statements do not pin the session"
    );
    assert_eq!(where_is(&client).await.1, s2.port());
    let ledger = entry(&proxy, "lazy").await.ledger().await.unwrap();
    let deferred: Vec<&str> = ledger
        .rows
        .iter()
        .filter(|r| r.on_move.starts_with("deferred"))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(deferred.len(), 3, "{:?}", ledger.rows);
    assert!(deferred.contains(&"by_sql") && deferred.contains(&"gone"));

    // While the table is missing: the old server's error, once, and the
    // session goes on (outside and inside a transaction).
    let e = must_fail(
        client.query(&by_protocol, &[]).await,
        "the protocol statement",
    );
    assert_eq!(sqlstate(&e), "42P01", "{e:?}");
    fails_with(&client, "EXECUTE by_sql", "42P01").await;
    client.batch_execute("BEGIN").await.unwrap();
    fails_with(&client, "EXECUTE by_sql", "42P01").await;
    fails_with(&client, "SELECT 1", "25P02").await;
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        rows(&client, "EXECUTE fine").await,
        vec![vec![Some("1".into())]]
    );
    // DEALLOCATE works as on the old server, table or not.
    let msgs = client.simple_query("DEALLOCATE gone").await.unwrap();
    assert!(matches!(
        msgs.last(),
        Some(SimpleQueryMessage::CommandComplete(_))
    ));
    fails_with(&client, "EXECUTE gone", "26000").await;

    // The table is back: the statements work again.
    s2.psql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (7)",
    );
    let r = client.query(&by_protocol, &[]).await.unwrap();
    assert_eq!(
        r.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [7]
    );
    assert_eq!(one(&client, "EXECUTE by_sql").await, "1");
    let r = client.query(&by_protocol, &[]).await.unwrap();
    assert_eq!(r.len(), 1, "prepared once, used again");
    let ledger = entry(&proxy, "lazy").await.ledger().await.unwrap();
    assert!(
        ledger
            .rows
            .iter()
            .all(|r| !r.on_move.starts_with("deferred")),
        "{:?}",
        ledger.rows
    );
    // And the ledger agrees with the server.
    let report = entry(&proxy, "lazy")
        .await
        .check(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    // Now they work here, so a move to pg1, which lacks their table, is
    // refused: only a statement that fails on the source too is deferred.
    let e = must_fail(
        client.simple_query("/* pgbaton: migrate to=pg1 */;").await,
        "a move that would break working statements",
    );
    assert_eq!(sqlstate(&e), "55000");
    assert_eq!(where_is(&client).await.1, s2.port());
    assert_eq!(one(&client, "EXECUTE by_sql").await, "1");
    // With the table there too, they move as ordinary statements.
    s1.psql(
        "postgres",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (8), (9)",
    );
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg1 */;").await,
        1
    );
    assert_eq!(one(&client, "EXECUTE by_sql").await, "2");
}

/// The tags of what `sql` gets back, and its ErrorResponses' codes.
async fn answer(raw: &mut Raw, sql: &str) -> (Vec<u8>, Vec<String>) {
    let msgs = raw.query(sql).await;
    let codes = msgs
        .iter()
        .filter(|m| m.tag == b'E')
        .map(|m| m.code().unwrap())
        .collect();
    (msgs.iter().map(|m| m.tag).collect(), codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_statement_answers_in_its_turn_in_a_simple_query() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(&[s1, s2], "CREATE TABLE t (x int); CREATE TABLE k (x int)");
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let (mut raw, _) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    raw.query("PREPARE a AS SELECT x FROM t; PREPARE a2 AS SELECT x FROM t")
        .await;
    on_all(&[s1, s2], "DROP TABLE t");
    let msgs = raw.query("/* pgbaton: migrate to=pg2 */;").await;
    assert!(msgs.iter().all(|m| m.tag != b'E'), "moved");

    // What comes before the statement runs and is answered first; the
    // deferred statement then fails as on the old server, once.
    let (tags, codes) = answer(&mut raw, "SELECT 1; EXECUTE a").await;
    assert_eq!(
        tags,
        b"TDCEZ".to_vec(),
        "{}",
        String::from_utf8_lossy(&tags)
    );
    assert_eq!(codes, ["42P01"]);
    let (tags, codes) = answer(&mut raw, "EXECUTE a; EXECUTE a2").await;
    assert_eq!((tags, codes), (b"EZ".to_vec(), vec!["42P01".to_string()]));
    // A statement that fails before it is the error, not the deferred one.
    let (_, codes) = answer(&mut raw, "SELECT 1/0; EXECUTE a").await;
    assert_eq!(codes, ["22012"]);
    // In a failed transaction the server's own answer stands.
    raw.query("BEGIN").await;
    let (_, codes) = answer(&mut raw, "SELECT 1/0").await;
    assert_eq!(codes, ["22012"]);
    let (_, codes) = answer(&mut raw, "EXECUTE a2").await;
    assert_eq!(codes, ["25P02"]);
    raw.query("ROLLBACK").await;
    // In an open transaction, a use after other statements is left to the
    // server (26000): pgbaton's Parse would run first and abort the
    // transaction before them. The COMMIT commits.
    raw.query("BEGIN").await;
    raw.query("INSERT INTO k VALUES (1)").await;
    let msgs = raw.query("COMMIT; EXECUTE a2").await;
    let done = msgs
        .iter()
        .find(|m| m.tag == b'C')
        .expect("the COMMIT's answer");
    assert_eq!(&done.body[..], b"COMMIT\0");
    let codes: Vec<_> = msgs
        .iter()
        .filter(|m| m.tag == b'E')
        .filter_map(|m| m.code())
        .collect();
    assert_eq!(codes, ["26000"]);
    let msgs = raw.query("SELECT count(*)::text FROM k").await;
    assert!(msgs
        .iter()
        .find(|m| m.tag == b'D')
        .unwrap()
        .body
        .ends_with(b"1"));
    // Prepared anew in the same query: its own errors are its own.
    let (_, codes) = answer(&mut raw, "PREPARE a2 AS SELECT 1/0; EXECUTE a2").await;
    assert_eq!(codes, ["22012"]);

    // Prepared anew under the same name: an ordinary statement from then on.
    raw.query("PREPARE a AS SELECT 2").await;
    let msgs = raw.query("EXECUTE a").await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(row.body.ends_with(b"2"));
    let (tags, codes) = answer(&mut raw, "EXECUTE a").await;
    assert!(codes.is_empty(), "{tags:?} {codes:?}");
}
