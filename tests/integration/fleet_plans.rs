//! Fleet II: replicas of real pgbaton processes on one etcd, with three
//! Postgres servers as pg1, pg2 and pg3. Contradicting moves asked of two
//! replicas at the same moment, fleet-wide scale-out under pgbench, a
//! leader killed mid-plan, a replica paused at the barrier, cancels sent
//! to the wrong replica, and changes the fleet must refuse. The history
//! checker runs on what the replicas wrote (I1–I5).

use crate::harness::etcd::TestEtcd;
use crate::harness::fleet::Fleet;
use crate::harness::{col, start_servers, wait_for, wait_for_value, where_is, TestServer};
use futures_util::StreamExt;
use pgbaton::cluster::history;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Client, NoTls};

type Row = HashMap<String, Option<String>>;

struct World {
    servers: Vec<TestServer>,
    _etcd: TestEtcd,
    fleet: Fleet,
}

impl World {
    /// Three servers, an etcd, and replicas `ids` configured with all
    /// three servers; `top` goes at the top of each configuration.
    async fn start(ids: &[&str], top: &str) -> World {
        let servers = start_servers(3).await;
        let etcd = TestEtcd::start(1).await;
        let addrs: Vec<String> = servers.iter().map(|s| s.addr()).collect();
        let backends: Vec<(&str, &str)> = ["pg1", "pg2", "pg3"]
            .into_iter()
            .zip(addrs.iter().map(String::as_str))
            .collect();
        let mut fleet = Fleet::with_backends(&etcd.url(), &backends);
        fleet.top = top.to_string();
        for id in ids {
            fleet.start(id).await;
        }
        // Every replica sees every other before anything is asked.
        for i in 0..ids.len() {
            wait_for("the whole fleet registered", || async {
                fleet.cluster(i).await.is_some_and(|r| r.len() == ids.len())
            })
            .await;
        }
        World {
            servers,
            _etcd: etcd,
            fleet,
        }
    }

    fn port(&self, backend: &str) -> u16 {
        let i: usize = backend[2..].parse().unwrap();
        self.servers[i - 1].port()
    }
}

/// `SHOW PLANS` at replica `i`: the current plan's id and state.
async fn plan_at(fleet: &Fleet, i: usize) -> Option<(String, String, Vec<Row>)> {
    let rows = fleet.admin(i, "SHOW PLANS").await.ok()?;
    let first = rows.first()?;
    Some((
        col(first, "plan")?.to_string(),
        col(first, "state")?.to_string(),
        rows.clone(),
    ))
}

/// Waits until replicas `at` all show one of plans `ids` as done, and
/// returns it with its rows at the first of them.
async fn wait_done(fleet: &Fleet, at: &[usize], ids: &[&str]) -> (String, Vec<Row>) {
    wait_for_value("the plan done at every replica", || async {
        let mut seen: Option<(String, Vec<Row>)> = None;
        for &i in at {
            let (plan, state, rows) = plan_at(fleet, i).await?;
            if state != "done" || !ids.contains(&plan.as_str()) {
                return None;
            }
            if seen.as_ref().is_some_and(|(p, _)| *p != plan) {
                return None;
            }
            seen.get_or_insert((plan, rows));
        }
        seen
    })
    .await
}

/// A client of replica `i` whose notices are collected.
async fn watched(
    fleet: &Fleet,
    i: usize,
    app: &str,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name={app}",
        fleet.replicas[i].port
    );
    let (client, mut connection) = tokio_postgres::connect(&conn, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    (client, rx)
}

/// Sends a `from=` comment and returns the plan id its NOTICE names.
async fn comment(
    client: &Client,
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    from: &str,
    to: &str,
) -> String {
    let sql = format!("/* pgbaton: migrate from={from} to={to} */;");
    let answer = client.simple_query(&sql).await.unwrap();
    let tags = answer
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_)))
        .count();
    assert_eq!(tags, 1, "{sql} is answered once");
    let notice = tokio::time::timeout(Duration::from_secs(10), notices.recv())
        .await
        .expect("the comment's notice")
        .unwrap();
    let id = notice
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no plan id in {notice:?}"));
    id.to_string()
}

/// The sessions of one replica that the loop moves: each carries state.
async fn stateful(fleet: &Fleet, i: usize, app: &str) -> Client {
    let c = fleet.client_app(i, app).await;
    c.batch_execute(&format!(
        "SET TimeZone = 'Asia/Tokyo'; SET myapp.tag = '{app}'; PREPARE q(int) AS SELECT $1 + 1"
    ))
    .await
    .unwrap();
    c
}

