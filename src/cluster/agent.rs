//! One replica's part in the fleet: it registers under a lease, renews it,
//! takes the leader seat when its rank says so, does the leader's fenced
//! writes, and resigns cleanly on shutdown. It runs as one task that owns
//! all of this state; the rest of pgbaton only reads the [`ClusterView`] it
//! publishes, so nothing on a session's path ever waits on the store.
//!
//! Safety comes from the store's guards, never from the lease:
//! - taking the seat is one transaction guarded on "no leader" and on the
//!   term the node read, which it raises;
//! - every leader write is guarded on the leader key's create revision (the
//!   fencing token), so a leader whose lease lapsed is refused even before
//!   anyone replaces it;
//! - a leader stops acting on a local monotonic deadline (renewal *sent* +
//!   granted TTL − margin), before the store can expire its lease.
//!
//! Failures (the rank's currency) are charged once per incident: a
//! registration that ends without a clean resign (by the leader, or by the
//! node's own next registration, whichever comes first); a leader that
//! loses its seat or is fenced while its registration lives.

use super::history::{wall_ms, History};
use super::rank::{initial_failures, ranked, Candidate};
use super::records::*;
use super::store::{self, Cond, CoordStore, Lease, Op, StoreError, TxnOutcome, Versioned};
use crate::config::{ClusterSettings, StoreUrl};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("node id {id:?} is in use by a live replica (client address {addr}, pid {pid}); give this one another --node-id or stop that one")]
    DuplicateNode { id: String, addr: String, pid: u32 },
    #[error("cannot open the cluster history {path}: {source}")]
    History {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub client_addr: String,
    pub admin_addr: String,
    /// Its replica number (the top byte of its cancel secrets).
    pub number: u8,
    pub role: Role,
    /// The term it leads, for the leader.
    pub term: Option<u64>,
    pub failures: u32,
    pub joined_at_ms: u64,
    /// When this replica last read it from the store (wall ms).
    pub last_seen_ms: u64,
    pub is_self: bool,
}

/// What this replica knows of the fleet, as of its last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub store: String,
    pub node_id: String,
    pub role: Role,
    /// The highest term this replica has seen.
    pub term: u64,
    pub leader: Option<String>,
    pub nodes: Vec<NodeView>,
    pub reachable: bool,
    /// Since when the store has not answered (wall ms), and why.
    pub unreachable_since_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// What the plans of the fleet (see [`super::plans`]) need of the agent:
/// the open store, the lease to put this replica's own keys under, and
/// while it leads, the fencing token and until when it may use it.
#[derive(Clone, Default)]
pub struct Seat {
    pub store: Option<Arc<dyn CoordStore>>,
    pub lease: Option<store::LeaseId>,
    pub leading: Option<Fence>,
}

/// A leader's right to write: guard on the leader key's create revision
/// `token`, and only before `until` (the local lease deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub term: u64,
    pub token: u64,
    pub until: Instant,
}

/// The running membership and election of this replica.
pub struct Cluster {
    view: watch::Receiver<ClusterView>,
    stop: std::sync::Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    timeout: Duration,
    /// This replica's number (1–255; 0 without one).
    pub number: u8,
    /// The fleet's routing and plans.
    pub plans: super::plans::Plans,
}

/// A live registration of this process.
#[derive(Debug, Clone, Copy)]
struct Registration {
    lease: Lease,
    instance: u64,
    /// Create revision of the node key: the order of registrations.
    rev: u64,
}

#[derive(Debug, Clone, Copy)]
struct Leadership {
    term: u64,
    /// Create revision of the leader key: the fencing token.
    token: u64,
}

/// One read of the fleet's keys.
struct Snapshot {
    nodes: Vec<(NodeRecord, Versioned)>,
    reliability: HashMap<String, (Reliability, Versioned)>,
    leader: Option<(LeaderRecord, Versioned)>,
    /// The seat's key when it holds something that is not a record.
    garbled_seat: Option<Versioned>,
    term: Option<(u64, Versioned)>,
}

struct Timing {
    tick: Duration,
    margin: Duration,
    backoff: Duration,
}

