//! The plans on the in-memory store under a paused clock: proposals that
//! race, the leader's decision and resolution, and the barrier.

use super::plans::{Decision, Draft, FleetState};
use super::records::{Ack, MoveSpec, PlanState};
use super::tests::{until, Fleet, Replica, TTL};
use super::Role;
use crate::config::{Config, Overrides};
use crate::routing::Routing;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A routing of pg1, pg2, pg3 at `addr` (a listener that accepts, so the
/// leader's reachability check passes).
fn routing(addr: std::net::SocketAddr) -> Routing {
    let config = Config::from_toml(
        "",
        &Overrides {
            backends: ["pg1", "pg2", "pg3"]
                .iter()
                .map(|n| format!("{n}={addr}"))
                .collect(),
            ..Default::default()
        },
    )
    .unwrap();
    Routing::from_config(&config)
}

fn draft(r: &Replica, to: &str) -> Draft {
    Draft {
        id: r.cluster.plans.new_id(),
        what: format!("MIGRATE ALL FROM pg1 TO {to}"),
        routing_rev: 0,
        routing: None,
        moves: Some(MoveSpec {
            from: vec!["pg1".into()],
            to: to.into(),
            origin: "admin".into(),
            wait_ms: None,
        }),
    }
}

async fn state_until(r: &Replica, what: &str, f: impl Fn(&FleetState) -> bool) -> FleetState {
    let mut rx = r.cluster.plans.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = rx.borrow_and_update().clone();
        if f(&s) {
            return s;
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep_until(deadline) => panic!("{what}: never happened; last {s:?}"),
        }
    }
}

async fn fleet_of_two() -> (Fleet, Replica, Replica, tokio::net::TcpListener) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fleet = Fleet::new();
    let a = fleet.join("a").await;
    until(&a, "a leads", |v| v.role == Role::Leader).await;
    let b = fleet.join("b").await;
    until(&b, "b sees both", |v| v.nodes.len() == 2).await;
    let (rev, _) = a
        .cluster
        .plans
        .seed(routing(listener.local_addr().unwrap()))
        .await
        .unwrap();
    state_until(&b, "b reads the routing", |s| {
        s.routing.as_ref().is_some_and(|(r, _)| *r == rev)
    })
    .await;
    (fleet, a, b, listener)
}

