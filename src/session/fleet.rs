//! Moves of many sessions at once: MIGRATE ALL FROM a TO b, the comment's
//! `from=`, SCALE OUT and drains. They are fleet-wide: the fleet's plans
//! (`cluster::plans`) decide them, and the [`Executor`] carries a committed
//! plan out on this replica's sessions. Each session moves on its own task
//! at its own safe point; progress shows in SHOW MIGRATIONS and SHOW PLANS.
//!
//! They live with the sessions, not in the proxy that calls them too,
//! because a session's own `from=` comment starts one.

use super::env::Env;
use super::registry::SessionEntry;
use crate::cluster::plans::{Decision, Draft};
use crate::cluster::records::{Ack, AckRow, MoveSpec, PlanRecord, PlanState};
use crate::config::Backend;
use crate::migration::identity::{split_brain_warning, writes};
use crate::migration::{MoveError, MoveOutcome, MoveRequest, OnTimeout, Origin};
use crate::protocol::startup::StartupParam;
use crate::protocol::SqlState;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Asked before a fleet-wide move onto `to`: is `to` a promoted copy of a
/// backend whose sessions would move, while that backend still takes
/// writes? One warning per such backend. Each backend is asked on a control
/// connection that logs in as one of its sessions does; a backend that
/// cannot be asked gives no warning (the moves themselves will say more).
pub async fn split_brain_warnings(env: &Env, from: Option<&str>, to: &str) -> Vec<String> {
    let routing = env.routing.current();
    let moves = env.move_env();
    // A foreign target is declared independent of the sources.
    let Some(target) = routing.backend(to).filter(|b| !b.foreign).cloned() else {
        return Vec::new();
    };
    let mut sources: BTreeMap<String, Arc<SessionEntry>> = BTreeMap::new();
    for e in env.sessions.list() {
        let on = e.backend();
        if on != to && from.map_or(true, |f| f == on) {
            sources.entry(on).or_insert(e);
        }
    }
    let login = |e: &SessionEntry| {
        let param = |n: &str, v: &str| StartupParam {
            name: n.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        vec![param("user", &e.user), param("database", &e.database)]
    };
    let Some(any) = sources.values().next() else {
        return Vec::new();
    };
    let Ok((system, true)) = writes(&moves, &target, &login(any), &any.user).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, e) in &sources {
        let Some(source) = routing.backend(name) else {
            continue;
        };
        if let Ok((s, true)) = writes(&moves, source, &login(e), &e.user).await {
            if s == system {
                out.push(split_brain_warning(name, to));
            }
        }
    }
    out
}

/// A fleet-wide move of every session on `from` (every session not on `to`
/// when `from` is `None`) as a proposal, checked against this replica's
/// routing. Also returns how many of this replica's sessions it selects
/// now.
pub fn move_draft(
    env: &Env,
    from: Option<&str>,
    to: &str,
    origin: Origin,
) -> Result<(Draft, usize), MoveError> {
    let routing = env.routing.current();
    if let Some(f) = from {
        if routing.backend(f).is_none() {
            return Err(MoveError::UnknownBackend(f.to_string()));
        }
    }
    if routing.backend(to).is_none() {
        return Err(MoveError::UnknownBackend(to.to_string()));
    }
    if from == Some(to) {
        return Err(MoveError::SameBackend(to.to_string()));
    }
    let spec = MoveSpec {
        from: from.map(|f| vec![f.to_string()]).unwrap_or_default(),
        to: to.to_string(),
        origin: match origin {
            Origin::ScaleOut => "scale-out",
            Origin::Drain => "drain",
            Origin::Admin | Origin::Comment => "admin",
        }
        .to_string(),
        wait_ms: None,
    };
    let here = selected_here(env, &spec);
    let what = match from {
        Some(f) => format!("MIGRATE ALL FROM {f} TO {to}"),
        None => format!("MIGRATE ALL TO {to}"),
    };
    Ok((
        Draft {
            id: env.plans.new_id(),
            what,
            routing_rev: routing.version,
            routing: None,
            moves: Some(spec),
        },
        here,
    ))
}

