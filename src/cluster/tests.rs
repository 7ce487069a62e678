//! The election and membership on the in-memory store under a paused
//! tokio clock: time only moves when every task waits, so a lease expiry
//! of 10 s costs nothing and the order of events is the same every run.

use super::store::memory::MemoryStore;
use super::store::*;
use super::*;
use crate::config::ClusterSettings;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(super) const TTL: Duration = Duration::from_secs(2);

/// One replica's way to the shared store, which a test can cut.
pub(super) struct Link {
    store: Arc<MemoryStore>,
    pub(super) up: AtomicBool,
    /// The next keepalive's answer comes this late (the renewal itself is
    /// made at once): a store that is slow, not gone.
    slow_keepalive: std::sync::Mutex<Option<Duration>>,
    /// The next transaction commits, and its answer is lost: the caller
    /// hears what the same transaction, retried, says (as when etcd's
    /// client retries on another member).
    replay_next_txn: AtomicBool,
    /// Ops applied to the store just before the next list of this prefix
    /// answers: another replica's write landing between two reads.
    before_list: std::sync::Mutex<Option<(String, Vec<Op>)>>,
    /// The same, before the next get of a key.
    pub(super) before_get: std::sync::Mutex<Option<(String, Vec<Op>)>>,
}

impl Link {
    fn check(&self) -> Result<(), StoreError> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::Unreachable {
                store: "memory".into(),
                reason: "link cut by the test".into(),
            })
        }
    }
}

impl CoordStore for Link {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(async move {
            self.check()?;
            let due = {
                let mut hook = self.before_get.lock().unwrap();
                match hook.as_ref() {
                    Some((k, _)) if k == key => hook.take().map(|(_, ops)| ops),
                    _ => None,
                }
            };
            if let Some(ops) = due {
                self.store.txn(vec![], ops).await?;
            }
            self.store.get(key).await
        })
    }
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>> {
        Box::pin(async move {
            self.check()?;
            let due = {
                let mut hook = self.before_list.lock().unwrap();
                match hook.as_ref() {
                    Some((p, _)) if p == prefix => hook.take().map(|(_, ops)| ops),
                    _ => None,
                }
            };
            if let Some(ops) = due {
                self.store.txn(vec![], ops).await?;
            }
            self.store.list(prefix).await
        })
    }
    fn txn<'a>(&'a self, guards: Vec<(String, Cond)>, ops: Vec<Op>) -> StoreFuture<'a, TxnOutcome> {
        Box::pin(async move {
            self.check()?;
            if self.replay_next_txn.swap(false, Ordering::SeqCst) {
                self.store.txn(guards.clone(), ops.clone()).await?;
            }
            self.store.txn(guards, ops).await
        })
    }
    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, Lease> {
        Box::pin(async move {
            self.check()?;
            self.store.lease_grant(ttl).await
        })
    }
    fn lease_keepalive(&self, id: LeaseId) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            self.check()?;
            let renewed = self.store.lease_keepalive(id).await;
            let delay = self.slow_keepalive.lock().unwrap().take();
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            renewed
        })
    }
    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.check()?;
            self.store.lease_revoke(id).await
        })
    }
}

pub(super) struct Fleet {
    store: Arc<MemoryStore>,
    pub(super) history: std::path::PathBuf,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) struct Replica {
    pub(super) cluster: Cluster,
    pub(super) link: Arc<Link>,
}