#[tokio::test(start_paused = true)]
async fn the_earlier_of_two_racing_proposals_wins_and_the_loser_acknowledges() {
    let (fleet, a, b, _listener) = fleet_of_two().await;
    let (da, db) = (draft(&a, "pg3"), draft(&b, "pg2"));
    let (ida, idb) = (da.id.clone(), db.id.clone());
    let wait = Duration::from_secs(10);
    let (ra, rb) = tokio::join!(
        a.cluster.plans.propose(da, wait),
        b.cluster.plans.propose(db, wait)
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    // a's proposal reached the slot first: b read it there, so a's is the
    // earlier one and wins although its target sorts after b's.
    assert!(
        matches!(&ra, Decision::Won { plan, gen: 1 } if *plan == ida),
        "{ra:?}"
    );
    match &rb {
        Decision::Lost {
            plan, winner, why, ..
        } => {
            assert_eq!((plan, winner), (&idb, &ida));
            assert!(why.contains("earlier"), "{why}");
        }
        other => panic!("b's proposal: {other:?}"),
    }
    let s = state_until(&a, "the loser acknowledged", |s| {
        s.adopted.iter().any(|x| x.node == "b" && x.resolution == 1)
    })
    .await;
    assert!(s.conflicts.is_empty(), "the report was settled: {s:?}");
    let (_, plan) = s.plan.unwrap();
    assert_eq!(
        (plan.proposal.id.as_str(), plan.state),
        (ida.as_str(), PlanState::Executing)
    );
    assert_eq!(fleet.events("plan_executing").len(), 1);
    let events = super::history::read(&[&fleet.history]).unwrap();
    assert_eq!(
        super::history::check_conflicts(&events),
        Vec::<String>::new()
    );
    assert_eq!(fleet.verdict(false), Vec::<String>::new());
}

fn ack(r: &Replica, plan: &str, gen: u64, done: bool) -> Ack {
    Ack {
        plan: plan.into(),
        gen,
        node: r.cluster.plans.me().into(),
        done,
        routing_rev: 0,
        rows: Vec::new(),
        moved: 0,
        waiting: usize::from(!done),
        pinned: 0,
        aborted: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn the_barrier_waits_for_every_replica_or_its_lease_and_the_grace() {
    let (_fleet, a, b, _listener) = fleet_of_two().await;
    let d = draft(&b, "pg2");
    let id = d.id.clone();
    let r = b
        .cluster
        .plans
        .propose(d, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(r, Decision::Won { gen: 1, .. }), "{r:?}");
    a.cluster.plans.progress(ack(&a, &id, 1, true));
    b.cluster.plans.progress(ack(&b, &id, 1, false));
    // b is not done: the plan waits, however long.
    tokio::time::sleep(TTL * 5).await;
    let s = a.cluster.plans.state();
    assert_eq!(s.plan.as_ref().unwrap().1.state, PlanState::Executing);
    // b goes silent (cut off): its lease expires, the grace passes, and
    // the plan is done without it.
    b.link.up.store(false, Ordering::SeqCst);
    let cut = tokio::time::Instant::now();
    let s = state_until(&a, "the plan done", |s| {
        s.plan
            .as_ref()
            .is_some_and(|(_, p)| p.state == PlanState::Done)
    })
    .await;
    assert!(
        cut.elapsed() >= TTL * 5 / 3,
        "done {:?} after b went silent, before its lease and the grace",
        cut.elapsed()
    );
    let note = s.plan.unwrap().1.reason.unwrap_or_default();
    assert!(note.contains("did not wait for b"), "{note}");
}

/// A rival proposal from a, landed in the slot between b's read of the
/// slot and b's write (so both read the same empty slot).
fn land_rival(a: &Replica, b: &Replica, to: &str) -> String {
    let rival = crate::cluster::records::PlanRecord {
        proposal: crate::cluster::records::Proposal {
            id: a.cluster.plans.new_id(),
            by: "a".into(),
            what: format!("MIGRATE ALL FROM pg1 TO {to}"),
            seen: 0,
            routing_rev: 0,
            routing: None,
            moves: draft(a, to).moves,
        },
        state: PlanState::Proposed,
        gen: 0,
        term: 0,
        members: Vec::new(),
        reason: None,
    };
    let id = rival.proposal.id.clone();
    *b.link.before_get.lock().unwrap() = Some((
        super::records::ROUTING.to_string(),
        vec![super::store::Op::put(
            super::records::PLAN,
            super::records::encode(&rival),
        )],
    ));
    id
}

#[tokio::test(start_paused = true)]
async fn when_every_racing_proposal_is_refused_each_asker_hears_why_not_a_conflict() {
    let (_fleet, a, b, _listener) = fleet_of_two().await;
    land_rival(&a, &b, "pg9");
    let r = b
        .cluster
        .plans
        .propose(draft(&b, "pg9"), Duration::from_secs(10))
        .await
        .unwrap();
    match r {
        Decision::Aborted { why, .. } => assert!(why.contains("pg9"), "{why}"),
        other => panic!("refused, not lost to an aborted plan: {other:?}"),
    }
    state_until(&a, "the rival aborted too", |s| {
        s.plan
            .as_ref()
            .is_some_and(|(_, p)| p.state == PlanState::Aborted)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn proposals_made_at_the_same_moment_go_to_the_lower_target() {
    let (_fleet, a, b, _listener) = fleet_of_two().await;
    // a's proposal lands between b's read of the slot and b's write: both
    // read the same empty slot, b's write loses, and b files a report.
    let rival_id = land_rival(&a, &b, "pg3");
    let d = draft(&b, "pg2");
    let id = d.id.clone();
    let r = b
        .cluster
        .plans
        .propose(d, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        matches!(&r, Decision::Won { plan, .. } if *plan == id),
        "{r:?}"
    );
    let s = state_until(&a, "a acknowledged its loss", |s| {
        s.adopted.iter().any(|x| x.node == "a")
    })
    .await;
    let res = s.resolutions.last().unwrap();
    assert_eq!(res.winner, id);
    assert_eq!(res.losers.len(), 1);
    assert_eq!(res.losers[0].id, rival_id);
    assert!(
        res.losers[0].why.contains("pg2 sorts before pg3"),
        "{:?}",
        res.losers
    );
}

#[tokio::test(start_paused = true)]
async fn the_barrier_does_not_wait_out_a_replica_that_left_cleanly() {
    let (_fleet, a, b, _listener) = fleet_of_two().await;
    let d = draft(&b, "pg2");
    let id = d.id.clone();
    let r = b
        .cluster
        .plans
        .propose(d, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(matches!(r, Decision::Won { gen: 1, .. }), "{r:?}");
    a.cluster.plans.progress(ack(&a, &id, 1, true));
    b.cluster.plans.progress(ack(&b, &id, 1, false));
    tokio::time::sleep(TTL).await;
    // b stops with SIGTERM: it resigns, and its sessions close with it.
    let left = tokio::time::Instant::now();
    b.cluster.resign().await;
    let s = state_until(&a, "the plan done", |s| {
        s.plan
            .as_ref()
            .is_some_and(|(_, p)| p.state == PlanState::Done)
    })
    .await;
    assert!(
        left.elapsed() < TTL,
        "done {:?} after b resigned: it waited out the grace",
        left.elapsed()
    );
    let note = s.plan.unwrap().1.reason.unwrap_or_default();
    assert!(note.contains("b left the fleet cleanly"), "{note}");
}
