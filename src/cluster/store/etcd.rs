//! The store in etcd, through the etcd-client crate. Guards map onto etcd's
//! own compares: `Absent` is `version == 0`, `ModRev` and `CreateRev` are
//! `mod_revision` and `create_revision`. A failed transaction reads every
//! guarded key in its `else` branch, so the caller learns which guard
//! failed and what the key holds now. Reads are linearizable (etcd's
//! default): a replica cut off with a minority of members gets errors, not
//! stale data.

use super::*;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    TxnOpResponse,
};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct EtcdStore {
    endpoints: Vec<String>,
    /// One client per member, made on first use and dropped when its
    /// member stops answering.
    clients: tokio::sync::Mutex<Vec<Option<Client>>>,
    /// The member that answered last: tried first.
    current: AtomicUsize,
    shown: String,
    timeout: Duration,
}

fn versioned(kv: &KeyValue) -> Versioned {
    Versioned {
        value: kv.value().to_vec(),
        create_rev: kv.create_revision() as u64,
        mod_rev: kv.mod_revision() as u64,
        lease: (kv.lease() != 0).then(|| kv.lease()),
    }
}

impl EtcdStore {
    /// Connects to the first member (`http://host:port`) that answers. A
    /// call whose member fails goes to the next one: the etcd client's own
    /// balancer keeps sending some calls to a dead member.
    pub async fn open(endpoints: &[String], timeout: Duration) -> Result<EtcdStore, StoreError> {
        let shown = format!(
            "etcd://{}",
            endpoints
                .iter()
                .map(|e| e.trim_start_matches("http://"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let store = EtcdStore {
            endpoints: endpoints.to_vec(),
            clients: tokio::sync::Mutex::new(vec![None; endpoints.len()]),
            current: AtomicUsize::new(0),
            shown,
            timeout,
        };
        // Fails as unreachable when no member answers.
        store.get("/pgbaton/").await?;
        Ok(store)
    }

    fn error(&self, e: etcd_client::Error) -> StoreError {
        let text = match &e {
            // tonic's own text of a status carries its whole source chain in
            // Debug form: say the status's message and the root cause.
            etcd_client::Error::GRpcStatus(s) => {
                let mut root = None;
                let mut cause = std::error::Error::source(s);
                while let Some(c) = cause {
                    root = Some(c.to_string());
                    cause = c.source();
                }
                match root {
                    Some(r) if r != s.message() => format!("{}: {r}", s.message()),
                    _ => s.message().to_string(),
                }
            }
            other => other.to_string(),
        };
        match e {
            etcd_client::Error::GRpcStatus(s) if s.message().contains("lease not found") => {
                StoreError::LeaseNotFound {
                    store: self.shown.clone(),
                    lease: 0,
                }
            }
            etcd_client::Error::InvalidArgs(_) | etcd_client::Error::Utf8Error(_) => {
                StoreError::Failed {
                    store: self.shown.clone(),
                    reason: text,
                }
            }
            _ => StoreError::Unreachable {
                store: self.shown.clone(),
                reason: text,
            },
        }
    }

    /// The time one member may take: all of them fit in one timeout.
    fn per_member(&self) -> Duration {
        self.timeout / self.endpoints.len().max(1) as u32
    }

    async fn client_at(&self, i: usize) -> Result<Client, StoreError> {
        if let Some(c) = &self.clients.lock().await[i] {
            // Cheap: a set of handles on one channel.
            return Ok(c.clone());
        }
        let per = self.per_member();
        let options = ConnectOptions::new()
            .with_connect_timeout(per)
            .with_timeout(per)
            .with_keep_alive(self.timeout, self.timeout);
        let c = Client::connect([self.endpoints[i].as_str()], Some(options))
            .await
            .map_err(|e| self.error(e))?;
        self.clients.lock().await[i] = Some(c.clone());
        Ok(c)
    }

    /// Runs `f` on a member's client, the last good member first, the
    /// others after it when one is unreachable. Every write is guarded, so
    /// a write retried after a lost answer fails its guard instead of
    /// applying twice.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        within(&self.shown, self.timeout, async {
            let n = self.endpoints.len();
            let first = self.current.load(Ordering::Relaxed);
            let mut last = None;
            for k in 0..n {
                let i = (first + k) % n;
                let attempt = async {
                    let client = self.client_at(i).await?;
                    f(client).await
                };
                let result = match tokio::time::timeout(self.per_member(), attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Unreachable {
                        store: self.shown.clone(),
                        reason: format!(
                            "{} gave no answer within {:?}",
                            self.endpoints[i],
                            self.per_member()
                        ),
                    }),
                };
                match result {
                    Err(e) if e.is_unreachable() => {
                        self.clients.lock().await[i] = None;
                        last = Some(e);
                    }
                    other => {
                        self.current.store(i, Ordering::Relaxed);
                        return other;
                    }
                }
            }
            Err(last.unwrap_or_else(|| StoreError::Unreachable {
                store: self.shown.clone(),
                reason: "no members".into(),
            }))
        })
        .await
    }
}

