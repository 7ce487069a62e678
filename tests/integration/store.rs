//! One conformance suite for the three coordination stores: the same cases
//! against the in-memory store, a real Postgres control database and a
//! real etcd. What the election and fencing rely on is here: guards on
//! global revisions, which guard failed, all-or-nothing transactions,
//! leases that expire and are never revived.

use crate::harness::etcd::TestEtcd;
use crate::harness::start_servers;
use pgbaton::cluster::store::*;
use pgbaton::config::StoreUrl;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn committed(store: &dyn CoordStore, guards: Vec<(String, Cond)>, ops: Vec<Op>) -> u64 {
    match store.txn(guards, ops).await.unwrap() {
        TxnOutcome::Committed { rev } => rev,
        other => panic!("expected a commit, got {other:?}"),
    }
}

async fn put_absent(store: &dyn CoordStore, key: &str, value: &str) -> u64 {
    committed(
        store,
        vec![(key.into(), Cond::Absent)],
        vec![Op::put(key, value.as_bytes().to_vec())],
    )
    .await
}

async fn guards_and_revisions(store: &dyn CoordStore) {
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    let r1 = put_absent(store, "/t/a", "1").await;
    let a = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_rev, a.mod_rev),
        (&b"1"[..], r1, r1)
    );
    // Absent fails on a key that exists, and says what it holds.
    match store
        .txn(
            vec![("/t/a".into(), Cond::Absent)],
            vec![Op::put("/t/a", b"x".to_vec())],
        )
        .await
        .unwrap()
    {
        TxnOutcome::Conflict { guard: 0, current } => assert_eq!(current.unwrap().value, b"1"),
        other => panic!("{other:?}"),
    }
    // A fresh ModRev commits at a higher revision; the create revision stays.
    let r2 = committed(
        store,
        vec![("/t/a".into(), Cond::ModRev(r1))],
        vec![Op::put("/t/a", b"2".to_vec())],
    )
    .await;
    assert!(r2 > r1);
    let a = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.create_rev, a.mod_rev), (r1, r2));
    // A stale one fails.
    let stale = store
        .txn(
            vec![("/t/a".into(), Cond::ModRev(r1))],
            vec![Op::put("/t/a", b"3".to_vec())],
        )
        .await
        .unwrap();
    assert!(
        matches!(stale, TxnOutcome::Conflict { guard: 0, .. }),
        "{stale:?}"
    );
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().value, b"2");
    // CreateRev holds across updates.
    committed(store, vec![("/t/a".into(), Cond::CreateRev(r1))], vec![]).await;
}

async fn the_failed_guard_is_named_and_nothing_is_written(store: &dyn CoordStore) {
    let ra = put_absent(store, "/t/a", "a").await;
    put_absent(store, "/t/b", "b").await;
    let out = store
        .txn(
            vec![
                ("/t/a".into(), Cond::ModRev(ra)),
                ("/t/b".into(), Cond::Absent),
            ],
            vec![
                Op::put("/t/a", b"changed".to_vec()),
                Op::delete("/t/b"),
                Op::put("/t/c", b"new".to_vec()),
            ],
        )
        .await
        .unwrap();
    match out {
        TxnOutcome::Conflict { guard: 1, current } => assert_eq!(current.unwrap().value, b"b"),
        other => panic!("expected guard 1 to fail, got {other:?}"),
    }
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().value, b"a");
    assert!(store.get("/t/b").await.unwrap().is_some());
    assert_eq!(store.get("/t/c").await.unwrap(), None);
    // All of a committed transaction lands at one revision.
    let rev = committed(
        store,
        vec![("/t/a".into(), Cond::ModRev(ra))],
        vec![
            Op::put("/t/a", b"A".to_vec()),
            Op::put("/t/c", b"C".to_vec()),
            Op::delete("/t/b"),
        ],
    )
    .await;
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().mod_rev, rev);
    assert_eq!(store.get("/t/c").await.unwrap().unwrap().mod_rev, rev);
    assert_eq!(store.get("/t/b").await.unwrap(), None);
}

