//! The part of a move that runs at the safe point, on the session's parts
//! (its server side, its ledger and the queue to its client), called by the
//! session: read the source's truth, refuse blockers, bring the target in
//! line if the truth differs from what was pre-staged, verify, and put the
//! target in place of the server side. Any failure before that drops the
//! target and leaves the source untouched.

use super::identity::split_brain_warning;
use super::plan::{state_differences, ReplayPlan};
use super::target::{read_state, replay_batch, Batch, Staged};
use super::{MoveError, MoveOutcome};
use crate::ledger::check::{Depth, ServerState};
use crate::ledger::Ledger;
use crate::net::Outbox;
use crate::protocol::backend::BackendTag;
use crate::protocol::write;
use crate::server::check::{CheckError, Listeners};
use crate::server::ServerSide;
use bytes::BytesMut;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// First OID of objects created by users (FirstNormalObjectId): statements
/// with parameter types at or above it only make sense in their own cluster.
const FIRST_NORMAL_OID: u32 = 16384;

/// The parts of a session a cutover works on.
pub struct Parts<'a> {
    pub server: &'a mut ServerSide,
    pub ledger: &'a mut Ledger,
    pub to_client: &'a mut Outbox,
}

impl Parts<'_> {
    /// The server side, and where what it sends on its own goes.
    fn split(&mut self) -> (&mut ServerSide, Listeners<'_>) {
        let to = Listeners {
            ledger: self.ledger,
            to_client: self.to_client,
        };
        (self.server, to)
    }
}

/// The session being moved, as a cutover names it.
pub struct Who<'a> {
    pub session: u64,
    /// The user it logged in as.
    pub user: &'a str,
}

/// A cutover that went through.
pub struct CutOver {
    pub outcome: MoveOutcome,
    /// The server side the session left; `None` for a dry run.
    pub old: Option<ServerSide>,
}

/// Statements the target could not prepare are deferred only when they
/// cannot be prepared on the source either (their table is gone there too):
/// then the session sees on the target what it would have seen on the
/// source. One that the source can prepare means the target lacks what the
/// session uses, and the move is refused.
async fn confirm_deferred(parts: &mut Parts<'_>, staged: &Staged) -> Result<(), MoveError> {
    let refused = |name: &str, error: &str| MoveError::Replay {
        backend: staged.backend.name.clone(),
        message: format!("prepared statement \"{name}\": {error}"),
    };
    let ledger = &*parts.ledger;
    let path = ledger.vars().settings.get("search_path").cloned();
    let mut probes = Vec::new();
    for (name, (types, error)) in &staged.deferred {
        let p = if name.is_empty() {
            ledger.unnamed()
        } else {
            ledger.prepared().get(name)
        };
        // Under another search_path the source could resolve other names:
        // no verdict, no move.
        let Some(p) = p.filter(|p| p.search_path == path) else {
            return Err(refused(name, error));
        };
        probes.push((name, p.query_text(), types.clone(), error));
    }
    let parses: Vec<(String, Vec<u32>)> = probes
        .iter()
        .map(|(_, q, t, _)| (q.clone(), t.clone()))
        .collect();
    let (server, to) = parts.split();
    let works = server
        .probe_parses(&parses, to)
        .await
        .map_err(|e| MoveError::SourceLost(e.to_string()))?;
    for ((name, _, _, error), works) in probes.iter().zip(works) {
        if works {
            return Err(refused(name, error));
        }
    }
    Ok(())
}

/// Prepared statements the ledger carries lazily (not on the source now, or
/// not on the target): not compared.
fn lazy(staged: &Staged, ledger: &Ledger) -> BTreeSet<String> {
    staged
        .deferred
        .keys()
        .chain(ledger.deferred().keys())
        .cloned()
        .collect()
}

/// What the source's check found, against what was pre-staged.
struct Checked {
    light: Option<ServerState>,
    /// The source's full state, when it had to be read.
    full: Option<ServerState>,
    differences: Vec<String>,
}