/// SCALE OUT as a proposal: `backend` (added when new, no longer drained)
/// becomes the fleet's default and every session moves there.
pub fn scale_out_draft(env: &Env, backend: Backend) -> (Draft, usize) {
    let routing = env.routing.current();
    let name = backend.name.clone();
    let next = routing.scaled_out(Backend {
        draining: false,
        ..backend
    });
    let spec = MoveSpec {
        from: Vec::new(),
        to: name.clone(),
        origin: "scale-out".into(),
        wait_ms: None,
    };
    let here = selected_here(env, &spec);
    (
        Draft {
            id: env.plans.new_id(),
            what: format!("SCALE OUT TO {name}"),
            routing_rev: routing.version,
            routing: Some(next),
            moves: Some(spec),
        },
        here,
    )
}

/// How long whoever asks for a fleet-wide change waits for the leader's
/// decision (normally two polls, a fraction of a second) before it answers
/// that the change is proposed but not decided yet.
pub const DECIDE_WAIT: Duration = Duration::from_secs(5);

/// Proposes `draft` and waits for the decision: `Ok(notice)` when it was
/// committed (or is still undecided, said in the notice), `Err` with a
/// SQLSTATE when it will not happen.
pub async fn propose(
    env: &Env,
    draft: Draft,
) -> Result<(String, Option<String>), (SqlState, String)> {
    let d = env
        .plans
        .propose(draft, DECIDE_WAIT)
        .await
        .map_err(|e| (e.sqlstate(), format!("pgbaton: {e}")))?;
    let plan = match &d {
        Decision::Won { plan, .. }
        | Decision::Lost { plan, .. }
        | Decision::Aborted { plan, .. }
        | Decision::Undecided { plan } => plan.clone(),
    };
    answer(&d).map(|notice| (plan, notice))
}

/// How a decision reads for whoever asked: `Err` with a SQLSTATE when the
/// change will not happen, `Ok(Some(notice))` when it is not decided yet.
pub fn answer(d: &Decision) -> Result<Option<String>, (SqlState, String)> {
    match d {
        Decision::Won { .. } => Ok(None),
        Decision::Undecided { plan } => Ok(Some(format!(
            "pgbaton: plan {plan} is proposed; no leader has decided it yet (SHOW PLANS shows its fate)"
        ))),
        Decision::Lost {
            plan,
            resolution,
            winner,
            winner_what,
            why,
        } => Err((
            SqlState::T_R_SERIALIZATION_FAILURE,
            format!(
                "pgbaton: plan {plan} lost a conflict to plan {winner} ({winner_what}): {why} (resolution {resolution}; see SHOW CONFLICTS)"
            ),
        )),
        Decision::Aborted { plan, why } => Err((
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("pgbaton: plan {plan} was refused by the leader: {why}"),
        )),
    }
}

/// Carries out the fleet's plans on this replica's own sessions: every
/// session the plan selects gets one move; each move's outcome becomes a
/// row of this replica's acknowledgement. While a plan executes, sessions
/// that come onto its sources later are moved too.
#[derive(Default)]
pub struct Executor {
    run: Option<PlanRun>,
    /// Plans this replica has finished (a done plan is not run again).
    finished: BTreeSet<String>,
}

struct PlanRun {
    plan: String,
    gen: u64,
    rows: Arc<Mutex<BTreeMap<u64, AckRow>>>,
    /// The sessions the first step selected: the plan is done here once
    /// they all have an outcome. Sessions that come onto a source later
    /// are moved too, but do not hold the plan up (under a stream of new
    /// connections it would never end).
    first: Option<BTreeSet<u64>>,
}

/// How many of this replica's sessions `spec` selects now.
fn selected_here(env: &Env, spec: &MoveSpec) -> usize {
    env.sessions
        .list()
        .iter()
        .filter(|e| selects(spec, &e.backend()))
        .count()
}

fn selects(spec: &MoveSpec, on: &str) -> bool {
    if spec.from.is_empty() {
        on != spec.to
    } else {
        spec.from.iter().any(|f| f == on)
    }
}

