//! The store in a Postgres control database, reached directly (never
//! through pgbaton itself). Three tables in schema `pgbaton`, created on
//! first use: `revision` (one row: the store's revision), `leases` and `kv`.
//!
//! - Every write transaction first locks the `revision` row, so writers
//!   run one at a time and revisions follow commit order (a sequence would
//!   not: its values are handed out in call order, not commit order).
//!   Under READ COMMITTED each later statement then reads what the
//!   previous writer committed.
//! - Lease arithmetic uses the server's clock (`clock_timestamp()`), so
//!   the replicas' clocks never have to agree. A lease past its deadline
//!   is never renewed; its keys are deleted by the next write (`ON DELETE
//!   CASCADE`) and are invisible to reads before that.
//!
//! The control database should not fail over asynchronously: a lost
//! commit could hand out a term twice (see README, "Running a fleet").

use super::*;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Row};

const CREATE: &str = "
    SELECT pg_advisory_xact_lock(hashtext('pgbaton coordination store'));
    CREATE SCHEMA IF NOT EXISTS pgbaton;
    CREATE TABLE IF NOT EXISTS pgbaton.revision (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        rev bigint NOT NULL
    );
    INSERT INTO pgbaton.revision VALUES (true, 0) ON CONFLICT DO NOTHING;
    CREATE TABLE IF NOT EXISTS pgbaton.leases (
        id bigserial PRIMARY KEY,
        ttl_ms bigint NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS pgbaton.kv (
        key text PRIMARY KEY,
        value bytea NOT NULL,
        create_rev bigint NOT NULL,
        mod_rev bigint NOT NULL,
        lease bigint REFERENCES pgbaton.leases (id) ON DELETE CASCADE
    );";

/// A key is live when it has no lease or its lease has not yet expired.
const LIVE: &str = "(k.lease IS NULL OR EXISTS (SELECT 1 FROM pgbaton.leases l
     WHERE l.id = k.lease AND l.expires_at > clock_timestamp()))";

struct Conn {
    client: Client,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // A connection stuck on a dead network would otherwise live on.
        self.task.abort();
    }
}

pub struct PostgresStore {
    config: tokio_postgres::Config,
    shown: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

impl PostgresStore {
    /// Connects and creates the tables when they are missing.
    pub async fn open(url: &str, timeout: Duration) -> Result<PostgresStore, StoreError> {
        let shown = crate::config::store_url::without_password(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| StoreError::Failed {
            store: shown.clone(),
            reason: format!("not a valid URL: {e}"),
        })?;
        config.connect_timeout(timeout);
        // A replica that vanishes mid-transaction (a silent network drop)
        // must not leave its backend holding the revision lock: the server
        // ends such a transaction, a lock wait and a statement after one
        // store timeout, and keepalives find the dead peer.
        let ms = timeout.as_millis().max(1);
        config.options(format!(
            "-c idle_in_transaction_session_timeout={ms} -c lock_timeout={ms} -c statement_timeout={ms}"
        ));
        config.keepalives(true);
        config.keepalives_idle(timeout.max(Duration::from_secs(1)));
        if config.get_application_name().is_none() {
            config.application_name("pgbaton coordination");
        }
        let store = PostgresStore {
            config,
            shown,
            timeout,
            conn: Mutex::new(None),
        };
        store
            .run(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.batch_execute(CREATE).await?;
                    tx.commit().await
                })
            })
            .await?;
        Ok(store)
    }

    fn error(&self, e: &tokio_postgres::Error) -> StoreError {
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::FOREIGN_KEY_VIOLATION => {
                StoreError::LeaseNotFound {
                    store: self.shown.clone(),
                    lease: 0,
                }
            }
            Some(db) => StoreError::Failed {
                store: self.shown.clone(),
                reason: format!("{} ({})", db.message(), db.code().code()),
            },
            None => StoreError::Unreachable {
                store: self.shown.clone(),
                reason: e.to_string(),
            },
        }
    }

    /// Runs `f` on the connection (made first when there is none), within
    /// the timeout. A connection that failed or timed out is dropped, and
    /// the next call connects anew.
    async fn run<T: Send>(
        &self,
        f: impl for<'c> FnOnce(
                &'c mut Client,
            ) -> Pin<
                Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
            > + Send,
    ) -> Result<T, StoreError> {
        let mut guard = within(&self.shown, self.timeout, async {
            Ok(self.conn.lock().await)
        })
        .await?;
        if guard.as_ref().is_some_and(|c| c.client.is_closed()) {
            *guard = None;
        }
        if guard.is_none() {
            let connected = within(&self.shown, self.timeout, async {
                self.config
                    .connect(NoTls)
                    .await
                    .map_err(|e| StoreError::Unreachable {
                        store: self.shown.clone(),
                        reason: e.to_string(),
                    })
            })
            .await?;
            let (client, connection) = connected;
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            *guard = Some(Conn { client, task });
        }
        let conn = guard.as_mut().expect("connected above");
        match tokio::time::timeout(self.timeout, f(&mut conn.client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let err = self.error(&e);
                if err.is_unreachable() {
                    *guard = None;
                }
                Err(err)
            }
            Err(_) => {
                *guard = None;
                Err(StoreError::Unreachable {
                    store: self.shown.clone(),
                    reason: format!("no answer within {:?}", self.timeout),
                })
            }
        }
    }
}