async fn list_is_by_prefix_in_key_order(store: &dyn CoordStore) {
    for k in ["/l/b/2", "/l/a", "/l/b/1", "/lx", "/m"] {
        put_absent(store, k, k).await;
    }
    let keys: Vec<String> = store
        .list("/l/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["/l/a", "/l/b/1", "/l/b/2"]);
    let keys: Vec<String> = store
        .list("/l/b/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["/l/b/1", "/l/b/2"]);
    assert!(store.list("/nothing/").await.unwrap().is_empty());
}

async fn a_re_created_key_is_not_the_same_key(store: &dyn CoordStore) {
    let r1 = put_absent(store, "/t/aba", "v").await;
    committed(store, vec![], vec![Op::delete("/t/aba")]).await;
    let r2 = put_absent(store, "/t/aba", "v").await;
    assert!(r2 > r1);
    let out = store
        .txn(vec![("/t/aba".into(), Cond::CreateRev(r1))], vec![])
        .await
        .unwrap();
    assert!(
        matches!(out, TxnOutcome::Conflict { guard: 0, .. }),
        "ABA went unnoticed: {out:?}"
    );
    let out = store
        .txn(vec![("/t/aba".into(), Cond::ModRev(r1))], vec![])
        .await
        .unwrap();
    assert!(
        matches!(out, TxnOutcome::Conflict { guard: 0, .. }),
        "{out:?}"
    );
}

async fn leases_expire_and_are_never_revived(store: &dyn CoordStore, ttl: Duration) {
    let lease = store.lease_grant(ttl).await.unwrap();
    assert!(lease.ttl >= ttl, "granted {:?} for {ttl:?}", lease.ttl);
    committed(
        store,
        vec![],
        vec![Op::put_leased("/t/leased", b"x".to_vec(), lease.id)],
    )
    .await;
    assert_eq!(
        store.get("/t/leased").await.unwrap().unwrap().lease,
        Some(lease.id)
    );
    assert!(store.lease_keepalive(lease.id).await.unwrap());
    // No renewal for longer than the lease: the key is gone and the
    // lease cannot be brought back.
    tokio::time::sleep(lease.ttl + Duration::from_millis(1500)).await;
    assert_eq!(store.get("/t/leased").await.unwrap(), None);
    assert!(store
        .list("/t/")
        .await
        .unwrap()
        .iter()
        .all(|(k, _)| k != "/t/leased"));
    assert!(!store.lease_keepalive(lease.id).await.unwrap());
    let e = store
        .txn(
            vec![],
            vec![Op::put_leased("/t/again", b"x".to_vec(), lease.id)],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::LeaseNotFound { .. }), "{e}");
    assert_eq!(store.get("/t/again").await.unwrap(), None);
    // An expired key is absent to a guard.
    put_absent(store, "/t/leased", "y").await;
}

async fn a_revoked_lease_takes_its_keys_at_once(store: &dyn CoordStore) {
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    committed(
        store,
        vec![],
        vec![Op::put_leased("/t/r", b"x".to_vec(), lease.id)],
    )
    .await;
    store.lease_revoke(lease.id).await.unwrap();
    assert_eq!(store.get("/t/r").await.unwrap(), None);
    assert!(!store.lease_keepalive(lease.id).await.unwrap());
}

/// Compare-and-swap from many tasks at once: never two winners for one
/// revision, and every win counted.
async fn concurrent_cas_has_one_winner_per_revision(store: Arc<dyn CoordStore>) {
    put_absent(&*store, "/t/counter", "0").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0;
            for _ in 0..15 {
                let v = store.get("/t/counter").await.unwrap().unwrap();
                let n: u64 = String::from_utf8(v.value).unwrap().parse().unwrap();
                let out = store
                    .txn(
                        vec![("/t/counter".into(), Cond::ModRev(v.mod_rev))],
                        vec![Op::put("/t/counter", (n + 1).to_string().into_bytes())],
                    )
                    .await
                    .unwrap();
                if out.committed().is_some() {
                    wins += 1;
                }
            }
            wins
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap();
    }
    let v = store.get("/t/counter").await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v.value).unwrap(), wins.to_string());
    assert!(wins >= 15, "only {wins} wins");
}

async fn a_newer_schema_is_refused(store: &dyn CoordStore) {
    let v = store
        .get(SCHEMA_KEY)
        .await
        .unwrap()
        .expect("open writes the schema");
    assert_eq!(v.value, SCHEMA_VERSION.to_string().into_bytes());
    committed(store, vec![], vec![Op::put(SCHEMA_KEY, b"999".to_vec())]).await;
    let e = check_schema(store).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NewerSchema { found: 999, .. }),
        "{e}"
    );
    assert_eq!(store.get(SCHEMA_KEY).await.unwrap().unwrap().value, b"999");
}

async fn suite(url: &str, ttl: Duration) {
    let url = StoreUrl::parse(url).unwrap();
    let store = open(&url, TIMEOUT).await.unwrap();
    guards_and_revisions(&*store).await;
    committed(&*store, vec![], vec![Op::delete("/t/a")]).await;
    the_failed_guard_is_named_and_nothing_is_written(&*store).await;
    list_is_by_prefix_in_key_order(&*store).await;
    a_re_created_key_is_not_the_same_key(&*store).await;
    leases_expire_and_are_never_revived(&*store, ttl).await;
    a_revoked_lease_takes_its_keys_at_once(&*store).await;
    concurrent_cas_has_one_winner_per_revision(store.clone()).await;
    a_newer_schema_is_refused(&*store).await;
    if !url.is_memory() {
        // A second open of the same store finds what the first left, and
        // refuses it without writing.
        let e = open(&url, TIMEOUT)
            .await
            .err()
            .expect("newer schema refused on open");
        assert!(matches!(e, StoreError::NewerSchema { .. }), "{e}");
        assert_eq!(store.get(SCHEMA_KEY).await.unwrap().unwrap().value, b"999");
    }
}

#[tokio::test]
async fn memory_store_conforms() {
    suite("memory", Duration::from_millis(500)).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let servers = start_servers(1).await;
    let url = format!(
        "postgres://{}@{}:{}/postgres",
        crate::harness::servers::superuser(),
        servers[0].host(),
        servers[0].port()
    );
    suite(&url, Duration::from_secs(1)).await;
    // The tables are where the README says.
    let n = servers[0].psql("postgres", "SELECT count(*) FROM pgbaton.kv");
    assert!(n.trim().parse::<u64>().unwrap() > 0, "{n}");
}

#[tokio::test]
async fn etcd_store_conforms() {
    let etcd = TestEtcd::start(1).await;
    suite(&etcd.url(), Duration::from_secs(1)).await;
}

#[tokio::test]
async fn an_unreachable_store_is_named_in_the_error() {
    let port = crate::harness::etcd::free_port();
    for url in [
        format!("etcd://127.0.0.1:{port}"),
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    ] {
        let e = open(&StoreUrl::parse(&url).unwrap(), Duration::from_millis(500))
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} opened"));
        assert!(e.is_unreachable(), "{url}: {e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