fn holds(cond: &Cond, current: &Option<Versioned>) -> bool {
    match (cond, current) {
        (Cond::Absent, None) => true,
        (Cond::ModRev(r), Some(v)) => v.mod_rev == *r,
        (Cond::CreateRev(r), Some(v)) => v.create_rev == *r,
        _ => false,
    }
}

impl CoordStore for EtcdStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(self.call(move |mut c| async move {
            let resp = c.get(key, None).await.map_err(|e| self.error(e))?;
            Ok(resp.kvs().first().map(versioned))
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>> {
        Box::pin(self.call(move |mut c| async move {
            let resp = c
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| self.error(e))?;
            Ok(resp
                .kvs()
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        versioned(kv),
                    )
                })
                .collect())
        }))
    }

    fn txn<'a>(&'a self, guards: Vec<(String, Cond)>, ops: Vec<Op>) -> StoreFuture<'a, TxnOutcome> {
        let compares: Vec<Compare> = guards
            .iter()
            .map(|(key, cond)| match cond {
                Cond::Absent => Compare::version(key.as_str(), CompareOp::Equal, 0),
                Cond::ModRev(r) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *r as i64),
                Cond::CreateRev(r) => {
                    Compare::create_revision(key.as_str(), CompareOp::Equal, *r as i64)
                }
            })
            .collect();
        let then: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l)),
                ),
                Op::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let otherwise: Vec<TxnOp> = guards
            .iter()
            .map(|(key, _)| TxnOp::get(key.as_str(), None))
            .collect();
        Box::pin(async move {
            let resp = self
                .call(|mut c| {
                    let txn = Txn::new()
                        .when(compares.clone())
                        .and_then(then.clone())
                        .or_else(otherwise.clone());
                    async move { c.txn(txn).await.map_err(|e| self.error(e)) }
                })
                .await?;
            if resp.succeeded() {
                let rev = resp.header().map_or(0, |h| h.revision()) as u64;
                return Ok(TxnOutcome::Committed { rev });
            }
            let currents: Vec<Option<Versioned>> = resp
                .op_responses()
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(versioned),
                    _ => None,
                })
                .collect();
            for (i, (_, cond)) in guards.iter().enumerate() {
                let current = currents.get(i).cloned().flatten();
                if !holds(cond, &current) {
                    return Ok(TxnOutcome::Conflict { guard: i, current });
                }
            }
            // The else branch's reads run in the same transaction as the
            // compares, so one of them failed; say the first.
            Ok(TxnOutcome::Conflict {
                guard: 0,
                current: currents.first().cloned().flatten(),
            })
        })
    }

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, Lease> {
        // etcd counts in whole seconds and grants at least its minimum.
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        Box::pin(self.call(move |mut c| async move {
            let resp = c.lease_grant(secs, None).await.map_err(|e| self.error(e))?;
            Ok(Lease {
                id: resp.id(),
                ttl: Duration::from_secs(resp.ttl().max(1) as u64),
            })
        }))
    }

    fn lease_keepalive(&self, id: LeaseId) -> StoreFuture<'_, bool> {
        // Opening the keepalive stream sends one renewal and reads its
        // answer: a TTL of 0 comes back as "lease not found", the one
        // answer that means expired. Anything else is the network.
        Box::pin(self.call(move |mut c| async move {
            match c.lease_keep_alive(id).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(m))
                    if m.contains("lease not found") =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.error(e)),
            }
        }))
    }

    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(self.call(move |mut c| async move {
            match c.lease_revoke(id).await {
                Ok(_) => Ok(()),
                Err(e) => match self.error(e) {
                    StoreError::LeaseNotFound { .. } => Ok(()),
                    other => Err(other),
                },
            }
        }))
    }
}
