//! Fleets of real pgbaton processes on one coordination store (a Postgres
//! control database, or etcd), with the history checker run on what they
//! wrote. Each scenario runs on both stores.

use crate::harness::etcd::TestEtcd;
use crate::harness::fleet::{Fleet, TTL};
use crate::harness::{col, start_servers, TestServer};
use pgbaton::cluster::history::{self, mono_us};
use pgbaton::cluster::records::LEADER;
use pgbaton::cluster::store::{self, Cond, TxnOutcome};
use pgbaton::config::StoreUrl;
use std::time::Duration;

#[derive(Clone, Copy)]
enum Kind {
    Postgres,
    Etcd,
}

struct Setup {
    server: TestServer,
    _etcd: Option<TestEtcd>,
    url: String,
}

async fn setup(kind: Kind) -> Setup {
    let server = start_servers(1).await.remove(0);
    match kind {
        Kind::Postgres => {
            let url = format!(
                "postgres://{}@{}/postgres",
                crate::harness::servers::superuser(),
                server.addr()
            );
            Setup {
                server,
                _etcd: None,
                url,
            }
        }
        Kind::Etcd => {
            let etcd = TestEtcd::start(1).await;
            let url = etcd.url();
            Setup {
                server,
                _etcd: Some(etcd),
                url,
            }
        }
    }
}

async fn failures_at(fleet: &Fleet, i: usize, node: &str) -> Option<u32> {
    let rows = fleet.cluster(i).await?;
    rows.iter()
        .find(|r| col(r, "node") == Some(node))
        .and_then(|r| col(r, "failures"))
        .and_then(|f| f.parse().ok())
}

fn elected_at(fleet: &Fleet, term: u64) -> pgbaton::cluster::history::Recorded {
    fleet
        .events()
        .into_iter()
        .find(|e| e.event == "elected" && e.term == term)
        .unwrap_or_else(|| panic!("nobody was elected to term {term}: {:?}", fleet.events()))
}