/// At a safe point with a staged target: the pause. `Err` leaves the
/// session on its source (`SourceLost`: the source is gone too). The
/// caller bounds it with the cutover budget; dropped at any point, the
/// source keeps what it owes pgbaton in `ServerSide::owed`.
pub async fn cutover(
    mut parts: Parts<'_>,
    mut staged: Staged,
    who: Who<'_>,
    dry_run: bool,
) -> Result<CutOver, MoveError> {
    let paused = Instant::now();
    let checked = check_source(&mut parts, &mut staged).await?;
    let full_check = checked.full.is_some();
    // Two copies of one cluster that both take writes: the target was
    // promoted while the source is still open (see the README's
    // switchover). The move goes on; whoever asked is told.
    let source_writes = checked
        .full
        .as_ref()
        .or(checked.light.as_ref())
        .is_some_and(|s| s.accepts_writes);
    let warning = (staged.same_system && source_writes && staged.state.accepts_writes)
        .then(|| split_brain_warning(&parts.server.backend.name, &staged.backend.name));
    let check_took = paused.elapsed();
    tracing::debug!(
        check_us = check_took.as_micros() as u64,
        full = full_check,
        differences = ?checked.differences,
        "source checked"
    );
    if let Some(source) = checked.full.filter(|_| !checked.differences.is_empty()) {
        replay_truth(&mut parts, &mut staged, &source, who.user).await?;
    }
    let mut outcome = MoveOutcome {
        session: who.session,
        from: parts.server.backend.name.clone(),
        from_pid: parts.server.pid,
        to: staged.backend.name.clone(),
        to_pid: staged.pid,
        pause: Duration::ZERO,
        total: Duration::ZERO,
        dry_run,
        full_check,
        warning,
    };
    if dry_run {
        let _ = staged.w.write_all(b"X\0\0\0\x04").await;
        outcome.pause = paused.elapsed();
        return Ok(CutOver { outcome, old: None });
    }
    staged.alive().await?;
    let before_swap = paused.elapsed();
    let old = swap(parts, staged);
    outcome.pause = paused.elapsed();
    tracing::debug!(
        check_us = check_took.as_micros() as u64,
        before_swap_us = before_swap.as_micros() as u64,
        pause_us = outcome.pause.as_micros() as u64,
        "cutover timing"
    );
    Ok(CutOver {
        outcome,
        old: Some(old),
    })
}

/// Reads the source's state: the light check, and the full state of both
/// sides when the light one cannot decide. Refuses blockers.
async fn check_source(parts: &mut Parts<'_>, staged: &mut Staged) -> Result<Checked, MoveError> {
    let settable = staged.settable.clone();
    let (server, to) = parts.split();
    let light = match server.check(Depth::Light(&settable), to).await {
        Ok(state) => Some(state),
        // A setting the role may not read, say: the full check decides.
        Err(CheckError::Server(e)) => {
            tracing::debug!(error = %e, "the light check failed");
            None
        }
        Err(e) => return Err(MoveError::SourceLost(e.to_string())),
    };
    if let Some(light) = &light {
        refuse_blockers(parts.ledger, light, staged)?;
    }
    if !staged.deferred.is_empty() {
        confirm_deferred(parts, staged).await?;
    }
    // What the wire saw since pre-staging (a statement prepared again
    // under its old name and types, say) is not in the states compared.
    let ledger_moved = ReplayPlan::from_ledger(parts.ledger) != staged.plan;
    let skip = lazy(staged, parts.ledger);
    let mut differences = match &light {
        Some(light) if staged.state.is_light() => state_differences(
            &without(light, &skip),
            &without(&staged.state, &skip),
            &settable,
        ),
        Some(_) => vec!["the target's light check was refused".into()],
        None => vec!["the light check failed".into()],
    };
    // The wire lost track of what the server answered (a client that
    // breaks the protocol's rules): only the server's own state counts.
    let desynced = parts.ledger.is_desynced();
    let needs_full = light.as_ref().map_or(true, |l| l.temp_schema != 0)
        || ledger_moved
        || desynced
        || !differences.is_empty();
    if !needs_full {
        return Ok(Checked {
            light,
            full: None,
            differences,
        });
    }
    // The light check cannot count temp objects, and cannot tell a setting
    // the session changed from one configured differently on the two
    // servers: read both sides in full, at once.
    tracing::debug!(?differences, "reading the full state");
    let custom = parts.ledger.custom_names().clone();
    let (source, target) = {
        let (server, to) = parts.split();
        tokio::try_join!(
            source_state(server, Depth::Full, to),
            read_state(staged, &custom)
        )?
    };
    refuse_blockers(parts.ledger, &source, staged)?;
    differences = state_differences(&without(&source, &skip), &without(&target, &skip), &[]);
    if ledger_moved {
        differences.push("the session changed its state since pre-staging".into());
    }
    if desynced {
        differences.push("the ledger lost track of replies".into());
    }
    Ok(Checked {
        light,
        full: Some(source),
        differences,
    })
}

