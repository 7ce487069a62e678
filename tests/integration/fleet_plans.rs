//! Fleet II: replicas of real pgbaton processes on one etcd, with three
//! Postgres servers as pg1, pg2 and pg3. Contradicting moves asked of two
//! replicas at the same moment, fleet-wide scale-out under pgbench, a
//! leader killed mid-plan, a replica paused at the barrier, cancels sent
//! to the wrong replica, and changes the fleet must refuse. The history
//! checker runs on what the replicas wrote (I1–I5).

use crate::harness::etcd::TestEtcd;
use crate::harness::fleet::{Fleet, TTL};
use crate::harness::programs::{pgbench, show};
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
        assert_eq!(
            (tz.as_str(), tag.as_str(), n),
            ("Asia/Tokyo", app.as_str(), round)
        );
        let v: i32 = c.query_one("EXECUTE q(41)", &[]).await.unwrap().get(0);
        assert_eq!(v, 42, "{app}'s prepared statement after round {round}");
    }
}

/// Client backends of the loop's sessions on a server.
async fn loop_backends_on(server: &TestServer) -> i64 {
    backends_like(server, "loop-%", false).await
}

/// Backends on `server` whose application_name is LIKE `pattern` (only
/// those running a statement when `active`).
async fn backends_like(server: &TestServer, pattern: &str, active: bool) -> i64 {
    let direct = server.connect_direct("postgres").await;
    direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 \
             AND (NOT $2 OR state = 'active')",
            &[&pattern, &active],
        )
        .await
        .unwrap()
        .get(0)
}

/// I6, checked on the source server itself: once the plan is done, no
/// session of `pattern` runs a statement there, and its old backends go.
async fn nothing_left_on(server: &TestServer, pattern: &str) {
    assert_eq!(
        backends_like(server, pattern, true).await,
        0,
        "I6: a {pattern} session ran on its source after the plan was done"
    );
    wait_for("the source's old backends gone", || async {
        backends_like(server, pattern, false).await == 0
    })
    .await;
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
    let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
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
        let rows = fleet.admin(0, "SHOW CONFLICTS").await.unwrap();
        let why = rows
            .iter()
            .find(|r| col(r, "plan") == Some(loser_id.as_str()))
            .and_then(|r| col(r, "reason"))
            .unwrap_or("");
        let rule = if why.contains("sorts before") {
            "same moment: lower target"
        } else if why.contains("earlier") {
            "earlier proposal"
        } else {
            "other"
        };
        *rules.entry(rule).or_default() += 1;
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
    println!("conflict loop: {ROUNDS} rounds, winners {wins:?}, decided by {rules:?}");
    assert_eq!(rules.get("other"), None, "{rules:?}");
    assert_eq!(wins.values().sum::<usize>(), ROUNDS as usize);
    assert_history(fleet, &["a", "b", "c"]);
}

/// The sessions replica `i` shows: (application_name, backend).
async fn sessions_at(fleet: &Fleet, i: usize) -> Vec<(String, String)> {
    fleet
        .admin(i, "SHOW SESSIONS")
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some((
                col(r, "application_name")?.to_string(),
                col(r, "backend")?.to_string(),
            ))
        })
        .collect()
}

/// The sessions replica `i` shows, by application_name: its backend.
async fn backends_at(fleet: &Fleet, i: usize) -> BTreeMap<String, String> {
    sessions_at(fleet, i).await.into_iter().collect()
}