fn row_of(session: u64, from: &str, to: &str, result: &Result<MoveOutcome, MoveError>) -> AckRow {
    let (status, reason, pause, total) = match result {
        Ok(o) => ("done", None, Some(o.pause), Some(o.total)),
        Err(MoveError::AlreadyThere(_)) => ("done", Some("already there".to_string()), None, None),
        Err(MoveError::Ended) => ("done", Some("the session ended".to_string()), None, None),
        Err(e @ MoveError::Pinned(_)) => ("pinned", Some(e.to_string()), None, None),
        Err(e) => ("aborted", Some(e.to_string()), None, None),
    };
    AckRow {
        session,
        from: from.to_string(),
        to: to.to_string(),
        status: status.to_string(),
        reason,
        pause_us: pause.map(|d| d.as_micros() as u64),
        total_us: total.map(|d| d.as_micros() as u64),
    }
}

impl Executor {
    /// Starts the moves `plan` asks of this replica that have not started
    /// yet, and returns its progress; `None` when the plan asks nothing of
    /// it (proposed, aborted, or done and finished here).
    pub fn step(
        &mut self,
        env: &Env,
        plan: &PlanRecord,
        node: &str,
        routing_rev: u64,
    ) -> Option<Ack> {
        let id = &plan.proposal.id;
        let spec = plan.proposal.moves.as_ref();
        match plan.state {
            PlanState::Executing => {}
            // A replica that was away while the plan ran catches up.
            PlanState::Done if !self.finished.contains(id) => {}
            _ => return None,
        }
        if self
            .run
            .as_ref()
            .map_or(true, |r| r.plan != *id || r.gen != plan.gen)
        {
            self.run = Some(PlanRun {
                plan: id.clone(),
                gen: plan.gen,
                rows: Arc::default(),
                first: None,
            });
        }
        let run = self.run.as_mut().expect("set above");
        if let Some(spec) = spec {
            let config = env.config();
            let (origin, on_timeout) = match spec.origin.as_str() {
                "drain" => (Origin::Drain, config.drain_on_timeout),
                "scale-out" => (Origin::ScaleOut, OnTimeout::Abort),
                _ => (Origin::Admin, OnTimeout::Abort),
            };
            for entry in env.sessions.list() {
                let on = entry.backend();
                if !selects(spec, &on) {
                    continue;
                }
                let mut rows = run.rows.lock().unwrap_or_else(|p| p.into_inner());
                if rows.contains_key(&entry.id) {
                    continue;
                }
                rows.insert(
                    entry.id,
                    AckRow {
                        session: entry.id,
                        from: on.clone(),
                        to: spec.to.clone(),
                        status: "waiting".into(),
                        reason: None,
                        pause_us: None,
                        total_us: None,
                    },
                );
                drop(rows);
                let request = MoveRequest {
                    target: spec.to.clone(),
                    wait: spec
                        .wait_ms
                        .map_or(config.migration_wait, Duration::from_millis),
                    dry_run: false,
                    on_timeout,
                    origin,
                };
                let rows = run.rows.clone();
                let to = spec.to.clone();
                tokio::spawn(async move {
                    let result = entry.migrate(request).await;
                    let row = row_of(entry.id, &on, &to, &result);
                    rows.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(entry.id, row);
                });
            }
        }
        let rows = run.rows.lock().unwrap_or_else(|p| p.into_inner());
        let first = run
            .first
            .get_or_insert_with(|| rows.keys().copied().collect());
        let finished = first
            .iter()
            .all(|s| rows.get(s).map_or(true, |r| r.status != "waiting"));
        let count = |s: &str| rows.values().filter(|r| r.status == s).count();
        let ack = Ack {
            plan: id.clone(),
            gen: plan.gen,
            node: node.to_string(),
            done: finished,
            routing_rev,
            rows: rows.values().take(Ack::MAX_ROWS).cloned().collect(),
            moved: rows
                .values()
                .filter(|r| r.status == "done" && r.pause_us.is_some())
                .count(),
            waiting: count("waiting"),
            pinned: count("pinned"),
            aborted: count("aborted"),
        };
        drop(rows);
        if ack.done && plan.state == PlanState::Done {
            self.finished.insert(id.clone());
        }
        Some(ack)
    }

    /// The plan a session's latest move of this replica's current run
    /// belongs to.
    pub fn plan_of(&self, session: u64) -> Option<String> {
        let run = self.run.as_ref()?;
        let rows = run.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.contains_key(&session).then(|| run.plan.clone())
    }
}
