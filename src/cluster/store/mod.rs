//! The coordination store the replicas share: one trait, three backends
//! (in-memory, a Postgres control database, etcd).
//!
//! Only five calls: `get`, `list` by prefix, a guarded multi-key `txn`,
//! `lease_grant` and `lease_keepalive` (plus `lease_revoke` for a clean
//! exit). Guards compare *global* revisions (every write raises the store's
//! one revision), never per-key versions, which restart after a delete and
//! re-create and so cannot tell "changed and changed back" from "unchanged".
//! A lease is only a liveness signal: safety comes from the guards.

pub mod etcd;
pub mod memory;
pub mod postgres;
pub use crate::config::StoreUrl;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Version of the key layout and record formats pgbaton writes. A store
/// holding a newer one is refused, with nothing written.
pub const SCHEMA_VERSION: u32 = 1;

pub type LeaseId = i64;

/// A key's value with the revisions of its creation and last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub create_rev: u64,
    pub mod_rev: u64,
    pub lease: Option<LeaseId>,
}

/// A guard on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// The key does not exist (an expired lease's keys do not).
    Absent,
    /// The key exists and was last changed at this revision.
    ModRev(u64),
    /// The key exists and was created at this revision.
    CreateRev(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: Vec<u8>) -> Op {
        Op::Put {
            key: key.into(),
            value,
            lease: None,
        }
    }

    pub fn put_leased(key: impl Into<String>, value: Vec<u8>, lease: LeaseId) -> Op {
        Op::Put {
            key: key.into(),
            value,
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
}

/// What a guarded transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every guard held; the ops were applied at revision `rev`.
    Committed { rev: u64 },
    /// Guard number `guard` (in the order given) failed; nothing was
    /// written. `current` is that key as it is now.
    Conflict {
        guard: usize,
        current: Option<Versioned>,
    },
}

impl TxnOutcome {
    pub fn committed(&self) -> Option<u64> {
        match self {
            TxnOutcome::Committed { rev } => Some(*rev),
            TxnOutcome::Conflict { .. } => None,
        }
    }
}

/// A granted lease. The store may grant a longer TTL than asked (etcd's
/// minimum is 2 s): deadlines must use this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The store did not answer (down, partitioned, timed out): a replica
    /// keeps serving on what it last knew.
    #[error("coordination store {store} is unreachable: {reason}")]
    Unreachable { store: String, reason: String },
    /// The store holds records of a newer pgbaton.
    #[error("coordination store {store} holds schema version {found}; this pgbaton knows only version {supported} (upgrade pgbaton; nothing was written)")]
    NewerSchema {
        store: String,
        found: u32,
        supported: u32,
    },
    /// A put named a lease that has expired or was revoked: nothing was
    /// written.
    #[error("coordination store {store}: lease {lease:x} has expired")]
    LeaseNotFound { store: String, lease: LeaseId },
    /// The store answered with something else than expected.
    #[error("coordination store {store}: {reason}")]
    Failed { store: String, reason: String },
}

impl StoreError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. })
    }
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The coordination store. Every call either finishes within the store's
/// timeout or fails with [`StoreError::Unreachable`].
pub trait CoordStore: Send + Sync + 'static {
    /// Where the store is, for messages (never with a password).
    fn describe(&self) -> String;

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>>;

    /// Every live key under `prefix`, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>>;

    /// Applies `ops` at one new revision if every guard holds; otherwise
    /// writes nothing and names the first guard that failed.
    fn txn<'a>(&'a self, guards: Vec<(String, Cond)>, ops: Vec<Op>) -> StoreFuture<'a, TxnOutcome>;

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, Lease>;

    /// Renews a lease. `false` when it has already expired (or was
    /// revoked): an expired lease is never revived, its keys are gone.
    fn lease_keepalive(&self, id: LeaseId) -> StoreFuture<'_, bool>;

    /// Ends a lease now, deleting its keys.
    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()>;
}

/// Opens the store a URL names: `memory`, `postgres://...` or
/// `etcd://host:port[,host:port]`. Checks the schema version, creating
/// the store's tables or marker on first use.
pub async fn open(url: &StoreUrl, timeout: Duration) -> Result<Arc<dyn CoordStore>, StoreError> {
    let store: Arc<dyn CoordStore> = match url {
        StoreUrl::Memory => Arc::new(memory::MemoryStore::new()),
        StoreUrl::Postgres(conn) => Arc::new(postgres::PostgresStore::open(conn, timeout).await?),
        StoreUrl::Etcd(endpoints) => Arc::new(etcd::EtcdStore::open(endpoints, timeout).await?),
    };
    check_schema(&*store).await?;
    Ok(store)
}

/// The key that records the schema version, in every backend.
pub const SCHEMA_KEY: &str = "/pgbaton/schema";

/// Writes the schema version when the store has none; refuses a newer one.
pub async fn check_schema(store: &dyn CoordStore) -> Result<(), StoreError> {
    let found = match store.get(SCHEMA_KEY).await? {
        Some(v) => parse_schema(store, &v.value)?,
        None => {
            let put = Op::put(SCHEMA_KEY, SCHEMA_VERSION.to_string().into_bytes());
            match store
                .txn(vec![(SCHEMA_KEY.into(), Cond::Absent)], vec![put])
                .await?
            {
                TxnOutcome::Committed { .. } => SCHEMA_VERSION,
                TxnOutcome::Conflict { current, .. } => match current {
                    Some(v) => parse_schema(store, &v.value)?,
                    None => SCHEMA_VERSION,
                },
            }
        }
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            store: store.describe(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn parse_schema(store: &dyn CoordStore, value: &[u8]) -> Result<u32, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| StoreError::Failed {
            store: store.describe(),
            reason: format!(
                "{SCHEMA_KEY} holds {:?}, not a schema version",
                String::from_utf8_lossy(value)
            ),
        })
}

/// Runs `f` within `timeout`, or fails as unreachable.
pub(crate) async fn within<T>(
    store: &str,
    timeout: Duration,
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unreachable {
            store: store.to_string(),
            reason: format!("no answer within {timeout:?}"),
        }),
    }
}