impl Fleet {
    pub(super) fn new() -> Fleet {
        let dir = std::env::temp_dir().join(format!("pgbaton-cluster-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Fleet {
            store: Arc::new(MemoryStore::new()),
            history: dir.join("history.jsonl"),
            _dir: TempDir(dir),
        }
    }

    async fn try_join(&self, id: &str) -> Result<Replica, ClusterError> {
        self.try_join_with(id, false).await
    }

    async fn try_join_with(
        &self,
        id: &str,
        lose_first_answer: bool,
    ) -> Result<Replica, ClusterError> {
        let link = Arc::new(Link {
            store: self.store.clone(),
            up: AtomicBool::new(true),
            slow_keepalive: Default::default(),
            replay_next_txn: AtomicBool::new(false),
            before_list: Default::default(),
            before_get: Default::default(),
        });
        let settings = ClusterSettings {
            node_id: Some(id.into()),
            lease_ttl: TTL,
            history: Some(self.history.clone()),
            ..ClusterSettings::default()
        };
        let listen: SocketAddr = "127.0.0.1:6432".parse().unwrap();
        let store: Arc<dyn CoordStore> = link.clone();
        check_schema(&*store).await.unwrap();
        link.replay_next_txn
            .store(lose_first_answer, Ordering::SeqCst);
        let cluster = Cluster::start_on(&settings, listen, Some(store)).await?;
        Ok(Replica { cluster, link })
    }

    pub(super) async fn join(&self, id: &str) -> Replica {
        self.try_join(id).await.unwrap()
    }

    pub(super) fn verdict(&self, strict_rank: bool) -> Vec<String> {
        let events = history::read(&[&self.history]).unwrap();
        history::check(&events, strict_rank)
    }

    pub(super) fn events(&self, kind: &str) -> Vec<history::Recorded> {
        history::read(&[&self.history])
            .unwrap()
            .into_iter()
            .filter(|e| e.event == kind)
            .collect()
    }
}

/// Waits (in paused time) until `f` holds of a replica's view.
pub(super) async fn until(
    r: &Replica,
    what: &str,
    f: impl Fn(&ClusterView) -> bool,
) -> ClusterView {
    let mut rx = r.cluster.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let v = rx.borrow_and_update().clone();
        if f(&v) {
            return v;
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("{what}: never happened; last view {v:?}"),
        }
    }
}

fn failures(v: &ClusterView, id: &str) -> u32 {
    v.nodes
        .iter()
        .find(|n| n.id == id)
        .map_or(u32::MAX, |n| n.failures)
}

