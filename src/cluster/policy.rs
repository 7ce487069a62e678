//! How the leader settles proposals that raced for the plan slot
//! (US11914571B1: writes succeed unless the store detects a conflict; the
//! primary resolves what it detected). Deterministic, so every leader of
//! every term decides the same from the same records:
//!
//! 1. An executing plan is never replaced (it is aborted only when it
//!    fails); every proposal that raced it loses.
//! 2. Among the proposals still open (the one in the slot and the reports
//!    of those that lost the write), one that changes the routing but was
//!    computed against another revision than the committed one is stale
//!    and loses: it would undo what was committed since.
//! 3. One that the leader's checks refuse (an unknown backend, a removed
//!    backend that sessions still run on, an unreachable target) loses
//!    with that reason.
//! 4. Of the rest, the earlier proposal wins: the one whose proposer read
//!    the older plan slot (`seen`). Proposals made at the same moment read
//!    the same slot, so then the lower target name wins, then the lower
//!    node id.

use super::records::{Loser, Proposal};

/// What the leader decided on the open proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub winner: Option<Proposal>,
    pub losers: Vec<Loser>,
}

fn loser(p: &Proposal, why: String) -> Loser {
    Loser {
        id: p.id.clone(),
        by: p.by.clone(),
        what: p.what.clone(),
        why,
    }
}

/// Rule 1: every report against an executing plan loses.
pub fn against_executing(executing: &Proposal, reports: &[Proposal]) -> Vec<Loser> {
    reports
        .iter()
        .filter(|r| r.id != executing.id)
        .map(|r| {
            loser(
                r,
                format!(
                    "plan {} ({}) was executing, and an executing plan is never replaced",
                    executing.id, executing.what
                ),
            )
        })
        .collect()
}

/// Rules 2–4. `refused` is the leader's check of each candidate (in the
/// same order): `Some(reason)` refuses it.
pub fn decide(candidates: &[Proposal], routing_rev: u64, refused: &[Option<String>]) -> Decision {
    let mut losers = Vec::new();
    let mut open: Vec<&Proposal> = Vec::new();
    for (p, why) in candidates.iter().zip(refused) {
        if p.routing.is_some() && p.routing_rev != routing_rev {
            losers.push(loser(
                p,
                format!(
                    "it changes the routing as of revision {}, but the fleet's routing is now at revision {routing_rev}; propose again",
                    p.routing_rev
                ),
            ));
        } else if let Some(why) = why {
            losers.push(loser(p, why.clone()));
        } else {
            open.push(p);
        }
    }
    open.sort_by(|a, b| {
        (
            a.seen,
            a.target().unwrap_or(""),
            a.by.as_str(),
            a.id.as_str(),
        )
            .cmp(&(
                b.seen,
                b.target().unwrap_or(""),
                b.by.as_str(),
                b.id.as_str(),
            ))
    });
    let Some((winner, rest)) = open.split_first() else {
        return Decision {
            winner: None,
            losers,
        };
    };
    for p in rest {
        let why = if p.seen != winner.seen {
            format!(
                "plan {} ({}) was proposed earlier (it read plan slot revision {}, this one {})",
                winner.id, winner.what, winner.seen, p.seen
            )
        } else if p.target() != winner.target() {
            format!(
                "plan {} ({}) was proposed at the same moment, and its target {} sorts before {}",
                winner.id,
                winner.what,
                winner.target().unwrap_or("(none)"),
                p.target().unwrap_or("(none)")
            )
        } else {
            format!(
                "plan {} ({}) was proposed at the same moment with the same target, by node {} which sorts first",
                winner.id, winner.what, winner.by
            )
        };
        losers.push(loser(p, why));
    }
    Decision {
        winner: Some((*winner).clone()),
        losers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::records::MoveSpec;

    fn p(id: &str, by: &str, seen: u64, to: &str) -> Proposal {
        Proposal {
            id: id.into(),
            by: by.into(),
            what: format!("MIGRATE ALL FROM pg1 TO {to}"),
            seen,
            routing_rev: 5,
            routing: None,
            moves: Some(MoveSpec {
                from: vec!["pg1".into()],
                to: to.into(),
                origin: "admin".into(),
                wait_ms: None,
            }),
        }
    }

    #[test]
    fn same_moment_lower_target_wins_whoever_wrote_first() {
        let a = p("a-1", "a", 7, "pg3");
        let b = p("b-1", "b", 7, "pg2");
        for order in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
            let d = decide(&order, 5, &[None, None]);
            assert_eq!(d.winner.as_ref().unwrap().id, "b-1");
            assert_eq!(d.losers.len(), 1);
            assert_eq!(d.losers[0].id, "a-1");
            assert!(
                d.losers[0].why.contains("sorts before pg3"),
                "{:?}",
                d.losers
            );
        }
    }

    #[test]
    fn the_earlier_view_wins_over_the_lower_name() {
        let d = decide(
            &[p("a-1", "a", 9, "pg2"), p("b-1", "b", 7, "pg3")],
            5,
            &[None, None],
        );
        assert_eq!(d.winner.unwrap().id, "b-1");
        assert!(d.losers[0].why.contains("earlier"));
    }

    #[test]
    fn refused_and_stale_proposals_lose_with_their_reason() {
        let mut stale = p("c-1", "c", 1, "pg1");
        stale.routing = Some(crate::routing::Routing {
            version: 0,
            backends: vec![],
            default: "pg1".into(),
            draining: Default::default(),
            added: Default::default(),
            chosen_default: false,
        });
        stale.routing_rev = 4;
        let d = decide(
            &[p("a-1", "a", 7, "pg2"), p("b-1", "b", 7, "pg9"), stale],
            5,
            &[None, Some("unknown backend \"pg9\"".into()), None],
        );
        assert_eq!(d.winner.unwrap().id, "a-1");
        let why: Vec<&str> = d.losers.iter().map(|l| l.why.as_str()).collect();
        assert!(why[0].contains("pg9"), "{why:?}");
        assert!(why[1].contains("revision 4"), "{why:?}");
    }

    #[test]
    fn nothing_open_means_no_winner() {
        let d = decide(&[p("a-1", "a", 7, "pg9")], 5, &[Some("no".into())]);
        assert!(d.winner.is_none());
        assert_eq!(d.losers.len(), 1);
    }

    #[test]
    fn an_executing_plan_beats_every_report() {
        let l = against_executing(&p("a-1", "a", 7, "pg3"), &[p("b-1", "b", 3, "pg2")]);
        assert_eq!(l.len(), 1);
        assert!(l[0].why.contains("never replaced"));
    }
}