fn versioned(row: &Row) -> Versioned {
    Versioned {
        value: row.get("value"),
        create_rev: row.get::<_, i64>("create_rev") as u64,
        mod_rev: row.get::<_, i64>("mod_rev") as u64,
        lease: row.get("lease"),
    }
}

impl CoordStore for PostgresStore {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Versioned>> {
        let key = key.to_string();
        Box::pin(self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT value, create_rev, mod_rev, lease FROM pgbaton.kv k
                     WHERE key = $1 AND {LIVE}"
                );
                Ok(c.query_opt(&sql, &[&key]).await?.as_ref().map(versioned))
            })
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, Vec<(String, Versioned)>> {
        let prefix = prefix.to_string();
        Box::pin(self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT key, value, create_rev, mod_rev, lease FROM pgbaton.kv k
                     WHERE left(key, length($1)) = $1 AND {LIVE} ORDER BY key"
                );
                let rows = c.query(&sql, &[&prefix]).await?;
                Ok(rows
                    .iter()
                    .map(|r| (r.get::<_, String>("key"), versioned(r)))
                    .collect())
            })
        }))
    }

    fn txn<'a>(&'a self, guards: Vec<(String, Cond)>, ops: Vec<Op>) -> StoreFuture<'a, TxnOutcome> {
        Box::pin(self.run(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let mut rev: i64 = tx
                    .query_one("SELECT rev FROM pgbaton.revision FOR UPDATE", &[])
                    .await?
                    .get(0);
                // Expired leases go first, with their keys, at a revision
                // of their own (as etcd deletes them).
                let expired: i64 = tx
                    .query_one(
                        "WITH dead AS (DELETE FROM pgbaton.leases
                                       WHERE expires_at <= clock_timestamp() RETURNING id)
                         SELECT count(*) FROM pgbaton.kv WHERE lease IN (SELECT id FROM dead)",
                        &[],
                    )
                    .await?
                    .get(0);
                if expired > 0 {
                    rev += 1;
                }
                for (i, (key, cond)) in guards.iter().enumerate() {
                    let row = tx
                        .query_opt(
                            "SELECT value, create_rev, mod_rev, lease FROM pgbaton.kv WHERE key = $1",
                            &[key],
                        )
                        .await?;
                    let current = row.as_ref().map(versioned);
                    let holds = match (cond, &current) {
                        (Cond::Absent, None) => true,
                        (Cond::ModRev(r), Some(v)) => v.mod_rev == *r,
                        (Cond::CreateRev(r), Some(v)) => v.create_rev == *r,
                        _ => false,
                    };
                    if !holds {
                        tx.execute("UPDATE pgbaton.revision SET rev = $1", &[&rev])
                            .await?;
                        tx.commit().await?;
                        return Ok(TxnOutcome::Conflict { guard: i, current });
                    }
                }
                rev += 1;
                for op in &ops {
                    match op {
                        Op::Put { key, value, lease } => {
                            tx.execute(
                                "INSERT INTO pgbaton.kv (key, value, create_rev, mod_rev, lease)
                                 VALUES ($1, $2, $3, $3, $4)
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                                     mod_rev = excluded.mod_rev, lease = excluded.lease",
                                &[key, value, &rev, lease],
                            )
                            .await?;
                        }
                        Op::Delete { key } => {
                            tx.execute("DELETE FROM pgbaton.kv WHERE key = $1", &[key])
                                .await?;
                        }
                    }
                }
                tx.execute("UPDATE pgbaton.revision SET rev = $1", &[&rev])
                    .await?;
                tx.commit().await?;
                Ok(TxnOutcome::Committed { rev: rev as u64 })
            })
        }))
    }

    fn lease_grant(&self, ttl: Duration) -> StoreFuture<'_, Lease> {
        let ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        Box::pin(self.run(move |c| {
            Box::pin(async move {
                let id: i64 = c
                    .query_one(
                        "INSERT INTO pgbaton.leases (ttl_ms, expires_at)
                         VALUES ($1::bigint, clock_timestamp() + $1::bigint * interval '1 millisecond')
                         RETURNING id",
                        &[&ms],
                    )
                    .await?
                    .get(0);
                Ok(Lease { id, ttl })
            })
        }))
    }

    fn lease_keepalive(&self, id: LeaseId) -> StoreFuture<'_, bool> {
        Box::pin(self.run(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE pgbaton.leases
                         SET expires_at = clock_timestamp() + ttl_ms * interval '1 millisecond'
                         WHERE id = $1 AND expires_at > clock_timestamp()",
                        &[&id],
                    )
                    .await?;
                Ok(n == 1)
            })
        }))
    }

    fn lease_revoke(&self, id: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(self.run(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                tx.execute("SELECT rev FROM pgbaton.revision FOR UPDATE", &[])
                    .await?;
                let keys: i64 = tx
                    .query_one(
                        "WITH dead AS (DELETE FROM pgbaton.leases WHERE id = $1 RETURNING id)
                         SELECT count(*) FROM pgbaton.kv WHERE lease IN (SELECT id FROM dead)",
                        &[&id],
                    )
                    .await?
                    .get(0);
                if keys > 0 {
                    tx.execute("UPDATE pgbaton.revision SET rev = rev + 1", &[])
                        .await?;
                }
                tx.commit().await
            })
        }))
    }
}
