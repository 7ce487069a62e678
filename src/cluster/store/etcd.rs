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

pub struct EtcdStore {
    client: Client,
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
    /// Connects to the members (`http://host:port`). The client balances
    /// over them and tries another when one fails.
    pub async fn open(endpoints: &[String], timeout: Duration) -> Result<EtcdStore, StoreError> {
        let shown = format!(
            "etcd://{}",
            endpoints
                .iter()
                .map(|e| e.trim_start_matches("http://"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(timeout, timeout);
        let client = within(&shown, timeout, async {
            Client::connect(endpoints, Some(options))
                .await
                .map_err(|e| StoreError::Unreachable {
                    store: shown.clone(),
                    reason: e.to_string(),
                })
        })
        .await?;
        Ok(EtcdStore {
            client,
            shown,
            timeout,
        })
    }

    fn error(&self, e: etcd_client::Error) -> StoreError {
        let text = e.to_string();
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

    fn client(&self) -> Client {
        // Cheap: the client is a set of handles on one channel.
        self.client.clone()
    }
}

impl CoordStore for EtcdStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(within(&self.shown, self.timeout, async move {
            let resp = self
                .client()
                .get(key, None)
                .await
                .map_err(|e| self.error(e))?;
            Ok(resp.kvs().first().map(versioned))
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>> {
        Box::pin(within(&self.shown, self.timeout, async move {
            let resp = self
                .client()
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
        Box::pin(within(&self.shown, self.timeout, async move {
            let compares: Vec<Compare> = guards
                .iter()
                .map(|(key, cond)| match cond {
                    Cond::Absent => Compare::version(key.as_str(), CompareOp::Equal, 0),
                    Cond::ModRev(r) => {
                        Compare::mod_revision(key.as_str(), CompareOp::Equal, *r as i64)
                    }
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
            let txn = Txn::new().when(compares).and_then(then).or_else(otherwise);
            let resp = self.client().txn(txn).await.map_err(|e| self.error(e))?;
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
                let holds = match (cond, &current) {
                    (Cond::Absent, None) => true,
                    (Cond::ModRev(r), Some(v)) => v.mod_rev == *r,
                    (Cond::CreateRev(r), Some(v)) => v.create_rev == *r,
                    _ => false,
                };
                if !holds {
                    return Ok(TxnOutcome::Conflict { guard: i, current });
                }
            }
            // The reads of the else branch saw every guard hold: another
            // write came between the compare and them. Say the first.
            Ok(TxnOutcome::Conflict {
                guard: 0,
                current: currents.first().cloned().flatten(),
            })
        }))
    }

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, Lease> {
        // etcd counts in whole seconds and grants at least its minimum.
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        Box::pin(within(&self.shown, self.timeout, async move {
            let resp = self
                .client()
                .lease_grant(secs, None)
                .await
                .map_err(|e| self.error(e))?;
            Ok(Lease {
                id: resp.id(),
                ttl: Duration::from_secs(resp.ttl().max(1) as u64),
            })
        }))
    }

    fn lease_keepalive(&self, id: LeaseId) -> StoreFuture<'_, bool> {
        Box::pin(within(&self.shown, self.timeout, async move {
            let mut client = self.client();
            let (mut keeper, mut stream) = match client.lease_keep_alive(id).await {
                Ok(k) => k,
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => return Ok(false),
                Err(e) => return Err(self.error(e)),
            };
            match keeper.keep_alive().await {
                Ok(()) => {}
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => return Ok(false),
                Err(e) => return Err(self.error(e)),
            }
            match stream.message().await {
                // A TTL of 0 is etcd's "this lease is gone".
                Ok(Some(resp)) => Ok(resp.ttl() > 0),
                Ok(None) => Err(StoreError::Unreachable {
                    store: self.shown.clone(),
                    reason: "keepalive stream closed".into(),
                }),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                Err(e) => Err(self.error(e)),
            }
        }))
    }

    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(within(&self.shown, self.timeout, async move {
            match self.client().lease_revoke(id).await {
                Ok(_) => Ok(()),
                Err(e) => match self.error(e) {
                    StoreError::LeaseNotFound { .. } => Ok(()),
                    other => Err(other),
                },
            }
        }))
    }
}