impl Timing {
    fn for_ttl(ttl: Duration) -> Timing {
        let tick = (ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
        Timing {
            tick,
            margin: (ttl / 5).max(tick * 2),
            backoff: (ttl / 2).max(tick * 2),
        }
    }
}

struct Agent {
    url: StoreUrl,
    store: Option<Arc<dyn CoordStore>>,
    timeout: Duration,
    me: String,
    client_addr: String,
    admin_addr: String,
    ttl: Duration,
    timing: Timing,
    history: Arc<History>,
    reg: Option<Registration>,
    /// Local deadline of the lease: past it, this node acts as if it had
    /// none (no leader duties) until a renewal succeeds.
    deadline: Option<Instant>,
    next_renew: Instant,
    leading: Option<Leadership>,
    /// A seat lost while the registration lived: charged on the next read.
    owed_failure: bool,
    vacant_since: Option<Instant>,
    unreachable_since: Option<u64>,
    last_error: Option<String>,
    term_seen: u64,
    last_seen: HashMap<String, u64>,
    view: watch::Sender<ClusterView>,
    number: u8,
    seat: watch::Sender<Seat>,
}

fn fail(store: &dyn CoordStore, reason: impl Into<String>) -> StoreError {
    StoreError::Failed {
        store: store.describe(),
        reason: reason.into(),
    }
}

impl Cluster {
    /// Opens the store, registers this replica and starts its loop. Fails
    /// when the store is unreachable (unless `start_without_store`), holds
    /// a newer schema, or another live replica has this node id.
    pub async fn start(
        settings: &ClusterSettings,
        listen: std::net::SocketAddr,
    ) -> Result<Cluster, ClusterError> {
        let timeout = settings.store_timeout();
        let store = match store::open(&settings.store, timeout).await {
            Ok(s) => Some(s),
            Err(e) if e.is_unreachable() && settings.start_without_store => {
                tracing::warn!(error = %e, "starting without the coordination store; will keep trying");
                None
            }
            Err(e) => return Err(e.into()),
        };
        Cluster::start_on(settings, listen, store).await
    }

