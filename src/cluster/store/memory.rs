//! The in-memory store: one replica (the default), and unit tests under a
//! paused tokio clock. Leases expire lazily against `tokio::time::Instant`,
//! checked at the start of every call, so a paused clock decides expiry.

use super::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    rev: u64,
    next_lease: LeaseId,
    kv: BTreeMap<String, Versioned>,
    leases: HashMap<LeaseId, (Duration, Instant)>,
}

impl State {
    /// Deletes expired leases and their keys, at one new revision.
    fn expire(&mut self, now: Instant) {
        let dead: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return;
        }
        for id in &dead {
            self.leases.remove(id);
        }
        let before = self.kv.len();
        self.kv
            .retain(|_, v| !v.lease.is_some_and(|l| dead.contains(&l)));
        if self.kv.len() != before {
            self.rev += 1;
        }
    }

    fn holds(&self, key: &str, cond: Cond) -> bool {
        let v = self.kv.get(key);
        match cond {
            Cond::Absent => v.is_none(),
            Cond::ModRev(r) => v.is_some_and(|v| v.mod_rev == r),
            Cond::CreateRev(r) => v.is_some_and(|v| v.create_rev == r),
        }
    }
}

pub struct MemoryStore {
    state: Mutex<State>,
    /// A test can make the store "unreachable" to this process.
    reachable: AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State {
                next_lease: 1,
                ..State::default()
            }),
            reachable: AtomicBool::new(true),
        }
    }

    /// Every call fails as unreachable while `false` (for tests of what a
    /// replica does without its store).
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, StoreError> {
        if !self.reachable.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable {
                store: "memory".into(),
                reason: "made unreachable by a test".into(),
            });
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.expire(Instant::now());
        Ok(f(&mut state))
    }
}

impl CoordStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        let r = self.with(|s| s.kv.get(key).cloned());
        Box::pin(async move { r })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>> {
        let r = self.with(|s| {
            s.kv.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        });
        Box::pin(async move { r })
    }

    fn txn<'a>(&'a self, guards: Vec<(String, Cond)>, ops: Vec<Op>) -> StoreFuture<'a, TxnOutcome> {
        let r = self.with(|s| {
            for (i, (key, cond)) in guards.iter().enumerate() {
                if !s.holds(key, *cond) {
                    return Ok(TxnOutcome::Conflict {
                        guard: i,
                        current: s.kv.get(key).cloned(),
                    });
                }
            }
            // A put under a lease that is gone fails the whole txn, as etcd
            // does ("requested lease not found").
            for op in &ops {
                if let Op::Put { lease: Some(l), .. } = op {
                    if !s.leases.contains_key(l) {
                        return Err(StoreError::LeaseNotFound {
                            store: "memory".into(),
                            lease: *l,
                        });
                    }
                }
            }
            s.rev += 1;
            let rev = s.rev;
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => {
                        let create_rev = s.kv.get(&key).map_or(rev, |v| v.create_rev);
                        s.kv.insert(
                            key,
                            Versioned {
                                value,
                                create_rev,
                                mod_rev: rev,
                                lease,
                            },
                        );
                    }
                    Op::Delete { key } => {
                        s.kv.remove(&key);
                    }
                }
            }
            Ok(TxnOutcome::Committed { rev })
        });
        Box::pin(async move { r.and_then(|r| r) })
    }

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, Lease> {
        let r = self.with(|s| {
            let id = s.next_lease;
            s.next_lease += 1;
            s.leases.insert(id, (ttl, Instant::now() + ttl));
            Lease { id, ttl }
        });
        Box::pin(async move { r })
    }

    fn lease_keepalive(&self, id: LeaseId) -> StoreFuture<'_, bool> {
        let r = self.with(|s| match s.leases.get_mut(&id) {
            Some((ttl, until)) => {
                *until = Instant::now() + *ttl;
                true
            }
            None => false,
        });
        Box::pin(async move { r })
    }

    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        let r = self.with(|s| {
            if s.leases.remove(&id).is_some() {
                let before = s.kv.len();
                s.kv.retain(|_, v| v.lease != Some(id));
                if s.kv.len() != before {
                    s.rev += 1;
                }
            }
        });
        Box::pin(async move { r })
    }
}