async fn running_on(server: &TestServer, app: &str) -> bool {
    let direct = server.connect_direct("postgres").await;
    let n: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_replica_cancels_the_query_where_it_runs() {
    let w = World::start(&["a", "b", "c"], "").await;
    let fleet = &w.fleet;
    let client = fleet.client_app(0, "cancel-me").await;
    for (via, on) in [(1, "pg1"), (2, "pg2")] {
        if on == "pg2" {
            // Moved first: the cancel must find the session's new server.
            let r = fleet.admin(0, "MIGRATE ALL FROM pg1 TO pg2").await.unwrap();
            let id = col(&r[0], "plan").unwrap().to_string();
            wait_done(fleet, &[0, 1, 2], &[&id]).await;
            assert_eq!(where_is(&client).await.1, w.port("pg2"));
        }
        let server = &w.servers[if on == "pg1" { 0 } else { 1 }];
        let token = client.cancel_token();
        let port = fleet.replicas[via].port;
        let (r, _) = tokio::join!(client.simple_query("SELECT pg_sleep(60)"), async {
            wait_for("the query running on its server", || {
                running_on(server, "cancel-me")
            })
            .await;
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            token.cancel_query_raw(tcp, NoTls).await.unwrap();
        });
        let e = r.expect_err("the query was cancelled");
        assert_eq!(
            crate::harness::sqlstate(&e),
            "57014",
            "cancelled through replica {} on {on}: {e:?}",
            fleet.replicas[via].id
        );
        // The session goes on.
        assert_eq!(where_is(&client).await.1, server.port());
    }
    let stats = fleet.admin(1, "SHOW STATS").await.unwrap();
    let forwarded = stats
        .iter()
        .find(|r| col(r, "name") == Some("cancels_forwarded"))
        .and_then(|r| col(r, "value"));
    assert_eq!(forwarded, Some("1"), "b forwarded one cancel: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_under_pgbench_on_three_replicas_loses_no_transaction() {
    let w = World::start(&["a", "b", "c"], "").await;
    let fleet = &w.fleet;
    for s in &w.servers[..2] {
        let port = s.port().to_string();
        let o = pgbench(&port, &["-i", "-s", "1", "-q"]).await;
        assert!(o.status.success(), "pgbench -i: {}", show(&o));
    }
    // 60 clients, 20 at each replica, selects only (pg1 and pg2 hold the
    // same tables, not the same server).
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let port = fleet.replicas[i].port.to_string();
            tokio::spawn(async move {
                pgbench(&port, &["-n", "-S", "-c", "20", "-j", "2", "-T", "12"]).await
            })
        })
        .collect();
    for i in 0..3 {
        wait_for("20 pgbench sessions at each replica", || async {
            sessions_at(fleet, i).await.len() >= 20
        })
        .await;
    }
    let r = fleet.admin(0, "SCALE OUT TO pg2").await.unwrap();
    let id = col(&r[0], "plan").unwrap().to_string();
    let (_, rows) = wait_done(fleet, &[0, 1, 2], &[&id]).await;
    // When the plan says done, every session at every replica is on pg2.
    for i in 0..3 {
        let on = sessions_at(fleet, i).await;
        assert!(
            on.iter().all(|(_, b)| b == "pg2") && on.len() >= 20,
            "replica {}: {on:?}",
            fleet.replicas[i].id
        );
    }
    let moved: usize = rows
        .iter()
        .filter_map(|r| col(r, "moved")?.parse::<usize>().ok())
        .sum();
    assert_eq!(moved, 60, "{rows:?}");
    nothing_left_on(&w.servers[0], "pgbench%").await;
    for run in runs {
        let o = run.await.unwrap();
        let text = show(&o);
        assert!(o.status.success(), "{text}");
        assert!(text.contains("number of failed transactions: 0"), "{text}");
    }
    assert_history(fleet, &["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_survives_its_leader_killed_mid_move() {
    let w = World::start(&["a", "b", "c"], "migration_wait = \"30s\"").await;
    let pg2 = w.port("pg2");
    let (_servers, _etcd, mut fleet) = (w.servers, w._etcd, w.fleet);
    let leader = fleet.agreed_leader(&[0, 1, 2], &["a", "b", "c"]).await;
    let l = fleet.index(&leader);
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let mut idle = Vec::new();
    let mut busy = Vec::new();
    for &i in &others {
        for k in 0..3 {
            let app = format!("idle-{}{k}", fleet.replicas[i].id);
            idle.push((app.clone(), stateful(&fleet, i, &app).await));
        }
        // An open transaction holds the plan executing until it ends.
        let app = format!("busy-{}", fleet.replicas[i].id);
        let c = stateful(&fleet, i, &app).await;
        c.batch_execute("BEGIN; SELECT 1").await.unwrap();
        busy.push((app, c));
    }
    let r = fleet
        .admin(others[0], "MIGRATE ALL FROM pg1 TO pg2")
        .await
        .unwrap();
    let id = col(&r[0], "plan").unwrap().to_string();
    // Mid-move: the idle sessions moved, the busy ones wait.
    for &i in &others {
        wait_for("the idle sessions moved, the busy one waiting", || async {
            plan_at(&fleet, i).await.is_some_and(|(p, state, rows)| {
                p == id
                    && state == "executing"
                    && others.iter().all(|&o| {
                        let node = fleet.replicas[o].id.as_str();
                        rows.iter().any(|r| {
                            col(r, "node") == Some(node)
                                && col(r, "moved") == Some("3")
                                && col(r, "waiting") == Some("1")
                        })
                    })
            })
        })
        .await;
    }
    fleet.kill9(l).await;
    let survivors: Vec<&str> = others
        .iter()
        .map(|&i| fleet.replicas[i].id.as_str())
        .collect();
    let next = fleet.agreed_leader(&others, &survivors).await;
    for (_, c) in &busy {
        c.batch_execute("COMMIT").await.unwrap();
    }
    let (_, rows) = wait_done(&fleet, &others, &[&id]).await;
    let note = col(&rows[0], "note").unwrap_or("");
    assert!(
        note.contains(&leader),
        "the new leader {next} stopped waiting for the killed {leader}: {rows:?}"
    );
    // Nobody half-moved: every session is where its replica says, on pg2,
    // with its state.
    let mut all = idle;
    all.extend(busy);
    check_sessions(&all, pg2, 1).await;
    for &i in &others {
        assert!(backends_at(&fleet, i).await.values().all(|b| b == "pg2"));
    }
    for pattern in ["idle-%", "busy-%"] {
        nothing_left_on(&_servers[0], pattern).await;
    }
    let events = fleet.events();
    let terms: Vec<u64> = events
        .iter()
        .filter(|e| {
            e.detail.starts_with(&id) && (e.event == "plan_executing" || e.event == "plan_done")
        })
        .map(|e| e.term)
        .collect();
    assert!(
        terms.len() == 2 && terms[0] < terms[1],
        "committed by one term, closed by a later one: {terms:?}"
    );
    assert_history(&fleet, &survivors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_barrier_waits_out_a_paused_replica_then_it_catches_up() {
    let w = World::start(&["a", "b", "c"], "").await;
    let fleet = &w.fleet;
    let leader = fleet.agreed_leader(&[0, 1, 2], &["a", "b", "c"]).await;
    // Pause a follower; ask the other one.
    let paused = (0..3).find(|&i| fleet.replicas[i].id != leader).unwrap();
    let asked = (0..3)
        .find(|&i| i != paused && fleet.replicas[i].id != leader)
        .unwrap();
    let live = [asked, fleet.index(&leader)];
    let mut sessions = Vec::new();
    for i in 0..3 {
        let app = format!("bar-{}", fleet.replicas[i].id);
        sessions.push((app.clone(), stateful(fleet, i, &app).await));
    }
    let stopped_at = history::mono_us();
    fleet.signal(paused, libc::SIGSTOP);
    let r = fleet
        .admin(asked, "MIGRATE ALL FROM pg1 TO pg2")
        .await
        .unwrap();
    let id = col(&r[0], "plan").unwrap().to_string();
    let (_, rows) = wait_done(fleet, &live, &[&id]).await;
    let name = &fleet.replicas[paused].id;
    let note = col(&rows[0], "note").unwrap_or("");
    assert!(note.contains(name.as_str()), "{rows:?}");
    // Its lease had to expire (at least one TTL after its last renewal,
    // which was before the pause less a third of a TTL) and the grace (one
    // TTL) pass: the plan cannot be done sooner.
    let done_at = fleet
        .events()
        .iter()
        .find(|e| e.event == "plan_done" && e.detail.starts_with(&id))
        .map(|e| e.mono_us)
        .unwrap();
    let waited = Duration::from_micros(done_at - stopped_at);
    assert!(waited >= TTL * 5 / 3, "done {waited:?} after the pause");
    fleet.signal(paused, libc::SIGCONT);
    // Back, it sees the plan done without it, and moves its own session.
    wait_for(
        "the paused replica's session moved after it came back",
        || async {
            backends_at(fleet, paused).await.get(&format!("bar-{name}")) == Some(&"pg2".to_string())
        },
    )
    .await;
    check_sessions(&sessions, w.port("pg2"), 1).await;
    assert_history(fleet, &["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_the_fleet_cannot_carry_are_refused_and_nothing_is_written() {
    let w = World::start(&["a", "b"], "").await;
    let fleet = &w.fleet;
    let revision = |rows: &[Row]| col(&rows[0], "revision").map(str::to_string);
    let before = fleet.admin(0, "SHOW BACKENDS").await.unwrap();

    // A plan naming an unknown backend.
    let e = fleet
        .admin(0, "MIGRATE ALL FROM pg1 TO pg9")
        .await
        .expect_err("unknown backend");
    assert_eq!(crate::harness::sqlstate(&e), "42704", "{e:?}");
    assert!(fleet.admin(1, "SHOW PLANS").await.unwrap().is_empty());

    // A routing change that removes the backend b's sessions are on.
    let s = fleet.client_app(1, "on-pg3").await;
    let r = fleet.admin(1, "MIGRATE ALL FROM pg1 TO pg3").await.unwrap();
    let id = col(&r[0], "plan").unwrap().to_string();
    wait_done(fleet, &[0, 1], &[&id]).await;
    assert_eq!(where_is(&s).await.1, w.port("pg3"));
    let addrs: Vec<String> = w.servers.iter().map(|s| s.addr()).collect();
    fleet.rewrite("a", &[("pg1", &addrs[0]), ("pg2", &addrs[1])]);
    wait_for("b's load reported to the fleet", || async {
        let rows = fleet.admin(0, "SHOW BACKENDS").await.unwrap();
        rows.iter()
            .any(|r| col(r, "name") == Some("pg3") && col(r, "fleet_sessions") == Some("1"))
    })
    .await;
    let e = fleet
        .admin(0, "RELOAD")
        .await
        .expect_err("pg3 has a session");
    let text = crate::harness::err_text(&e);
    assert!(
        text.contains("pg3") && text.contains("1 at b") && text.contains("draining"),
        "{text}"
    );

    // A backend under its name at another address, at RELOAD and at start.
    let other = format!("127.0.0.1:{}", crate::harness::etcd::free_port());
    fleet.rewrite(
        "a",
        &[("pg1", &other), ("pg2", &addrs[1]), ("pg3", &addrs[2])],
    );
    let e = fleet.admin(0, "RELOAD").await.expect_err("pg1 moved");
    let text = crate::harness::err_text(&e);
    assert!(text.contains("pg1") && text.contains(&other), "{text}");
    let backends = vec![
        ("pg1".to_string(), other.clone()),
        ("pg2".to_string(), addrs[1].clone()),
        ("pg3".to_string(), addrs[2].clone()),
    ];
    let url = w._etcd.url();
    let (status, log) = fleet.run_once_with("d", &url, "", &backends).await;
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("disagrees with the fleet's routing") && log.contains(&other),
        "{log}"
    );
    // Nothing was written: the routing revision is the one before, and
    // the backends unchanged.
    let after = fleet.admin(1, "SHOW BACKENDS").await.unwrap();
    assert_eq!(revision(&before), revision(&after));
    assert_eq!(after.len(), 3);
    assert!(after
        .iter()
        .any(|r| col(r, "name") == Some("pg1")
            && col(r, "port") == Some(&*w.port("pg1").to_string())));
}
