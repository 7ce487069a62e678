//! The real switchover: a primary and its streaming standby (the same
//! cluster: same system identifier, so no `foreign` marking is needed and
//! statements with the cluster's own types move too). Clients write through
//! pgbaton, the standby catches up and is promoted, `SCALE OUT TO pg2` moves
//! everyone, and every client goes on with the same data on the new primary.

use crate::harness::{start_servers, TestProxy, TestServer};
use crate::migrate::{
    admin, col, connect_watched, drain, entry, one, rows, wait_for, where_is, ADMIN,
};
use bytes::BytesMut;
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
                .sessions
                .list()
                .iter()
                .filter(|e| e.application_name.starts_with('c'))
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