    /// As [`Cluster::start`], on a store already open (tests share one
    /// in-memory store between several agents this way).
    pub async fn start_on(
        settings: &ClusterSettings,
        listen: std::net::SocketAddr,
        store: Option<Arc<dyn CoordStore>>,
    ) -> Result<Cluster, ClusterError> {
        let history =
            History::open(settings.history.as_deref()).map_err(|source| ClusterError::History {
                path: settings
                    .history
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            })?;
        let me = settings.node_id_or_default(listen);
        // Listening on every interface says nothing to another host: the
        // hostname with the port does (a container's service name).
        let client_addr = settings.advertise_client.clone().unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                format!("{}:{}", crate::config::cluster::hostname(), listen.port())
            } else {
                listen.to_string()
            }
        });
        let admin_addr = settings
            .advertise_admin
            .clone()
            .unwrap_or_else(|| client_addr.clone());
        let timeout = settings.store_timeout();
        let number = match &store {
            Some(s) => super::numbers::claim(&**s, &me).await?,
            None => 0,
        };
        let (seat_tx, seat_rx) = watch::channel(Seat::default());
        let (view_tx, view_rx) = watch::channel(ClusterView {
            store: settings.store.to_string(),
            node_id: me.clone(),
            role: Role::Follower,
            term: 0,
            leader: None,
            nodes: Vec::new(),
            reachable: store.is_some(),
            unreachable_since_ms: None,
            last_error: None,
        });
        let mut agent = Agent {
            url: settings.store.clone(),
            store,
            timeout,
            me,
            client_addr,
            admin_addr,
            ttl: settings.lease_ttl,
            timing: Timing::for_ttl(settings.lease_ttl),
            history: Arc::new(history),
            reg: None,
            deadline: None,
            next_renew: Instant::now(),
            leading: None,
            owed_failure: false,
            vacant_since: None,
            unreachable_since: None,
            last_error: None,
            term_seen: 0,
            last_seen: HashMap::new(),
            view: view_tx,
            number,
            seat: seat_tx,
        };
        let history = agent.history.clone();
        if agent.store.is_none() {
            agent.lost(&StoreError::Unreachable {
                store: settings.store.to_string(),
                reason: "not reached at start".into(),
            });
        } else {
            agent.register_at_start().await?;
            agent.tick().await;
        }
        let timing = Timing::for_ttl(settings.lease_ttl);
        let plans = super::plans::Plans::start(super::plans::Setup {
            me: agent.me.clone(),
            seat: seat_rx,
            view: view_rx.clone(),
            history,
            poll: timing.tick.min(Duration::from_millis(100)),
            grace: settings.lease_ttl,
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(agent.run(stop_rx));
        Ok(Cluster {
            view: view_rx,
            stop: std::sync::Mutex::new(Some(stop_tx)),
            timeout,
            number,
            plans,
        })
    }

    pub fn view(&self) -> ClusterView {
        self.view.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Leaves the fleet cleanly: gives up the seat (so a successor is
    /// elected at once), marks the run as ended without a failure, ends
    /// the lease. Returns when done or after a few store timeouts.
    pub async fn resign(&self) {
        let Some(stop) = self.take_stop() else { return };
        let (done_tx, done_rx) = oneshot::channel();
        if stop.send(done_tx).is_ok() {
            let _ = tokio::time::timeout(self.timeout * 4, done_rx).await;
        }
    }

    /// Stops the loop without resigning, as a crash would (tests).
    pub fn abandon(&self) {
        self.take_stop();
    }

    fn take_stop(&self) -> Option<oneshot::Sender<oneshot::Sender<()>>> {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Agent {
    async fn run(mut self, mut stop: oneshot::Receiver<oneshot::Sender<()>>) {
        let mut ticker = tokio::time::interval(self.timing.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick().await,
                done = &mut stop => {
                    if let Ok(done) = done {
                        self.resign().await;
                        let _ = done.send(());
                    }
                    // A dropped sender (abandon) ends the loop as a crash.
                    return;
                }
            }
        }
    }

    fn record(&self, event: &str, term: u64, rev: u64, detail: String) {
        self.history.record(&self.me, event, term, rev, detail);
    }

    fn lost(&mut self, e: &StoreError) {
        if self.unreachable_since.is_none() {
            self.unreachable_since = Some(wall_ms());
            self.record("store_lost", self.term_seen, 0, e.to_string());
        }
        self.last_error = Some(e.to_string());
        self.publish_unreachable();
    }

    fn reached(&mut self) {
        if self.unreachable_since.take().is_some() {
            self.record("store_back", self.term_seen, 0, String::new());
        }
        self.last_error = None;
    }

    fn publish_unreachable(&self) {
        let since = self.unreachable_since;
        let err = self.last_error.clone();
        let leading = self.may_lead(Instant::now());
        let me = self.me.clone();
        self.view.send_modify(|v| {
            v.reachable = false;
            v.unreachable_since_ms = since;
            v.last_error = err;
            if !leading {
                // What the store last said of the others stays; of this
                // node, only what it knows now.
                v.role = Role::Follower;
                if v.leader.as_deref() == Some(me.as_str()) {
                    v.leader = None;
                }
                for n in v.nodes.iter_mut().filter(|n| n.is_self) {
                    n.role = Role::Follower;
                    n.term = None;
                }
            }
        });
    }

    /// A renewal (or the grant) sent at `sent` succeeded: the lease is
    /// surely alive until the local deadline; renew again after a third.
    fn renewed(&mut self, sent: Instant, ttl: Duration) {
        self.deadline = Some(sent + ttl.saturating_sub(self.timing.margin));
        self.next_renew = sent + ttl / 3;
    }

    /// Leader duties only while the lease is surely alive at the store.
    fn may_lead(&self, now: Instant) -> bool {
        self.leading.is_some() && self.deadline.is_some_and(|d| now < d)
    }

    fn step_down(&mut self, why: &str, charge: bool) {
        if let Some(l) = self.leading.take() {
            self.record("step_down", l.term, 0, why.to_string());
            if charge {
                self.owed_failure = true;
            }
            // The plans stop leader work now, not at the end of the tick.
            self.publish_seat();
        }
    }

    async fn store(&mut self) -> Option<Arc<dyn CoordStore>> {
        if let Some(s) = &self.store {
            return Some(s.clone());
        }
        match store::open(&self.url, self.timeout).await {
            Ok(s) => {
                self.store = Some(s.clone());
                Some(s)
            }
            Err(e) => {
                self.lost(&e);
                None
            }
        }
    }

    async fn read(&self, store: &dyn CoordStore) -> Result<Snapshot, StoreError> {
        let mut nodes = Vec::new();
        for (_, v) in store.list(NODES).await? {
            if let Some(n) = decode::<NodeRecord>(&v.value) {
                nodes.push((n, v));
            }
        }
        let mut reliability = HashMap::new();
        for (k, v) in store.list(RELIABILITY).await? {
            // A record that does not decode counts as a clean slate; its
            // revision still guards the write that replaces it.
            let r = decode::<Reliability>(&v.value).unwrap_or_default();
            reliability.insert(k[RELIABILITY.len()..].to_string(), (r, v));
        }
        // A seat that does not decode is held by nobody: a campaign
        // replaces it, guarded on its revision.
        let leader_raw = store.get(LEADER).await?;
        let leader = leader_raw
            .clone()
            .and_then(|v| decode::<LeaderRecord>(&v.value).map(|l| (l, v)));
        let garbled_seat = leader_raw.filter(|_| leader.is_none());
        let term = match store.get(TERM).await? {
            None => None,
            Some(v) => match decode_term(&v.value) {
                Some(t) => Some((t, v)),
                // Reusing a term would break fencing: refuse to go on.
                None => {
                    return Err(fail(
                        store,
                        format!(
                            "{TERM} holds {:?}, not a term; fix or delete it",
                            String::from_utf8_lossy(&v.value)
                        ),
                    ))
                }
            },
        };
        Ok(Snapshot {
            nodes,
            reliability,
            leader,
            garbled_seat,
            term,
        })
    }

    /// The first registration: waits out a registration of this node id
    /// that is still alive (a restart right after a crash) for up to one
    /// lease, then refuses.
    async fn register_at_start(&mut self) -> Result<(), ClusterError> {
        let give_up = Instant::now() + self.ttl + self.timing.tick * 2;
        loop {
            let store = self.store.clone().expect("opened at start");
            match self.register(&*store).await {
                Ok(()) => return Ok(()),
                Err(Registered::Taken(rec)) => {
                    if Instant::now() >= give_up {
                        return Err(ClusterError::DuplicateNode {
                            id: self.me.clone(),
                            addr: rec.client_addr,
                            pid: rec.pid,
                        });
                    }
                    tracing::warn!(node = %self.me, other_pid = rec.pid, "node id registered by a live lease; waiting for it to end");
                    tokio::time::sleep(self.timing.tick).await;
                }
                Err(Registered::Store(e)) => return Err(e.into()),
            }
        }
    }

    /// Registers under a new lease, charging the failure of an earlier run
    /// that ended without a clean resign.
    async fn register(&mut self, store: &dyn CoordStore) -> Result<(), Registered> {
        // The lease runs from when the store granted it, which is after
        // this: time the deadline from the request.
        let sent = Instant::now();
        let lease = store.lease_grant(self.ttl).await?;
        let instance: u64 = rand::random();
        for _ in 0..10 {
            let snap = self.read(store).await?;
            let mine = snap.reliability.get(&self.me);
            let (mut rel, rel_guard) = match mine {
                Some((r, v)) => (r.clone(), Cond::ModRev(v.mod_rev)),
                None => {
                    let live: Vec<u32> = snap
                        .nodes
                        .iter()
                        .map(|(n, _)| snap.reliability.get(&n.id).map_or(0, |(r, _)| r.failures))
                        .collect();
                    (
                        Reliability {
                            failures: initial_failures(&live),
                            running: None,
                            resigned: false,
                        },
                        Cond::Absent,
                    )
                }
            };
            let charged = rel.running.is_some();
            if charged {
                rel.failures = rel.failures.saturating_add(1);
            }
            rel.running = Some(instance);
            rel.resigned = false;
            let record = NodeRecord {
                id: self.me.clone(),
                client_addr: self.client_addr.clone(),
                admin_addr: self.admin_addr.clone(),
                joined_at_ms: wall_ms(),
                instance,
                pid: std::process::id(),
                number: self.number,
            };
            let guards = vec![
                (node_key(&self.me), Cond::Absent),
                (reliability_key(&self.me), rel_guard),
            ];
            let ops = vec![
                Op::put_leased(node_key(&self.me), encode(&record), lease.id),
                Op::put(reliability_key(&self.me), encode(&rel)),
            ];
            let outcome = store.txn(guards, ops).await?;
            let ours = match &outcome {
                TxnOutcome::Committed { rev } => Some((
                    *rev,
                    format!(
                        "failures {} lease {}ms",
                        rel.failures,
                        lease.ttl.as_millis()
                    ),
                )),
                // Our own registration, whose answer was lost (a retry on
                // another member, a timeout after the commit): it stands.
                TxnOutcome::Conflict {
                    guard: 0,
                    current: Some(v),
                } if decode::<NodeRecord>(&v.value).is_some_and(|r| r.instance == instance) => {
                    Some((
                        v.create_rev,
                        format!("failures {} (its answer was lost; it stands)", rel.failures),
                    ))
                }
                _ => None,
            };
            if let Some((rev, detail)) = ours {
                if charged {
                    self.record(
                        "charged",
                        self.term_seen,
                        rev,
                        format!(
                            "{}: its last run ended without a clean resign (failures {})",
                            self.me, rel.failures
                        ),
                    );
                }
                // An incident is charged once: the lapsed registration just
                // was.
                self.owed_failure = false;
                self.reg = Some(Registration {
                    lease,
                    instance,
                    rev,
                });
                self.renewed(sent, lease.ttl);
                self.record("registered", self.term_seen, rev, detail);
                return Ok(());
            }
            // Not ours: guard 0 means a live registration holds the id;
            // another guard, that the reliability record moved (the leader
            // charged it): read again.
            if let TxnOutcome::Conflict { guard: 0, current } = outcome {
                let _ = store.lease_revoke(lease.id).await;
                let rec = current
                    .and_then(|v| decode::<NodeRecord>(&v.value))
                    .unwrap_or(NodeRecord {
                        id: self.me.clone(),
                        client_addr: "?".into(),
                        admin_addr: "?".into(),
                        joined_at_ms: 0,
                        instance: 0,
                        pid: 0,
                        number: 0,
                    });
                return Err(Registered::Taken(rec));
            }
        }
        let _ = store.lease_revoke(lease.id).await;
        Err(Registered::Store(fail(
            store,
            "the reliability record kept changing during registration",
        )))
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        if self.leading.is_some() && !self.may_lead(now) {
            // The store may still hold the lease, but this node can no
            // longer be sure: stop leading before the store could lapse it.
            self.step_down("local lease deadline passed", true);
        }
        let Some(store) = self.store().await else {
            self.publish_seat();
            return;
        };
        if let Err(e) = self.step(&*store).await {
            self.lost(&e);
        }
        self.publish_seat();
    }

    /// Tells the plans what they may do now.
    fn publish_seat(&self) {
        let leading = match (self.leading, self.deadline) {
            (Some(l), Some(until)) if Instant::now() < until => Some(Fence {
                term: l.term,
                token: l.token,
                until,
            }),
            _ => None,
        };
        self.seat.send_replace(Seat {
            store: self.store.clone(),
            lease: self.reg.map(|r| r.lease.id),
            leading,
        });
    }

    async fn step(&mut self, store: &dyn CoordStore) -> Result<(), StoreError> {
        if self.reg.is_none() {
            match self.register(store).await {
                Ok(()) => {}
                Err(Registered::Store(e)) => return Err(e),
                Err(Registered::Taken(rec)) => {
                    // Our own lapsed key cannot be it (its lease is gone);
                    // another process took the id while we were away.
                    return Err(fail(
                        store,
                        format!(
                            "node id {} was taken by pid {} while this replica was cut off",
                            self.me, rec.pid
                        ),
                    ));
                }
            }
        }
        let reg = self.reg.expect("registered above");
        if Instant::now() >= self.next_renew {
            let sent = Instant::now();
            if store.lease_keepalive(reg.lease.id).await? {
                self.renewed(sent, reg.lease.ttl);
            } else {
                // The lease lapsed at the store: everything under it is
                // gone. Register anew (which charges the failure).
                self.step_down("lease expired at the store", false);
                self.reg = None;
                self.deadline = None;
                self.record("lease_lost", self.term_seen, 0, String::new());
                return Box::pin(self.step(store)).await;
            }
        }
        let snap = self.read(store).await?;
        self.reached();
        if let Some((t, _)) = &snap.term {
            self.term_seen = self.term_seen.max(*t);
        }
        self.check_seat(&snap, reg);
        if self.leading.is_none() {
            self.release_stale_seat(store, &snap, reg).await?;
        }
        if self.owed_failure {
            self.charge_self(store, &snap).await?;
        }
        if self.leading.is_some() {
            self.lead(store, &snap).await?;
        } else if snap.leader.is_none() {
            self.campaign(store, &snap, reg).await?;
        } else {
            self.vacant_since = None;
        }
        let snap = if self.leading.is_some() || snap.leader.is_none() {
            // The seat or the records may have changed: show the result.
            self.read(store).await?
        } else {
            snap
        };
        self.publish(&snap);
        Ok(())
    }

    /// Does the store still say this node leads?
    fn check_seat(&mut self, snap: &Snapshot, reg: Registration) {
        let Some(l) = self.leading else { return };
        let holds = snap.leader.as_ref().is_some_and(|(rec, v)| {
            rec.node == self.me && rec.instance == reg.instance && v.create_rev == l.token
        });
        if !holds {
            self.step_down("the leader key is no longer this node's", true);
        }
    }

    /// A seat this node still holds at the store after it stopped leading
    /// (its deadline passed while the store was slow, and the lease lived):
    /// nobody else would campaign while the key is there, so give it back.
    async fn release_stale_seat(
        &mut self,
        store: &dyn CoordStore,
        snap: &Snapshot,
        reg: Registration,
    ) -> Result<(), StoreError> {
        let Some((rec, v)) = &snap.leader else {
            return Ok(());
        };
        if rec.node != self.me || rec.instance != reg.instance {
            return Ok(());
        }
        let out = store
            .txn(
                vec![(LEADER.to_string(), Cond::CreateRev(v.create_rev))],
                vec![Op::delete(LEADER)],
            )
            .await?;
        if let TxnOutcome::Committed { rev } = out {
            self.record(
                "released",
                rec.term,
                rev,
                "gave back a seat it had stopped acting on".into(),
            );
        }
        Ok(())
    }

    async fn charge_self(
        &mut self,
        store: &dyn CoordStore,
        snap: &Snapshot,
    ) -> Result<(), StoreError> {
        let Some((rel, v)) = snap.reliability.get(&self.me) else {
            return Ok(());
        };
        let mut rel = rel.clone();
        rel.failures = rel.failures.saturating_add(1);
        let Some(reg) = self.reg else { return Ok(()) };
        let key = reliability_key(&self.me);
        // Only while this registration lives: when it lapsed, the next
        // registration charges the incident (once).
        let outcome = store
            .txn(
                vec![
                    (key.clone(), Cond::ModRev(v.mod_rev)),
                    (node_key(&self.me), Cond::CreateRev(reg.rev)),
                ],
                vec![Op::put(key, encode(&rel))],
            )
            .await?;
        if let TxnOutcome::Committed { rev } = outcome {
            self.owed_failure = false;
            self.record(
                "charged",
                self.term_seen,
                rev,
                format!(
                    "{}: lost the leader seat (failures {})",
                    self.me, rel.failures
                ),
            );
        }
        Ok(())
    }

    async fn campaign(
        &mut self,
        store: &dyn CoordStore,
        snap: &Snapshot,
        reg: Registration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let vacant_since = *self.vacant_since.get_or_insert(now);
        let order = ranked(
            snap.nodes
                .iter()
                .map(|(n, v)| Candidate {
                    id: n.id.clone(),
                    failures: snap.reliability.get(&n.id).map_or(0, |(r, _)| r.failures),
                    joined_rev: v.create_rev,
                })
                .collect(),
        );
        let Some(place) = order.iter().position(|c| c.id == self.me) else {
            return Ok(());
        };
        // Rank gates who tries; the guarded transaction decides who wins.
        if now.duration_since(vacant_since) < self.timing.backoff * place as u32 {
            return Ok(());
        }
        if !self.deadline.is_some_and(|d| now < d) {
            return Ok(());
        }
        let (term, term_guard) = match &snap.term {
            Some((t, v)) => (*t, Cond::ModRev(v.mod_rev)),
            None => (0, Cond::Absent),
        };
        let Some(next) = term.checked_add(1) else {
            return Err(fail(store, "the term has reached its maximum"));
        };
        let rec = LeaderRecord {
            node: self.me.clone(),
            term: next,
            instance: reg.instance,
        };
        let seat = match &snap.garbled_seat {
            Some(v) => Cond::ModRev(v.mod_rev),
            None => Cond::Absent,
        };
        let guards = vec![
            (LEADER.to_string(), seat),
            (TERM.to_string(), term_guard),
            (node_key(&self.me), Cond::CreateRev(reg.rev)),
        ];
        let ops = vec![
            Op::put_leased(LEADER, encode(&rec), reg.lease.id),
            Op::put(TERM, next.to_string().into_bytes()),
        ];
        match store.txn(guards, ops).await {
            Ok(TxnOutcome::Committed { rev }) => {
                self.leading = Some(Leadership {
                    term: next,
                    token: rev,
                });
                self.term_seen = next;
                self.vacant_since = None;
                let ranks: Vec<String> = order
                    .iter()
                    .map(|c| format!("{}:{}", c.id, c.failures))
                    .collect();
                self.record(
                    "elected",
                    next,
                    rev,
                    format!("rank {place} of [{}]", ranks.join(" ")),
                );
                Ok(())
            }
            Ok(TxnOutcome::Conflict { .. }) => Ok(()),
            Err(StoreError::LeaseNotFound { .. }) => {
                self.reg = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A fenced write: applied only while this node's leader key (by its
    /// create revision) is still there. Refused means fenced: step down.
    async fn fenced(
        &mut self,
        store: &dyn CoordStore,
        mut guards: Vec<(String, Cond)>,
        ops: Vec<Op>,
        what: &str,
    ) -> Result<Option<u64>, StoreError> {
        let Some(l) = self.leading else {
            return Ok(None);
        };
        if !self.may_lead(Instant::now()) {
            self.step_down("local lease deadline passed", true);
            return Ok(None);
        }
        guards.insert(0, (LEADER.to_string(), Cond::CreateRev(l.token)));
        match store.txn(guards, ops).await? {
            TxnOutcome::Committed { rev } => {
                self.record("fenced_write", l.term, rev, what.to_string());
                Ok(Some(rev))
            }
            TxnOutcome::Conflict { guard: 0, current } => {
                let by = current
                    .and_then(|v| decode::<LeaderRecord>(&v.value))
                    .map_or("nobody".to_string(), |r| {
                        format!("{} (term {})", r.node, r.term)
                    });
                self.record(
                    "write_refused",
                    l.term,
                    0,
                    format!("{what}: the seat is now {by}'s"),
                );
                self.step_down("fenced", true);
                Ok(None)
            }
            TxnOutcome::Conflict { .. } => Ok(None),
        }
    }

    /// The leader's duties: charge nodes whose registration ended without
    /// a clean resign, and publish the fleet's summary.
    async fn lead(&mut self, store: &dyn CoordStore, snap: &Snapshot) -> Result<(), StoreError> {
        let live: HashMap<&str, u64> = snap
            .nodes
            .iter()
            .map(|(n, _)| (n.id.as_str(), n.instance))
            .collect();
        for (id, (rel, v)) in &snap.reliability {
            let Some(instance) = rel.running else {
                continue;
            };
            if live.get(id.as_str()) == Some(&instance) {
                continue;
            }
            let charged = Reliability {
                failures: rel.failures.saturating_add(1),
                running: None,
                resigned: false,
            };
            let key = reliability_key(id);
            let what = format!(
                "charged {id}: its registration lapsed without a clean resign (failures {})",
                charged.failures
            );
            // The node's key must still be gone: it may have registered
            // again (charging itself) between the two lists of the read.
            if self
                .fenced(
                    store,
                    vec![
                        (key.clone(), Cond::ModRev(v.mod_rev)),
                        (node_key(id), Cond::Absent),
                    ],
                    vec![Op::put(key, encode(&charged))],
                    &what,
                )
                .await?
                .is_some()
            {
                self.record("charged", self.term_seen, 0, what);
            }
            if self.leading.is_none() {
                return Ok(());
            }
        }
        let Some(l) = self.leading else { return Ok(()) };
        let mut members: Vec<String> = snap.nodes.iter().map(|(n, _)| n.id.clone()).collect();
        members.sort();
        let summary = FleetRecord {
            term: l.term,
            leader: self.me.clone(),
            members,
        };
        let current = store.get(FLEET).await?;
        if current
            .as_ref()
            .and_then(|v| decode::<FleetRecord>(&v.value))
            .as_ref()
            != Some(&summary)
        {
            let guard = match &current {
                Some(v) => Cond::ModRev(v.mod_rev),
                None => Cond::Absent,
            };
            self.fenced(
                store,
                vec![(FLEET.to_string(), guard)],
                vec![Op::put(FLEET, encode(&summary))],
                "fleet summary",
            )
            .await?;
        }
        Ok(())
    }

    fn publish(&mut self, snap: &Snapshot) {
        let now_ms = wall_ms();
        let leader = snap.leader.as_ref().map(|(l, _)| l.clone());
        let mut nodes: Vec<NodeView> = snap
            .nodes
            .iter()
            .map(|(n, _)| {
                self.last_seen.insert(n.id.clone(), now_ms);
                let leads = leader
                    .as_ref()
                    .is_some_and(|l| l.node == n.id && l.instance == n.instance);
                NodeView {
                    id: n.id.clone(),
                    client_addr: n.client_addr.clone(),
                    admin_addr: n.admin_addr.clone(),
                    number: n.number,
                    role: if leads { Role::Leader } else { Role::Follower },
                    term: leads.then(|| leader.as_ref().map_or(0, |l| l.term)),
                    failures: snap.reliability.get(&n.id).map_or(0, |(r, _)| r.failures),
                    joined_at_ms: n.joined_at_ms,
                    last_seen_ms: now_ms,
                    is_self: n.id == self.me,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let role = if self.may_lead(Instant::now()) {
            Role::Leader
        } else {
            Role::Follower
        };
        let view = ClusterView {
            store: self.url.to_string(),
            node_id: self.me.clone(),
            role,
            term: self.term_seen,
            leader: leader.map(|l| l.node),
            nodes,
            reachable: true,
            unreachable_since_ms: None,
            last_error: None,
        };
        self.view.send_if_modified(|v| {
            // last_seen changes every read; publish only real changes, and
            // the time with them.
            let same = v.role == view.role
                && v.term == view.term
                && v.leader == view.leader
                && v.reachable
                && v.nodes.len() == view.nodes.len()
                && v.nodes.iter().zip(&view.nodes).all(|(a, b)| {
                    NodeView {
                        last_seen_ms: 0,
                        ..a.clone()
                    } == NodeView {
                        last_seen_ms: 0,
                        ..b.clone()
                    }
                });
            if same {
                for (a, b) in v.nodes.iter_mut().zip(&view.nodes) {
                    a.last_seen_ms = b.last_seen_ms;
                }
                false
            } else {
                *v = view;
                true
            }
        });
    }

    /// SIGTERM: hand the seat back, end the run without a failure, end the
    /// lease. A successor sees the empty seat on its next read.
    async fn resign(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let Some(reg) = self.reg else { return };
        if let Some(l) = self.leading.take() {
            let r = store
                .txn(
                    vec![(LEADER.to_string(), Cond::CreateRev(l.token))],
                    vec![Op::delete(LEADER)],
                )
                .await;
            self.record(
                "resigned",
                l.term,
                r.ok().and_then(|o| o.committed()).unwrap_or(0),
                "gave up the leader seat".into(),
            );
        }
        for _ in 0..5 {
            let Ok(Some(v)) = store.get(&reliability_key(&self.me)).await else {
                break;
            };
            let Some(mut rel) = decode::<Reliability>(&v.value) else {
                break;
            };
            if rel.running != Some(reg.instance) {
                break;
            }
            rel.running = None;
            rel.resigned = true;
            let key = reliability_key(&self.me);
            let outcome = store
                .txn(
                    vec![
                        (key.clone(), Cond::ModRev(v.mod_rev)),
                        (node_key(&self.me), Cond::CreateRev(reg.rev)),
                    ],
                    vec![Op::put(key, encode(&rel)), Op::delete(node_key(&self.me))],
                )
                .await;
            match outcome {
                Ok(TxnOutcome::Committed { rev }) => {
                    self.record("left", self.term_seen, rev, "clean resign".into());
                    break;
                }
                Ok(TxnOutcome::Conflict { .. }) => continue,
                Err(_) => break,
            }
        }
        let _ = store.lease_revoke(reg.lease.id).await;
        self.reg = None;
        self.publish_seat();
    }
}

enum Registered {
    /// A live registration holds this node id.
    Taken(NodeRecord),
    Store(StoreError),
}

impl From<StoreError> for Registered {
    fn from(e: StoreError) -> Self {
        Registered::Store(e)
    }
}