/// kill -9 of the leader: a successor within two lease TTLs, the dead
/// leader charged one failure, which it keeps when it comes back.
async fn a_killed_leader_is_replaced(kind: Kind) {
    let s = setup(kind).await;
    let mut fleet = Fleet::new(&s.url, &s.server.addr());
    let a = fleet.start("a").await;
    assert_eq!(fleet.agreed_leader(&[a], &["a"]).await, "a");
    let b = fleet.start("b").await;
    let c = fleet.start("c").await;
    fleet.agreed_leader(&[a, b, c], &["a"]).await;

    let killed = mono_us();
    fleet.kill9(a).await;
    // b and c both start one worse than the median: b joined first.
    assert_eq!(fleet.agreed_leader(&[b, c], &["b", "c"]).await, "b");
    // I7: a leader within two lease TTLs of the kill.
    history::leader_within(&fleet.events(), killed, TTL * 2).unwrap();

    let a = fleet.start("a").await;
    crate::harness::wait_for("a's failure shown", || async {
        failures_at(&fleet, a, "a").await == Some(1)
    })
    .await;
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

/// SIGSTOP of the leader past its lease, then SIGCONT: the fleet moved on;
/// the old leader's token is refused by the store, and it steps down
/// and follows the new leader.
async fn a_paused_leader_is_fenced_and_steps_down(kind: Kind) {
    let s = setup(kind).await;
    let mut fleet = Fleet::new(&s.url, &s.server.addr());
    let a = fleet.start("a").await;
    fleet.agreed_leader(&[a], &["a"]).await;
    let b = fleet.start("b").await;
    let c = fleet.start("c").await;
    fleet.agreed_leader(&[a, b, c], &["a"]).await;
    let old_token = elected_at(&fleet, 1).rev;

    let stopped = mono_us();
    fleet.signal(a, libc::SIGSTOP);
    assert_eq!(fleet.agreed_leader(&[b, c], &["b", "c"]).await, "b");
    history::leader_within(&fleet.events(), stopped, TTL * 2).unwrap();
    // A write guarded on a's token, as a would make it, is refused.
    let store = store::open(&StoreUrl::parse(&s.url).unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    let out = store
        .txn(vec![(LEADER.into(), Cond::CreateRev(old_token))], vec![])
        .await
        .unwrap();
    assert!(
        matches!(out, TxnOutcome::Conflict { guard: 0, .. }),
        "{out:?}"
    );

    fleet.signal(a, libc::SIGCONT);
    fleet.agreed_leader(&[a, b, c], &["b"]).await;
    let steps: Vec<_> = fleet
        .events()
        .into_iter()
        .filter(|e| e.node == "a" && e.event == "step_down" && e.term == 1)
        .collect();
    assert_eq!(steps.len(), 1, "{:?}", fleet.events());
    crate::harness::wait_for("a's failure shown", || async {
        failures_at(&fleet, b, "a").await == Some(1)
    })
    .await;
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

/// A clean SIGTERM hands the seat over at once and charges nothing; a
/// newcomer is not elected while a more reliable node lives.
async fn a_newcomer_is_not_elected_over_a_more_reliable_node(kind: Kind) {
    let s = setup(kind).await;
    let mut fleet = Fleet::new(&s.url, &s.server.addr());
    let a = fleet.start("a").await;
    fleet.agreed_leader(&[a], &["a"]).await;
    let b = fleet.start("b").await;
    fleet.agreed_leader(&[a, b], &["a"]).await;

    let stopped = mono_us();
    fleet.stop(a).await;
    assert_eq!(fleet.agreed_leader(&[b], &["b"]).await, "b");
    let took = Duration::from_micros(elected_at(&fleet, 2).mono_us - stopped);
    assert!(
        took < TTL,
        "successor after {took:?}: the seat was not handed back"
    );

    let c = fleet.start("c").await; // median of {b: 1} + 1
    let a = fleet.start("a").await; // keeps its 0: it left cleanly
    crate::harness::wait_for("failures a 0, b 1, c 2", || async {
        failures_at(&fleet, c, "a").await == Some(0)
            && failures_at(&fleet, c, "b").await == Some(1)
            && failures_at(&fleet, c, "c").await == Some(2)
    })
    .await;
    fleet.kill9(b).await;
    assert_eq!(fleet.agreed_leader(&[a, c], &["a", "c"]).await, "a");
    assert!(
        fleet
            .events()
            .iter()
            .all(|e| !(e.node == "c" && e.event == "elected")),
        "{:?}",
        fleet.events()
    );
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test]
async fn postgres_store_a_killed_leader_is_replaced() {
    a_killed_leader_is_replaced(Kind::Postgres).await;
}

#[tokio::test]
async fn etcd_store_a_killed_leader_is_replaced() {
    a_killed_leader_is_replaced(Kind::Etcd).await;
}

#[tokio::test]
async fn postgres_store_a_paused_leader_is_fenced_and_steps_down() {
    a_paused_leader_is_fenced_and_steps_down(Kind::Postgres).await;
}

#[tokio::test]
async fn etcd_store_a_paused_leader_is_fenced_and_steps_down() {
    a_paused_leader_is_fenced_and_steps_down(Kind::Etcd).await;
}

#[tokio::test]
async fn postgres_store_a_newcomer_is_not_elected_over_a_more_reliable_node() {
    a_newcomer_is_not_elected_over_a_more_reliable_node(Kind::Postgres).await;
}

#[tokio::test]
async fn etcd_store_a_newcomer_is_not_elected_over_a_more_reliable_node() {
    a_newcomer_is_not_elected_over_a_more_reliable_node(Kind::Etcd).await;
}

/// Where the store of `s` listens, for a fault relay in front of it.
fn store_target(s: &Setup) -> String {
    let url = StoreUrl::parse(&s.url).unwrap();
    match url {
        StoreUrl::Etcd(endpoints) => endpoints[0].trim_start_matches("http://").to_string(),
        _ => s.server.addr(),
    }
}

/// The store URL of `s` with its address replaced by `addr`.
fn through(kind: Kind, addr: &str) -> String {
    match kind {
        Kind::Etcd => format!("etcd://{addr}"),
        Kind::Postgres => format!(
            "postgres://{}@{addr}/postgres",
            crate::harness::servers::superuser()
        ),
    }
}

/// `SHOW CLUSTER` through psql, as a user sees it: the store line and rows.
async fn psql_cluster(fleet: &Fleet, i: usize) -> String {
    let port = fleet.replicas[i].port.to_string();
    let out = crate::harness::programs::run(
        "psql",
        &[
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "pgbaton",
            "-c",
            "SHOW CLUSTER",
        ],
        &[],
        None,
    )
    .await;
    crate::harness::programs::show(&out)
}

/// The store blackholed for the leader only: the others elect a new leader,
/// the cut-off replica steps down, says since when the store is gone, and
/// keeps relaying and moving its sessions; healed, it rejoins by itself.
async fn a_replica_cut_off_from_the_store_keeps_serving_and_rejoins(kind: Kind) {
    let s = setup(kind).await;
    let relay = crate::harness::faulty::FaultyRelay::start(&store_target(&s)).await;
    let mut fleet = Fleet::new(&s.url, &s.server.addr());
    let c = fleet
        .start_on("c", &through(kind, &relay.addr_string()), "")
        .await;
    fleet.agreed_leader(&[c], &["c"]).await;
    let a = fleet.start("a").await;
    let b = fleet.start("b").await;
    fleet.agreed_leader(&[a, b, c], &["c"]).await;
    let client = fleet.client(c, "postgres").await;
    assert_eq!(
        crate::harness::one(&client, "SELECT 'before'").await,
        "before"
    );

    let cut = mono_us();
    relay.blackhole();
    assert_eq!(fleet.agreed_leader(&[a, b], &["a", "b"]).await, "a");
    history::leader_within(&fleet.events(), cut, TTL * 2).unwrap();
    crate::harness::wait_for("c says the store is unreachable and it follows", || async {
        let text = psql_cluster(&fleet, c).await;
        text.contains("unreachable since")
            && text
                .lines()
                .any(|l| l.starts_with(" c ") && l.contains("follower"))
    })
    .await;
    // The data plane does not wait on the store: the session relays,
    // a new one logs in, and a move runs.
    assert_eq!(
        crate::harness::one(&client, "SELECT 'during'").await,
        "during"
    );
    let other = fleet.client(c, "postgres").await;
    other
        .simple_query("/* pgbaton: migrate to=pg2 */;")
        .await
        .expect("a move without the store");
    assert_eq!(crate::harness::one(&other, "SELECT 'moved'").await, "moved");

    relay.release();
    crate::harness::wait_for("c back in the fleet, following a", || async {
        let text = psql_cluster(&fleet, c).await;
        text.contains("reachable; term")
            && text
                .lines()
                .any(|l| l.starts_with(" a ") && l.contains("leader"))
            && text
                .lines()
                .any(|l| l.starts_with(" c ") && l.contains("follower"))
    })
    .await;
    assert_eq!(
        crate::harness::one(&client, "SELECT 'after'").await,
        "after"
    );
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

/// A bad store at start: pgbaton says which store and why, and exits
/// non-zero, writing nothing; `start_without_store` starts anyway and joins
/// once the store answers.
async fn a_bad_store_at_start_is_refused_clearly(kind: Kind) {
    let s = setup(kind).await;
    let fleet = Fleet::new(&s.url, &s.server.addr());
    let dead = format!("127.0.0.1:{}", crate::harness::etcd::free_port());
    let (status, log) = fleet.run_once("x", &through(kind, &dead), "").await;
    assert!(!status.success(), "{log}");
    assert!(log.contains("unreachable") && log.contains(&dead), "{log}");

    // A store of a newer pgbaton: refused, left as it was.
    let store = store::open(&StoreUrl::parse(&s.url).unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    store
        .txn(
            vec![],
            vec![store::Op::put(store::SCHEMA_KEY, b"7".to_vec())],
        )
        .await
        .unwrap();
    let (status, log) = fleet.run_once("x", &s.url, "").await;
    assert!(!status.success(), "{log}");
    assert!(log.contains("schema version 7"), "{log}");
    assert!(store.list("/pgbaton/nodes/").await.unwrap().is_empty());
    assert!(store
        .list("/pgbaton/reliability/")
        .await
        .unwrap()
        .is_empty());
    store
        .txn(
            vec![],
            vec![store::Op::put(store::SCHEMA_KEY, b"1".to_vec())],
        )
        .await
        .unwrap();

    // Started without its store, a replica joins when the store answers.
    let relay = crate::harness::faulty::FaultyRelay::start(&store_target(&s)).await;
    relay.hold();
    let mut fleet = fleet;
    let r = fleet
        .start_on(
            "r",
            &through(kind, &relay.addr_string()),
            "start_without_store = true",
        )
        .await;
    assert!(psql_cluster(&fleet, r).await.contains("unreachable since"));
    relay.release();
    fleet.agreed_leader(&[r], &["r"]).await;
}

#[tokio::test]
async fn postgres_store_a_replica_cut_off_keeps_serving_and_rejoins() {
    a_replica_cut_off_from_the_store_keeps_serving_and_rejoins(Kind::Postgres).await;
}

#[tokio::test]
async fn etcd_store_a_replica_cut_off_keeps_serving_and_rejoins() {
    a_replica_cut_off_from_the_store_keeps_serving_and_rejoins(Kind::Etcd).await;
}

#[tokio::test]
async fn postgres_store_a_bad_store_at_start_is_refused_clearly() {
    a_bad_store_at_start_is_refused_clearly(Kind::Postgres).await;
}

#[tokio::test]
async fn etcd_store_a_bad_store_at_start_is_refused_clearly() {
    a_bad_store_at_start_is_refused_clearly(Kind::Etcd).await;
}

#[tokio::test]
async fn a_malformed_store_url_is_refused_naming_the_key() {
    let out = crate::harness::programs::run(
        env!("CARGO_BIN_EXE_pgbaton"),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--auth",
            "trust",
            "--backend",
            "pg1=127.0.0.1:1",
            "--cluster-store",
            "etcd://nohost",
        ],
        &[],
        None,
    )
    .await;
    let text = crate::harness::programs::show(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cluster.store") && text.contains("HOST:PORT"),
        "{text}"
    );
}

/// Every replica restarted in turn (SIGTERM, start again) while pgbench
/// runs through a load balancer in front of the fleet, a connection per
/// transaction: the leader's seat changes hands and no transaction fails.
async fn a_rolling_restart_is_never_seen_by_clients(kind: Kind) {
    let s = setup(kind).await;
    let mut fleet = Fleet::new(&s.url, &s.server.addr());
    let a = fleet.start("a").await;
    fleet.agreed_leader(&[a], &["a"]).await;
    let b = fleet.start("b").await;
    let c = fleet.start("c").await;
    fleet.agreed_leader(&[a, b, c], &["a"]).await;
    let lb = crate::harness::fleet::Balancer::start(fleet.ports()).await;
    let script = fleet.dir().join("select.sql");
    std::fs::write(&script, "\\set x random(1, 1000)\nSELECT :x;\n").unwrap();
    let port = lb.addr.port().to_string();
    let script_arg = script.display().to_string();
    let bench = tokio::spawn(async move {
        crate::harness::programs::pgbench(
            &port,
            &[
                "-n",
                "-C",
                "-c",
                "2",
                "-j",
                "2",
                "-T",
                "25",
                "-f",
                &script_arg,
            ],
        )
        .await
    });
    for id in ["a", "b", "c"] {
        let i = fleet.index(id);
        fleet.stop(i).await;
        lb.set_ports(fleet.ports());
        fleet.start(id).await;
        lb.set_ports(fleet.ports());
        fleet.agreed_leader(&[a, b, c], &["a", "b", "c"]).await;
    }
    assert!(
        !bench.is_finished(),
        "pgbench ended before the restarts did: the test proved nothing"
    );
    let out = bench.await.unwrap();
    let text = crate::harness::programs::show(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    let terms = fleet
        .events()
        .iter()
        .filter(|e| e.event == "elected")
        .count();
    // The leader (a) was restarted first: its seat changed hands.
    assert!(terms >= 2, "no new term: {:?}", fleet.events());
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test]
async fn postgres_store_a_rolling_restart_is_never_seen_by_clients() {
    a_rolling_restart_is_never_seen_by_clients(Kind::Postgres).await;
}

#[tokio::test]
async fn etcd_store_a_rolling_restart_is_never_seen_by_clients() {
    a_rolling_restart_is_never_seen_by_clients(Kind::Etcd).await;
}

/// A three-member etcd, one member killed: the replicas, which name every
/// member, carry on through the other two: the fleet keeps one leader and
/// every replica still reads the store.
#[tokio::test]
async fn etcd_store_a_killed_member_is_survived() {
    let server = start_servers(1).await.remove(0);
    let mut etcd = TestEtcd::start(3).await;
    let mut fleet = Fleet::new(&etcd.url(), &server.addr());
    let a = fleet.start("a").await;
    fleet.agreed_leader(&[a], &["a"]).await;
    let b = fleet.start("b").await;
    let c = fleet.start("c").await;
    fleet.agreed_leader(&[a, b, c], &["a"]).await;
    let before = fleet.events().len();

    let killed = pgbaton::protocol::write::timestamptz(std::time::SystemTime::now());
    etcd.kill(0);
    // Every replica reads all three nodes again after the kill, through
    // the members that are left (the timestamps compare as text).
    let leader = fleet.agreed_leader(&[a, b, c], &["a", "b", "c"]).await;
    for i in [a, b, c] {
        crate::harness::wait_for("the replica reads the store after the kill", || async {
            let Some(rows) = fleet.cluster(i).await else {
                return false;
            };
            rows.len() == 3
                && rows
                    .iter()
                    .all(|r| col(r, "last_seen").is_some_and(|t| t > killed.as_str()))
        })
        .await;
        let text = psql_cluster(&fleet, i).await;
        assert!(text.contains("reachable; term"), "{text}");
    }
    let client = fleet.client(fleet.index(&leader), "postgres").await;
    assert_eq!(
        crate::harness::one(&client, "SELECT 'still here'").await,
        "still here"
    );
    let lost: Vec<_> = fleet.events()[before..]
        .iter()
        .filter(|e| e.event == "lease_lost")
        .cloned()
        .collect();
    assert!(
        lost.is_empty(),
        "leases lapsed over one member's loss: {lost:?}"
    );
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

/// A three-member etcd with one member paused (SIGSTOP: its connections
/// hang, as behind a partition, instead of being refused): calls to it time
/// out and go to the other two; the fleet keeps one leader and every
/// replica still reads the store. SIGCONT brings it back.
#[tokio::test]
async fn etcd_store_a_partitioned_member_is_survived() {
    let server = start_servers(1).await.remove(0);
    let etcd = TestEtcd::start(3).await;
    let mut fleet = Fleet::new(&etcd.url(), &server.addr());
    let a = fleet.start("a").await;
    fleet.agreed_leader(&[a], &["a"]).await;
    let b = fleet.start("b").await;
    let c = fleet.start("c").await;
    fleet.agreed_leader(&[a, b, c], &["a"]).await;
    let before = fleet.events().len();

    let paused = pgbaton::protocol::write::timestamptz(std::time::SystemTime::now());
    etcd.signal(0, libc::SIGSTOP);
    for i in [a, b, c] {
        crate::harness::wait_for(
            "the replica reads the store past the paused member",
            || async {
                let Some(rows) = fleet.cluster(i).await else {
                    return false;
                };
                rows.len() == 3
                    && rows
                        .iter()
                        .all(|r| col(r, "last_seen").is_some_and(|t| t > paused.as_str()))
            },
        )
        .await;
    }
    fleet.agreed_leader(&[a, b, c], &["a", "b", "c"]).await;
    etcd.signal(0, libc::SIGCONT);
    let lost: Vec<_> = fleet.events()[before..]
        .iter()
        .filter(|e| e.event == "lease_lost")
        .cloned()
        .collect();
    assert!(
        lost.is_empty(),
        "leases lapsed over one member's partition: {lost:?}"
    );
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}
