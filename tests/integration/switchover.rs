//! The real switchover: a primary and its streaming standby (the same
//! cluster: same system identifier, so no `foreign` marking is needed and
//! statements with the cluster's own types move too). Clients write through
//! pgbaton, the standby catches up and is promoted, `SCALE OUT TO pg2` moves
//! everyone, and every client goes on with the same data on the new primary.

use crate::harness::{
    admin, col, connect_watched, drain, entry, one, rows, wait_for, where_is, ADMIN,
};
use crate::harness::{start_servers, TestProxy, TestServer};
use bytes::BytesMut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::AsyncMessage;

/// The cluster's own enum type, as a Rust type (tokio-postgres looks up its
/// OID on the server and caches it: valid on any copy of the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mood {
    Ok,
    Great,
}

impl ToSql for Mood {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // An enum's binary form is its label.
        out.extend_from_slice(match self {
            Mood::Ok => b"ok".as_slice(),
            Mood::Great => b"great".as_slice(),
        });
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "mood"
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Mood {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Mood, Box<dyn std::error::Error + Sync + Send>> {
        match raw {
            b"ok" => Ok(Mood::Ok),
            b"great" => Ok(Mood::Great),
            other => Err(format!("not a mood: {other:?}").into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == "mood"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_the_standby_and_scale_out_to_it() {
    let mut servers = start_servers(1).await;
    let primary = &servers[0];
    primary.psql(
        "postgres",
        "CREATE TYPE mood AS ENUM ('ok', 'great');
         CREATE TABLE ledger (client int NOT NULL, n int NOT NULL, mood mood NOT NULL DEFAULT 'ok');",
    );
    let standby = tokio::task::block_in_place(|| primary.local().start_standby())
        .unwrap_or_else(|e| panic!("starting a standby: {e}"));
    servers.push(TestServer::Local(standby));
    let (primary, standby) = (&servers[0], &servers[1]);
    let proxy = TestProxy::start(TestProxy::config(&[primary, standby], ADMIN)).await;
    let console = proxy.connect("postgres", pgbaton::admin::DATABASE).await;

    // Four clients with different state, each writing its own rows on pg1.
    let (c0, _) = connect_watched(&proxy, "postgres", "postgres", "c0").await;
    c0.batch_execute(
        "SET myapp.tenant = 'acme';
         PREPARE add_row(int, int) AS INSERT INTO ledger (client, n) VALUES ($1, $2);",
    )
    .await
    .unwrap();
    let (c1, _) = connect_watched(&proxy, "postgres", "postgres", "c1").await;
    // A protocol statement whose parameter has the cluster's own type.
    let c1_insert = c1
        .prepare("INSERT INTO ledger (client, n, mood) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let (c2, mut c2_messages) = connect_watched(&proxy, "postgres", "postgres", "c2").await;
    c2.batch_execute("LISTEN ledger_events; SET TimeZone = 'Europe/Paris'")
        .await
        .unwrap();
    let (c3, _) = connect_watched(&proxy, "postgres", "postgres", "c3").await;
    c3.batch_execute("CREATE SCHEMA c3; SET search_path = c3, public")
        .await
        .unwrap();

    for n in 1..=3 {
        c0.batch_execute(&format!("EXECUTE add_row(0, {n})"))
            .await
            .unwrap();
        c1.execute(&c1_insert, &[&1i32, &n, &Mood::Great])
            .await
            .unwrap();
        c2.batch_execute(&format!("INSERT INTO ledger (client, n) VALUES (2, {n})"))
            .await
            .unwrap();
        c3.batch_execute(&format!("INSERT INTO ledger (client, n) VALUES (3, {n})"))
            .await
            .unwrap();
    }
    for c in [&c0, &c1, &c2, &c3] {
        assert_eq!(where_is(c).await.1, primary.port());
    }

    // The standby catches up with everything written so far.
    let direct_primary = primary.connect_direct("postgres").await;
    let direct_standby = standby.connect_direct("postgres").await;
    let lsn = one(&direct_primary, "SELECT pg_current_wal_lsn()::text").await;
    let probe = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::text");
    wait_for("the standby to replay the primary's WAL", || {
        let (d, probe) = (&direct_standby, &probe);
        async move { one(d, probe).await == "true" }
    })
    .await;
    assert_eq!(
        one(&direct_standby, "SELECT count(*) FROM ledger").await,
        "12"
    );
    // Same cluster: same system identifier.
    let sysid = "SELECT system_identifier::text FROM pg_control_system()";
    assert_eq!(
        one(&direct_primary, sysid).await,
        one(&direct_standby, sysid).await
    );

    tokio::task::block_in_place(|| standby.local().promote())
        .unwrap_or_else(|e| panic!("promoting the standby: {e}"));
    assert_eq!(
        one(&direct_standby, "SELECT pg_is_in_recovery()::text").await,
        "false"
    );

    let r = admin(&console, "SCALE OUT TO pg2").await.unwrap();
    assert_eq!(col(&r[0], "backend"), Some("pg2"));
    assert_eq!(col(&r[0], "sessions"), Some("4"), "{r:?}");
    let shared = proxy.shared.clone();
    wait_for("every session on pg2", || {
        let shared = shared.clone();
        async move {
            shared
                .env
                .sessions
                .list()
                .iter()
                .filter(|e| e.application_name().starts_with('c'))
                .all(|e| e.live().backend == "pg2" && e.live().migrations == 1)
        }
    })
    .await;
    let moves = admin(&console, "SHOW MIGRATIONS").await.unwrap();
    assert_eq!(moves.len(), 4, "{moves:?}");
    for m in &moves {
        assert_eq!(
            (col(m, "from"), col(m, "to"), col(m, "status")),
            (Some("pg1"), Some("pg2"), Some("done")),
            "{m:?}"
        );
    }

    // Every client is on the promoted server, reads its rows and writes new ones.
    for c in [&c0, &c1, &c2, &c3] {
        assert_eq!(where_is(c).await.1, standby.port());
    }
    assert_eq!(
        one(&c0, "SELECT current_setting('myapp.tenant')").await,
        "acme"
    );
    c0.batch_execute("EXECUTE add_row(0, 4)").await.unwrap();
    c1.execute(&c1_insert, &[&1i32, &4i32, &Mood::Ok])
        .await
        .unwrap();
    let moods: Vec<Mood> = c1
        .query("SELECT mood FROM ledger WHERE client = 1 ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(moods, [Mood::Great, Mood::Great, Mood::Great, Mood::Ok]);
    assert_eq!(one(&c2, "SHOW TimeZone").await, "Europe/Paris");
    c2.batch_execute("INSERT INTO ledger (client, n) VALUES (2, 4)")
        .await
        .unwrap();
    assert_eq!(one(&c3, "SHOW search_path").await, "c3, public");
    c3.batch_execute("CREATE TABLE c3.mine (x int); INSERT INTO ledger (client, n) VALUES (3, 4)")
        .await
        .unwrap();
    for (i, c) in [&c0, &c1, &c2, &c3].into_iter().enumerate() {
        assert_eq!(
            rows(
                c,
                &format!(
                    "SELECT string_agg(n::text, ',' ORDER BY n) FROM ledger WHERE client = {i}"
                )
            )
            .await,
            vec![vec![Some("1,2,3,4".to_string())]],
            "client {i}"
        );
    }
    // The new rows are on the new primary only.
    assert_eq!(
        one(&direct_standby, "SELECT count(*) FROM ledger").await,
        "16"
    );
    assert_eq!(
        one(&direct_primary, "SELECT count(*) FROM ledger").await,
        "12"
    );

    // LISTEN moved along: a NOTIFY on the new primary reaches c2.
    drain(&mut c2_messages);
    direct_standby
        .batch_execute("NOTIFY ledger_events, 'after switchover'")
        .await
        .unwrap();
    let note = loop {
        match tokio::time::timeout(Duration::from_secs(30), c2_messages.recv()).await {
            Ok(Some(AsyncMessage::Notification(n))) => break n,
            Ok(Some(_)) => continue,
            other => panic!("no notification: {other:?}"),
        }
    };
    assert_eq!(note.payload(), "after switchover");

    // New connections go to pg2.
    let fresh = proxy.connect("postgres", "postgres").await;
    assert_eq!(where_is(&fresh).await.1, standby.port());
    assert_eq!(one(&fresh, "SELECT count(*) FROM ledger").await, "16");
    let backends = admin(&console, "SHOW BACKENDS").await.unwrap();
    let pg2 = backends
        .iter()
        .find(|b| col(b, "name") == Some("pg2"))
        .unwrap();
    assert_eq!(col(pg2, "default"), Some("yes"), "{backends:?}");
    assert_eq!(entry(&proxy, "c0").await.live().migrations, 1);
}

/// Writers through pgbaton, each inserting its own numbered rows until told
/// to stop; each returns the numbers whose INSERT was acknowledged, and
/// counts in `refused[w]` the INSERTs refused as read-only.
fn writers(
    proxy: &TestProxy,
    stop: &Arc<AtomicBool>,
    refused: &Arc<Vec<AtomicU64>>,
) -> Vec<tokio::task::JoinHandle<Vec<i32>>> {
    (0..refused.len())
        .map(|w| {
            let conn = proxy.conn_str_app("postgres", "postgres", &format!("w{w}"));
            let (stop, refused) = (stop.clone(), refused.clone());
            tokio::spawn(async move {
                let (client, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .expect("a writer connects");
                tokio::spawn(conn);
                let mut acked = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sql = format!("INSERT INTO acked (writer, n) VALUES ({w}, {n})");
                    match client.simple_query(&sql).await {
                        Ok(_) => acked.push(n),
                        // Refused while the old primary is read-only: the
                        // writer goes on, as an application would retry.
                        Err(e) if e.code().map(|c| c.code()) == Some("25006") => {
                            refused[w].fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(2)).await
                        }
                        Err(e) => panic!("writer {w}: {e:?}"),
                    }
                }
                acked
            })
        })
        .collect()
}

/// The notices' texts queued on `rx` now, of `severity`.
fn reports(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>,
    severity: &str,
) -> Vec<String> {
    drain(rx)
        .into_iter()
        .filter_map(|m| match m {
            AsyncMessage::Notice(n) if n.severity() == severity => Some(n.message().to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_switchover_loses_nothing_and_a_hasty_one_is_warned() {
    let mut servers = start_servers(1).await;
    servers[0].psql(
        "postgres",
        "CREATE TABLE acked (writer int NOT NULL, n int NOT NULL, PRIMARY KEY (writer, n))",
    );
    let standby = tokio::task::block_in_place(|| servers[0].local().start_standby())
        .unwrap_or_else(|e| panic!("starting a standby: {e}"));
    servers.push(TestServer::Local(standby));
    let (primary, standby) = (&servers[0], &servers[1]);
    let proxy = TestProxy::start(TestProxy::config(&[primary, standby], ADMIN)).await;
    let (console, mut console_notes) =
        connect_watched(&proxy, "postgres", pgbaton::admin::DATABASE, "console").await;
    let stop = Arc::new(AtomicBool::new(false));
    let refused: Arc<Vec<AtomicU64>> = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect());
    let running = writers(&proxy, &stop, &refused);
    let direct_primary = primary.connect_direct("postgres").await;
    let direct_standby = standby.connect_direct("postgres").await;
    wait_for("the writers to commit on pg1", || async {
        one(&direct_primary, "SELECT (count(*) > 100)::text FROM acked").await == "true"
    })
    .await;

    // The README's switchover. 1: stop writes on the old primary.
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on; SELECT pg_reload_conf()",
    );
    // A writer's session has read the new default once a write of its
    // fails; from then on nothing it sends can commit on pg1.
    wait_for("every writer to be refused on pg1", || async {
        refused.iter().all(|r| r.load(Ordering::Relaxed) > 0)
    })
    .await;
    // 2: wait until the standby has replayed everything pg1 wrote.
    let lsn = one(&direct_primary, "SELECT pg_current_wal_lsn()::text").await;
    let probe = format!("SELECT (pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn)::text");
    wait_for("the standby to replay pg1's last WAL", || {
        let (d, probe) = (&direct_standby, &probe);
        async move { one(d, probe).await == "true" }
    })
    .await;
    // 3: promote. 4: move everyone.
    tokio::task::block_in_place(|| standby.local().promote())
        .unwrap_or_else(|e| panic!("promoting the standby: {e}"));
    admin(&console, "SCALE OUT TO pg2").await.unwrap();
    assert!(
        reports(&mut console_notes, "WARNING").is_empty(),
        "the careful switchover is not warned about"
    );
    wait_for("every writer on pg2", || async {
        proxy
            .shared
            .env
            .sessions
            .list()
            .iter()
            .filter(|e| e.application_name().starts_with('w'))
            .all(|e| e.live().backend == "pg2")
    })
    .await;
    // Writes go on on pg2; then stop.
    let before = one(&direct_standby, "SELECT count(*)::text FROM acked").await;
    wait_for("writes on pg2", || async {
        one(&direct_standby, "SELECT count(*)::text FROM acked").await != before
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for (w, r) in running.into_iter().enumerate() {
        let mine = r.await.unwrap();
        acked += mine.len();
        let sql = format!("SELECT count(*)::text FROM acked WHERE writer = {w}");
        assert_eq!(
            one(&direct_standby, &sql).await,
            mine.len().to_string(),
            "writer {w}"
        );
    }
    // Every acknowledged row is on the new primary, none on the old one only.
    assert_eq!(
        one(&direct_standby, "SELECT count(*)::text FROM acked").await,
        acked.to_string()
    );
    let on_old = one(&direct_primary, "SELECT count(*)::text FROM acked").await;
    let old_rows: i64 = on_old.parse().unwrap();
    assert!(
        old_rows > 0 && (old_rows as usize) < acked,
        "{old_rows} of {acked}"
    );

    // A hasty move: pg1 takes writes again while pg2 does too.
    primary.psql(
        "postgres",
        "ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf()",
    );
    wait_for("pg1 to take writes again", || async {
        primary
            .psql("postgres", "SHOW default_transaction_read_only")
            .trim()
            == "off"
    })
    .await;
    let (hasty, mut notes) = connect_watched(&proxy, "postgres", "postgres", "hasty").await;
    assert_eq!(where_is(&hasty).await.1, standby.port());
    assert_eq!(
        crate::harness::tag_count(&hasty, "/* pgbaton: migrate to=pg1 */;").await,
        1,
        "the move is done"
    );
    let warned = reports(&mut notes, "WARNING");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("both accept writes"), "{warned:?}");
    // And from the console, before every session of pg1 moves back.
    admin(&console, "MIGRATE ALL FROM pg1 TO pg2")
        .await
        .unwrap();
    let warned = reports(&mut console_notes, "WARNING");
    assert!(
        warned.len() == 1 && warned[0].contains("pg1 and pg2 are copies"),
        "{warned:?}"
    );
}