/// The session changed since pre-staging (or the wire could not see
/// everything): reset the target and replay the source's truth, then
/// verify.
async fn replay_truth(
    parts: &mut Parts<'_>,
    staged: &mut Staged,
    source: &ServerState,
    user: &str,
) -> Result<(), MoveError> {
    let plan = ReplayPlan::from_server(source, parts.ledger, user)?;
    // One round trip: DISCARD ALL (a simple query, its own part), then the
    // replay and the check. What DISCARD ALL reports goes where the
    // replay's reports go, so the client is never told the target's
    // defaults.
    let mut discard = BytesMut::new();
    postgres_protocol::message::frontend::query("DISCARD ALL", &mut discard).expect("static query");
    let batch = Batch::after(
        &discard,
        1,
        replay_batch(&plan, parts.ledger.custom_names(), Depth::Full),
    );
    // What this replay cannot prepare is deferred, and so is what the
    // source itself does not hold (deferred there already).
    staged.deferred.clear();
    let state = staged.run(&batch).await?;
    if !staged.deferred.is_empty() {
        confirm_deferred(parts, staged).await?;
    }
    for (name, p) in parts.ledger.prepared() {
        if !plan.prepared.iter().any(|s| &s.name == name) {
            let types = parts
                .ledger
                .deferred()
                .get(name)
                .cloned()
                .unwrap_or_else(|| ReplayPlan::unnamed_param_types(p));
            staged
                .deferred
                .insert(name.clone(), (types, "not on the source".into()));
        }
    }
    let skip = lazy(staged, parts.ledger);
    let left = state_differences(&without(source, &skip), &without(&state, &skip), &[]);
    if !left.is_empty() {
        return Err(MoveError::Verify {
            backend: staged.backend.name.clone(),
            differences: left,
        });
    }
    Ok(())
}

/// What in the source's state forbids the move to `staged`'s backend.
fn refuse_blockers(
    ledger: &Ledger,
    source: &ServerState,
    staged: &Staged,
) -> Result<(), MoveError> {
    // The wire's own blockers count only where the server cannot see them.
    let wire = ledger.pins();
    let unseen: Vec<_> = wire.iter().filter(|b| !b.server_sees()).collect();
    if let Some(reason) = source.pin_reason().or_else(|| {
        (!unseen.is_empty()).then(|| {
            unseen
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
    }) {
        return Err(MoveError::Pinned(reason));
    }
    if staged.backend.foreign {
        let unnamed_types = ledger
            .unnamed()
            .map(ReplayPlan::unnamed_param_types)
            .unwrap_or_default();
        let foreign_type = source
            .prepared
            .iter()
            .flat_map(|p| p.parameter_types.iter())
            .chain(unnamed_types.iter())
            .any(|&oid| oid >= FIRST_NORMAL_OID);
        if foreign_type {
            return Err(MoveError::Pinned(format!(
                "{} is a foreign cluster and a prepared statement uses a type that exists only in this cluster",
                staged.backend.name
            )));
        }
    }
    Ok(())
}

/// Reads the source's state (at a safe point).
async fn source_state(
    server: &mut ServerSide,
    depth: Depth<'_>,
    to: Listeners<'_>,
) -> Result<ServerState, MoveError> {
    match server.check(depth, to).await {
        Ok(s) => Ok(s),
        Err(CheckError::Server(e)) => Err(MoveError::Pinned(format!(
            "the source refused the state check: {e}"
        ))),
        Err(e) => Err(MoveError::SourceLost(e.to_string())),
    }
}

/// Puts the target in place of the server side and returns the old one.
/// Past this point the move is done.
fn swap(parts: Parts<'_>, staged: Staged) -> ServerSide {
    let Parts {
        server,
        ledger,
        to_client,
    } = parts;
    // The client is told only about values that differ from what it saw.
    for (n, v) in &staged.params {
        let seen = ledger
            .reported()
            .iter()
            .any(|(name, val)| name == n && val == v);
        if !seen {
            let mut msg = BytesMut::new();
            write::parameter_status(&mut msg, n, v);
            ledger.on_backend(BackendTag::ParameterStatus, &msg[5..]);
            to_client.push(msg.freeze());
        }
    }
    for m in staged.pending {
        to_client.push(m);
    }
    // Prepared at their first use on the new server.
    ledger.defer(
        staged
            .deferred
            .into_iter()
            .map(|(name, (types, _))| (name, types))
            .collect(),
    );
    let new = ServerSide::from_halves(
        (staged.r, staged.w),
        staged.buf,
        staged.tls,
        staged.backend,
        (staged.pid, staged.key),
    );
    std::mem::replace(server, new)
}

/// `state` without the prepared statements named in `skip` (a clone only
/// when there are any).
fn without<'a>(
    state: &'a ServerState,
    skip: &BTreeSet<String>,
) -> std::borrow::Cow<'a, ServerState> {
    if skip.is_empty() || !state.prepared.iter().any(|p| skip.contains(&p.name)) {
        return std::borrow::Cow::Borrowed(state);
    }
    let mut s = state.clone();
    s.prepared.retain(|p| !skip.contains(&p.name));
    std::borrow::Cow::Owned(s)
}