/// Each session answers on `port` with its state, and its next statement
/// is answered once, in order (nothing lost, nothing run twice).
async fn check_sessions(sessions: &[(String, Client)], port: u16, round: i32) {
    for (app, c) in sessions {
        let (_, on) = where_is(c).await;
        assert_eq!(on, port, "{app} in round {round}");
        let row = c
            .query_one(
                "SELECT current_setting('TimeZone'), current_setting('myapp.tag'), $1::int",
                &[&round],
            )
            .await
            .unwrap();
        let (tz, tag, n): (String, String, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((tz.as_str(), tag.as_str(), n), ("Asia/Tokyo", app.as_str(), round));
        let v: i32 = c.query_one("EXECUTE q(41)", &[]).await.unwrap().get(0);
        assert_eq!(v, 42, "{app}'s prepared statement after round {round}");
    }
}

/// Client backends of the loop's sessions on a server.
async fn loop_backends_on(server: &TestServer) -> i64 {
    let direct = server.connect_direct("postgres").await;
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'loop-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

fn assert_history(fleet: &Fleet, live: &[&str]) {
    let events = fleet.events();
    let mut bad = history::check(&events, false);
    bad.extend(history::check_conflicts(&events));
    bad.extend(history::check_converged(&events, live));
    assert!(bad.is_empty(), "the history breaks invariants: {bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_moves_at_two_replicas_settle_on_one_target_every_time() {
    let w = World::start(&["a", "b", "c"], "").await;
    let fleet = &w.fleet;
    let (ask_a, mut notices_a) = watched(fleet, 0, "loop-ask-a").await;
    let (ask_b, mut notices_b) = watched(fleet, 1, "loop-ask-b").await;
    let mut sessions: Vec<(String, Client)> = Vec::new();
    for (i, r) in ["a", "b", "c"].iter().enumerate() {
        for k in 0..2 {
            let app = format!("loop-{r}{k}");
            sessions.push((app.clone(), stateful(fleet, i, &app).await));
        }
    }
    let mut wins: BTreeMap<String, usize> = BTreeMap::new();
    const ROUNDS: i32 = 50;
    for round in 1..=ROUNDS {
        // Both at the same moment, give or take up to 20 ms either way.
        let offset = Duration::from_micros(rand::random::<u64>() % 20_000);
        let a_first = rand::random::<bool>();
        let (pa, pb) = tokio::join!(
            async {
                if !a_first {
                    tokio::time::sleep(offset).await;
                }
                comment(&ask_a, &mut notices_a, "pg1", "pg2").await
            },
            async {
                if a_first {
                    tokio::time::sleep(offset).await;
                }
                comment(&ask_b, &mut notices_b, "pg1", "pg3").await
            }
        );
        let (winner, _) = wait_done(fleet, &[0, 1, 2], &[&pa, &pb]).await;
        assert!(
            winner == pa || winner == pb,
            "round {round}: the plan done is {winner}, neither {pa} nor {pb}"
        );
        let (target, loser_id) = if winner == pa {
            ("pg2", &pb)
        } else {
            ("pg3", &pa)
        };
        let loser = if target == "pg2" { "pg3" } else { "pg2" };
        // The loser lost a conflict, which every replica shows resolved.
        for i in 0..3 {
            wait_for("the losing proposal resolved at every replica", || async {
                let rows = fleet.admin(i, "SHOW CONFLICTS").await.unwrap();
                rows.iter().all(|r| col(r, "kind") != Some("report"))
                    && rows.iter().any(|r| {
                        col(r, "plan") == Some(loser_id.as_str())
                            && col(r, "acknowledged") == Some("yes")
                    })
            })
            .await;
        }
        *wins.entry(target.to_string()).or_default() += 1;
        check_sessions(&sessions, w.port(target), round).await;
        for ask in [&ask_a, &ask_b] {
            assert_eq!(where_is(ask).await.1, w.port(target), "round {round}");
        }
        assert_eq!(
            loop_backends_on(&w.servers[if loser == "pg2" { 1 } else { 2 }]).await,
            0,
            "round {round}: no session ever reached the loser {loser}"
        );
        // Back to pg1 for the next round, asked at the third replica.
        let back = fleet
            .admin(2, &format!("MIGRATE ALL FROM {target} TO pg1"))
            .await
            .unwrap();
        let id = col(&back[0], "plan").unwrap().to_string();
        wait_done(fleet, &[0, 1, 2], &[&id]).await;
        check_sessions(&sessions, w.port("pg1"), round).await;
    }
    println!("conflict loop: {ROUNDS} rounds, winners {wins:?}");
    assert_eq!(wins.values().sum::<usize>(), ROUNDS as usize);
    assert_history(fleet, &["a", "b", "c"]);
}