#[tokio::test(start_paused = true)]
async fn a_single_replica_leads_term_one() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    let v = until(&a, "a leads", |v| v.role == Role::Leader).await;
    assert_eq!(v.term, 1);
    assert_eq!(v.leader.as_deref(), Some("a"));
    assert_eq!(failures(&v, "a"), 0);
    assert!(v.nodes[0].is_self);
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_newcomer_starts_at_the_median_plus_one_and_is_not_elected_over_proven_nodes() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet.join("b").await;
    let v = until(&b, "b sees a and b", |v| v.nodes.len() == 2).await;
    // a alone had 0 failures: b starts at 0 + 1.
    assert_eq!(failures(&v, "b"), 1);
    // a leaves cleanly: b, the only one left, takes over.
    a.cluster.resign().await;
    let v = until(&b, "b leads", |v| v.role == Role::Leader).await;
    assert_eq!(v.term, 2);
    // The clean resign charged nothing.
    let c = fleet.join("c").await;
    let v = until(&c, "c sees b and c", |v| v.nodes.len() == 2).await;
    assert_eq!(failures(&v, "c"), 2, "median of {{b: 1}} plus one");
    let a2 = fleet.join("a").await;
    let v = until(&a2, "a back", |v| v.nodes.len() == 3).await;
    assert_eq!(failures(&v, "a"), 0, "a restarting node keeps its history");
    // a is the most reliable, but b holds the seat: no needless change.
    assert_eq!(v.leader.as_deref(), Some("b"));
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_after_its_lease_and_charged_a_failure() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet.join("b").await;
    let c = fleet.join("c").await;
    until(&c, "c sees three", |v| v.nodes.len() == 3).await;
    let before = tokio::time::Instant::now();
    a.cluster.abandon();
    let v = until(&b, "b leads", |v| v.role == Role::Leader).await;
    let took = before.elapsed();
    assert!(
        took >= TTL - TTL / 5,
        "elected after {took:?}, before a's lease could lapse"
    );
    assert!(took < TTL * 3 / 2, "elected after {took:?}");
    assert_eq!(v.term, 2);
    // b (joined before c, both at 1 failure) leads, and charges a.
    let mut store_view = until(&c, "c sees b lead", |v| v.leader.as_deref() == Some("b")).await;
    assert!(store_view.nodes.iter().all(|n| n.id != "a"));
    let a2 = fleet.join("a").await;
    store_view = until(&a2, "a back", |v| v.nodes.len() == 3).await;
    assert_eq!(
        failures(&store_view, "a"),
        1,
        "charged once, by the leader or by itself"
    );
    assert_eq!(fleet.events("charged").len(), 1);
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_store_steps_down_before_its_lease_lapses() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet.join("b").await;
    until(&b, "b sees two", |v| v.nodes.len() == 2).await;
    a.link.up.store(false, Ordering::SeqCst);
    let cut = tokio::time::Instant::now();
    let v = until(&a, "a steps down", |v| v.role == Role::Follower).await;
    assert!(!v.reachable);
    assert!(v.unreachable_since_ms.is_some());
    let stepped_down = cut.elapsed();
    until(&b, "b leads", |v| v.role == Role::Leader).await;
    let b_elected = cut.elapsed();
    assert!(
        stepped_down < b_elected,
        "a stepped down after {stepped_down:?}, b was elected after {b_elected:?}"
    );
    // a comes back: it registers anew, one failure charged, and follows.
    a.link.up.store(true, Ordering::SeqCst);
    let v = until(&a, "a back and following b", |v| {
        v.reachable && v.leader.as_deref() == Some("b") && v.nodes.len() == 2
    })
    .await;
    assert_eq!(v.role, Role::Follower);
    assert_eq!(failures(&v, "a"), 1);
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_second_replica_with_the_same_node_id_is_refused() {
    let fleet = Fleet::new();
    let _a = fleet.join("a").await;
    match fleet.try_join("a").await {
        Err(ClusterError::DuplicateNode { id, .. }) => assert_eq!(id, "a"),
        Err(e) => panic!("expected a duplicate node error, got {e}"),
        Ok(_) => panic!("a second replica named a was let in"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_store_with_a_newer_schema_is_refused_and_left_as_it_was() {
    let store = MemoryStore::new();
    store
        .txn(vec![], vec![Op::put(SCHEMA_KEY, b"99".to_vec())])
        .await
        .unwrap();
    let e = check_schema(&store).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NewerSchema { found: 99, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("nothing was written"));
    assert_eq!(store.list("/").await.unwrap().len(), 1);
}

#[test]
fn the_checker_fails_a_history_with_two_leaders_in_one_term() {
    let ev = |node: &str, event: &str, term: u64, rev: u64| history::Recorded {
        mono_us: rev,
        wall_ms: rev,
        node: node.into(),
        event: event.into(),
        term,
        rev,
        detail: "rank 0 of [a:0 b:0]".into(),
    };
    let good = vec![
        ev("a", "elected", 1, 10),
        ev("a", "fenced_write", 1, 11),
        ev("b", "elected", 2, 20),
        ev("b", "fenced_write", 2, 21),
    ];
    assert_eq!(history::check(&good, true), Vec::<String>::new());
    let two_leaders = vec![ev("a", "elected", 1, 10), ev("b", "elected", 1, 12)];
    let v = history::check(&two_leaders, true);
    assert!(v.iter().any(|l| l.starts_with("I1")), "{v:?}");
    let stale_write = vec![
        ev("a", "elected", 1, 10),
        ev("b", "elected", 2, 20),
        ev("a", "fenced_write", 1, 25),
    ];
    let v = history::check(&stale_write, true);
    assert!(v.iter().any(|l| l.starts_with("I3")), "{v:?}");
    // I7: a leader within the bound after a fault at 15, or not.
    let us = Duration::from_micros;
    assert_eq!(history::leader_within(&good, 15, us(5)), Ok(us(5)));
    assert!(history::leader_within(&good, 15, us(4))
        .unwrap_err()
        .starts_with("I7"));
    assert!(history::leader_within(&good, 25, us(100))
        .unwrap_err()
        .starts_with("I7"));
    let reused = vec![ev("a", "elected", 2, 10), ev("b", "elected", 1, 20)];
    let v = history::check(&reused, true);
    assert!(v.iter().any(|l| l.starts_with("I2")), "{v:?}");
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_loses_its_seat_involuntarily_is_charged_once() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet.join("b").await;
    until(&b, "b sees two", |v| v.nodes.len() == 2).await;
    // Someone (an operator, a bug) deletes the seat under a.
    fleet
        .store
        .txn(vec![], vec![Op::delete(super::records::LEADER)])
        .await
        .unwrap();
    let v = until(&b, "a charged", |v| failures(v, "a") == 1).await;
    assert_eq!(failures(&v, "b"), 1);
    // a (joined first) wins the seat back in a new term; nothing more is
    // charged.
    let v = until(&b, "a leads term 2", |v| v.term == 2 && v.leader.is_some()).await;
    assert_eq!(v.leader.as_deref(), Some("a"));
    tokio::time::sleep(TTL * 3).await;
    let v = b.cluster.view();
    assert_eq!((failures(&v, "a"), failures(&v, "b")), (1, 1));
    assert_eq!(fleet.events("charged").len(), 1);
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_stepped_down_on_its_deadline_gives_the_seat_back() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet.join("b").await;
    until(&b, "b sees two", |v| v.nodes.len() == 2).await;
    // One renewal whose answer is late: a's local deadline passes while
    // its lease lives on at the store, with the seat in a's name.
    *a.link.slow_keepalive.lock().unwrap() = Some(TTL * 9 / 10);
    until(&a, "a steps down", |v| v.role == Role::Follower).await;
    // Somebody must lead again: the seat does not stay in the name of a
    // node that no longer acts on it.
    let v = until(&b, "a new term", |v| v.term == 2 && v.leader.is_some()).await;
    let leader = v.leader.unwrap();
    let leads = if leader == "a" { &a } else { &b };
    until(leads, "the new leader acts", |v| v.role == Role::Leader).await;
    assert_eq!(fleet.events("released").len(), 1);
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_registration_whose_answer_was_lost_stands_and_costs_nothing() {
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet
        .try_join_with("b", true)
        .await
        .expect("b's own registration is not a duplicate");
    let v = until(&b, "b in the fleet", |v| v.nodes.len() == 2).await;
    assert_eq!(
        failures(&v, "b"),
        1,
        "median of {{a: 0}} plus one, nothing charged"
    );
    tokio::time::sleep(TTL * 3).await;
    let v = b.cluster.view();
    assert_eq!((failures(&v, "a"), failures(&v, "b")), (0, 1));
    assert!(fleet.events("charged").is_empty());
    assert_eq!(fleet.verdict(true), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn the_leader_never_charges_a_node_that_registered_again_between_its_reads() {
    use super::records::*;
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let c = fleet.join("c").await;
    until(&a, "a sees c", |v| v.nodes.len() == 2).await;
    c.cluster.abandon();
    // c's run ended without a resign; its key goes with its lease. Right
    // between a's list of the nodes and its list of the reliability
    // records, c registers again, charging itself as it does.
    let lease = fleet
        .store
        .lease_grant(Duration::from_secs(600))
        .await
        .unwrap();
    let node = NodeRecord {
        id: "c".into(),
        client_addr: "x".into(),
        admin_addr: "x".into(),
        joined_at_ms: 0,
        instance: 42,
        pid: 1,
        number: 0,
    };
    let rel = Reliability {
        failures: 2,
        running: Some(42),
        resigned: false,
    };
    *a.link.before_list.lock().unwrap() = Some((
        RELIABILITY.to_string(),
        vec![
            Op::put_leased(node_key("c"), encode(&node), lease.id),
            Op::put(reliability_key("c"), encode(&rel)),
        ],
    ));
    until(&a, "c back", |v| {
        v.nodes.iter().any(|n| n.id == "c" && n.failures == 2)
    })
    .await;
    tokio::time::sleep(TTL * 3).await;
    let v = a.cluster.view();
    assert_eq!(failures(&v, "c"), 2, "charged by itself only");
    assert!(
        fleet.events("charged").is_empty(),
        "{:?}",
        fleet.events("charged")
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_write_is_fenced_steps_down_and_is_charged() {
    use super::records::*;
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    // Between a's read and its next fenced write (the fleet summary, which
    // changes when b joins), the seat passes to someone else.
    let usurper = LeaderRecord {
        node: "z".into(),
        term: 7,
        instance: 1,
    };
    *a.link.before_get.lock().unwrap() = Some((
        FLEET.to_string(),
        vec![Op::delete(LEADER), Op::put(LEADER, encode(&usurper))],
    ));
    let _b = fleet.join("b").await;
    until(&a, "a steps down", |v| v.role == Role::Follower).await;
    let refused = fleet.events("write_refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].detail.contains("z (term 7)"),
        "{}",
        refused[0].detail
    );
    until(&a, "a charged", |v| failures(v, "a") == 1).await;
    assert_eq!(fleet.events("charged").len(), 1);
}
