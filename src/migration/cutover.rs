//! The part of a move that runs at the safe point, inside the session's
//! relay: read the source's truth, refuse blockers, bring the target in line
//! if the truth differs from what was pre-staged, verify, and swap the server
//! connection under the client. Any failure before the swap drops the target
//! and leaves the source untouched.

use super::identity::split_brain_warning;
use super::plan::{state_differences, ReplayPlan};
use super::stage::{Move, Reply, Stage};
use super::target::{prestage, read_state, replay_batch, Batch, PrestageInput, Staged};
use super::{history::Status, MoveError, MoveOutcome, MoveRequest};
use crate::cancel::CancelTarget;
use crate::ledger::check::{Depth, ServerState};
use crate::protocol::backend::BackendTag;
use crate::protocol::write;
use crate::server::batch::run_batch;
use crate::session::registry::CheckError;
use crate::session::relay::Relay;
use crate::session::relay::RelayCtx;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{info, warn};

/// First OID of objects created by users (FirstNormalObjectId): statements
/// with parameter types at or above it only make sense in their own cluster.
const FIRST_NORMAL_OID: u32 = 16384;

/// Longest the exit of a move's old server connection waits for a cutover in
/// progress, and then keeps other cutovers waiting (see `Shared::move_gate`).
const EXIT_GATE: Duration = Duration::from_millis(50);

impl Relay {
    /// Starts a move: pre-staging runs in its own task while the client goes
    /// on. Errors found without a safe point are answered at once.
    pub(crate) fn start_move(&mut self, request: MoveRequest, reply: Reply) {
        let Some(ctx) = self.ctx.clone() else {
            return self.answer_move(reply, Err(MoveError::Ended), None);
        };
        // What is wrong with the request itself first, then whether this
        // session can take it now.
        let config = ctx.shared.config();
        let Some(target) = config.backend(&request.target).cloned() else {
            return self.answer_move(
                reply,
                Err(MoveError::UnknownBackend(request.target.clone())),
                None,
            );
        };
        if target.name == self.backend.name {
            return self.answer_move(reply, Err(MoveError::AlreadyThere(target.name)), None);
        }
        if self.moving.is_some() {
            return self.answer_move(reply, Err(MoveError::Busy), None);
        }
        let record =
            ctx.shared
                .history
                .start(ctx.id, &self.backend.name, &target.name, request.dry_run);
        let input = PrestageInput {
            target,
            source: self.backend.clone(),
            startup: self.ledger.startup.clone(),
            user: ctx.user.clone(),
            plan: ReplayPlan::from_ledger(&self.ledger),
            custom_names: self.ledger.custom_names().clone(),
        };
        let handle = tokio::spawn(prestage(ctx.shared.clone(), input));
        let now = Instant::now();
        info!(target = %request.target, origin = request.origin.as_str(), dry_run = request.dry_run, "move requested");
        self.moving = Some(Move {
            deadline: now + request.wait,
            request,
            record,
            started: now,
            stage: Stage::PreStaging(handle),
            reply,
        });
    }

    /// Why the session is not at a safe point, for a timeout's reason.
    pub(crate) fn not_safe_reason(&self) -> String {
        use crate::session::tracker::CopyState;
        let t = &self.tracker;
        if t.copy_state() != CopyState::None {
            "COPY in progress".into()
        } else if t.tx_status() != crate::protocol::backend::TxStatus::Idle {
            format!("open transaction (status {})", t.tx_status().as_char())
        } else if t.outstanding() > 0 || t.batch_open() {
            "a request is in flight".into()
        } else {
            "the client is sending a message".into()
        }
    }

    /// Ends a move with `result`, answering whoever asked.
    pub(crate) fn finish_move(&mut self, m: Move, mut result: Result<MoveOutcome, MoveError>) {
        let total = m.started.elapsed();
        if let Ok(o) = &mut result {
            o.total = total;
        }
        if let Some(ctx) = &self.ctx {
            // A dry run pauses nothing: it has no pause to show.
            let (status, reason, pause) = match &result {
                Ok(o) if o.dry_run => (Status::DryRun, Some(o.notice()), None),
                Ok(o) => (Status::Done, o.warning.clone(), Some(o.pause)),
                Err(e) if m.request.dry_run && e.is_verdict() => {
                    (Status::DryRun, Some(format!("cannot move: {e}")), None)
                }
                Err(e) => (Status::Aborted, Some(e.to_string()), None),
            };
            let check = result.as_ref().ok().map(|o| o.full_check);
            ctx.shared
                .history
                .finish(m.record, status, reason, pause, total, check);
        }
        match &result {
            Ok(o) => {
                if let Some(w) = &o.warning {
                    warn!(warning = %w, "move onto a copy while its source takes writes");
                }
                info!(from = %o.from, to = %o.to, pause_us = o.pause.as_micros() as u64, total_us = total.as_micros() as u64, dry_run = o.dry_run, "move done")
            }
            Err(e) => warn!(error = %e, "move aborted"),
        }
        self.answer_move(m.reply, result, Some(&m.request));
    }

    /// Statements the target could not prepare are deferred only when they
    /// cannot be prepared on the source either (their table is gone there
    /// too): then the session sees on the target what it would have seen
    /// on the source. One that the source can prepare means the target
    /// lacks what the session uses, and the move is refused as before.
    async fn confirm_deferred(&mut self, staged: &Staged) -> Result<(), MoveError> {
        let refused = |name: &str, error: &str| MoveError::Replay {
            backend: staged.backend.name.clone(),
            message: format!("prepared statement \"{name}\": {error}"),
        };
        let path = self.ledger.vars().settings.get("search_path").cloned();
        let mut probes = Vec::new();
        for (name, (types, error)) in &staged.deferred {
            let p = if name.is_empty() {
                self.ledger.unnamed()
            } else {
                self.ledger.prepared().get(name)
            };
            // Under another search_path the source could resolve other
            // names: no verdict, no move.
            let Some(p) = p.filter(|p| p.search_path == path) else {
                return Err(refused(name, error));
            };
            probes.push((name, p.query_text(), types.clone(), error));
        }
        let parses: Vec<(String, Vec<u32>)> = probes
            .iter()
            .map(|(_, q, t, _)| (q.clone(), t.clone()))
            .collect();
        let works = self
            .probe_parses(&parses)
            .await
            .map_err(|e| MoveError::SourceLost(e.to_string()))?;
        for ((name, _, _, error), works) in probes.iter().zip(works) {
            if works {
                return Err(refused(name, error));
            }
        }
        Ok(())
    }

    /// At a safe point with a staged target: the pause. `Err` leaves the
    /// session on its source; `SourceLost` means the source is gone too.
    pub(crate) async fn cutover(
        &mut self,
        mut staged: Staged,
        dry_run: bool,
    ) -> Result<MoveOutcome, MoveError> {
        let paused = Instant::now();
        let ctx = self.ctx.clone().ok_or(MoveError::Ended)?;
        let settable = staged.settable.clone();
        let light = match self.server_check(Depth::Light(&settable)).await {
            Ok(state) => Some(state),
            // A setting the role may not read, say: the full check decides.
            Err(CheckError::Server(e)) => {
                tracing::debug!(error = %e, "the light check failed");
                None
            }
            Err(e) => return Err(MoveError::SourceLost(e.to_string())),
        };
        if let Some(light) = &light {
            self.refuse_blockers(light, &staged)?;
        }
        if !staged.deferred.is_empty() {
            self.confirm_deferred(&staged).await?;
        }
        // What the wire saw since pre-staging (a statement prepared again
        // under its old name and types, say) is not in the states compared.
        let ledger_moved = ReplayPlan::from_ledger(&self.ledger) != staged.plan;
        // Statements prepared lazily (not on the source now, or not on the
        // target) are not compared: the ledger carries them.
        let lazy = |staged: &Staged, ledger: &crate::ledger::Ledger| -> BTreeSet<String> {
            staged
                .deferred
                .keys()
                .chain(ledger.deferred().keys())
                .cloned()
                .collect()
        };
        let skip = lazy(&staged, &self.ledger);
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
        let desynced = self.ledger.is_desynced();
        let mut full_source = None;
        if light.as_ref().map_or(true, |l| l.temp_schema != 0)
            || ledger_moved
            || desynced
            || !differences.is_empty()
        {
            // The light check cannot count temp objects, and cannot tell a
            // setting the session changed from one configured differently
            // on the two servers: read both sides in full, at once.
            tracing::debug!(?differences, "reading the full state");
            let custom = self.ledger.custom_names().clone();
            let (source, target) = tokio::try_join!(
                self.source_state(Depth::Full),
                read_state(&mut staged, &custom)
            )?;
            self.refuse_blockers(&source, &staged)?;
            differences =
                state_differences(&without(&source, &skip), &without(&target, &skip), &[]);
            if ledger_moved {
                differences.push("the session changed its state since pre-staging".into());
            }
            if desynced {
                differences.push("the ledger lost track of replies".into());
            }
            full_source = Some(source);
        }
        let full_check = full_source.is_some();
        // Two copies of one cluster that both take writes: the target was
        // promoted while the source is still open (see the README's
        // switchover). The move goes on; whoever asked is told.
        let source_writes = full_source
            .as_ref()
            .or(light.as_ref())
            .is_some_and(|s| s.accepts_writes);
        let warning = (staged.same_system && source_writes && staged.state.accepts_writes)
            .then(|| split_brain_warning(&self.backend.name, &staged.backend.name));
        let checked = paused.elapsed();
        tracing::debug!(
            check_us = checked.as_micros() as u64,
            full = full_check,
            ?differences,
            "source checked"
        );
        if let Some(source) = full_source.filter(|_| !differences.is_empty()) {
            // The session changed since pre-staging (or the wire could not
            // see everything): reset the target and replay the truth.
            let plan = ReplayPlan::from_server(&source, &self.ledger, &ctx.user)?;
            // One round trip: DISCARD ALL (a simple query, its own part),
            // then the replay and the check. What DISCARD ALL reports goes
            // where the replay's reports go, so the client is never told the
            // target's defaults.
            let mut discard = BytesMut::new();
            postgres_protocol::message::frontend::query("DISCARD ALL", &mut discard)
                .expect("static query");
            let batch = Batch::after(
                &discard,
                1,
                replay_batch(&plan, self.ledger.custom_names(), Depth::Full),
            );
            // What this replay cannot prepare is deferred, and so is what
            // the source itself does not hold (deferred there already).
            staged.deferred.clear();
            let state = staged.run(&batch).await?;
            if !staged.deferred.is_empty() {
                self.confirm_deferred(&staged).await?;
            }
            for (name, p) in self.ledger.prepared() {
                if !plan.prepared.iter().any(|s| &s.name == name) {
                    let types = self
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
            let skip = lazy(&staged, &self.ledger);
            let left = state_differences(&without(&source, &skip), &without(&state, &skip), &[]);
            if !left.is_empty() {
                return Err(MoveError::Verify {
                    backend: staged.backend.name.clone(),
                    differences: left,
                });
            }
        }
        let mut outcome = MoveOutcome {
            session: ctx.id,
            from: self.backend.name.clone(),
            from_pid: self.server_pid,
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
            return Ok(outcome);
        }
        self.target_alive(&mut staged).await?;
        let before_swap = paused.elapsed();
        self.swap(staged, &ctx);
        outcome.pause = paused.elapsed();
        tracing::debug!(
            check_us = checked.as_micros() as u64,
            before_swap_us = before_swap.as_micros() as u64,
            pause_us = outcome.pause.as_micros() as u64,
            "cutover timing"
        );
        Ok(outcome)
    }

    /// The target may have died (or been told to) while the session was
    /// busy. A dead one has left EOF or a FATAL in its socket, which a read
    /// that does not wait finds; one that waited long also gets a Sync round
    /// trip (after 10 s), which proves it alive and idle.
    async fn target_alive(&mut self, staged: &mut Staged) -> Result<(), MoveError> {
        let dead = |why: String| MoveError::Target {
            backend: staged.backend.name.clone(),
            code: tokio_postgres::error::SqlState::CONNECTION_FAILURE
                .code()
                .to_string(),
            message: format!("the target connection failed before the swap: {why}"),
        };
        loop {
            // One poll, no waiting (a zero timeout would wait for a timer tick).
            let polled = {
                let mut read = std::pin::pin!(staged.r.read_buf(&mut staged.buf));
                std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await
            };
            match polled {
                std::task::Poll::Pending => break,
                std::task::Poll::Ready(Ok(0)) => return Err(dead("closed".into())),
                std::task::Poll::Ready(Err(e)) => return Err(dead(e.to_string())),
                std::task::Poll::Ready(Ok(_)) => {}
            }
        }
        while let Ok(Some((frame, body))) =
            crate::protocol::codec::split_message(&staged.buf, |_| usize::MAX)
        {
            if frame.tag == b'E' && crate::protocol::backend::error_fields(body).is_fatal() {
                let msg =
                    String::from_utf8_lossy(crate::protocol::backend::error_fields(body).message)
                        .into_owned();
                return Err(dead(msg));
            }
            let msg = staged.buf.split_to(frame.total).freeze();
            staged.pending.push(msg);
        }
        if staged.ready_at.elapsed() > Duration::from_secs(10) {
            let mut sync = BytesMut::new();
            write::message(&mut sync, b'S', |_| {});
            let reply = run_batch(
                &mut staged.r,
                &mut staged.w,
                &mut staged.buf,
                &sync,
                |_, m| staged.pending.push(m),
            )
            .await
            .map_err(|e| dead(e.to_string()))?;
            if reply.error.is_some() || reply.status != b'I' {
                return Err(dead(format!("not idle (status {})", reply.status as char)));
            }
        }
        Ok(())
    }

    /// What in the source's state forbids the move to `staged`'s backend.
    fn refuse_blockers(&self, source: &ServerState, staged: &Staged) -> Result<(), MoveError> {
        if let Some(reason) = source.pin_reason().or_else(|| {
            self.ledger
                .pin_reason()
                .filter(|r| r.contains("LOAD") || r.contains("dblink"))
        }) {
            return Err(MoveError::Pinned(reason));
        }
        if staged.backend.foreign {
            let unnamed_types = self
                .ledger
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
    pub(crate) async fn source_state(
        &mut self,
        depth: Depth<'_>,
    ) -> Result<ServerState, MoveError> {
        match self.server_check(depth).await {
            Ok(s) => Ok(s),
            Err(CheckError::Server(e)) => Err(MoveError::Pinned(format!(
                "the source refused the state check: {e}"
            ))),
            Err(e) => Err(MoveError::SourceLost(e.to_string())),
        }
    }

    /// Puts the target under the client. Past this point the move is done.
    fn swap(&mut self, staged: Staged, ctx: &RelayCtx) {
        let old_r = std::mem::replace(&mut self.server_r, staged.r);
        let mut old_w = std::mem::replace(&mut self.server_w, staged.w);
        let old_buf = std::mem::replace(&mut self.server_in.buf, staged.buf);
        self.server_tls = staged.tls;
        // The client is told only about values that differ from what it saw.
        for (n, v) in &staged.params {
            let seen = self
                .ledger
                .reported()
                .iter()
                .any(|(name, val)| name == n && val == v);
            if !seen {
                let mut msg = BytesMut::new();
                write::parameter_status(&mut msg, n, v);
                self.ledger
                    .on_backend(BackendTag::ParameterStatus, &msg[5..]);
                self.to_client.push(msg.freeze());
            }
        }
        for m in staged.pending {
            self.to_client.push(m);
        }
        self.backend = staged.backend;
        // Prepared at their first use on the new server.
        self.ledger.defer(
            staged
                .deferred
                .into_iter()
                .map(|(name, (types, _))| (name, types))
                .collect(),
        );
        let old_pid = std::mem::replace(&mut self.server_pid, staged.pid);
        ctx.shared.cancel.update(
            ctx.cancel_key,
            CancelTarget {
                backend: self.backend.clone(),
                pid: staged.pid,
                key: staged.key,
            },
        );
        if let Some(entry) = &self.entry {
            let (name, pid) = (self.backend.name.clone(), staged.pid);
            entry.update(|live| {
                live.backend = name;
                live.backend_pid = pid;
                live.migrations += 1;
            });
        }
        // The session span keeps the backend it started on (recording the
        // field again would repeat it in every line); moves are logged.
        // The old server may still hold notifications for channels the
        // session listens to: read them until it closes, and deliver them.
        let live = self
            .late_tx
            .as_ref()
            .and_then(|w| w.upgrade())
            .filter(|_| self.late_rx.is_some());
        let late = match live {
            Some(tx) => tx,
            None => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                self.late_tx = Some(tx.downgrade());
                self.late_rx = Some(rx);
                tx
            }
        };
        let gate = ctx.shared.move_gate.clone();
        let client_pid = self.client_pid;
        tokio::spawn(async move {
            // The old server's exit is Postgres work like a pre-staging's
            // login: it waits for the cutover in progress, not beside it
            // (but not for long: late notifications must not lag).
            let gate = tokio::time::timeout(EXIT_GATE, gate.read_owned())
                .await
                .ok();
            let _ = old_w.write_all(b"X\0\0\0\x04").await;
            let _ = old_w.flush().await;
            drain_notifications(old_r, old_buf, late, gate, (old_pid, client_pid)).await;
        });
    }
}

/// Reads a terminated server connection to its end and forwards every
/// NotificationResponse (duplicates are possible; a gap would be worse, P19).
/// `gate` is let go at EOF, or after [`EXIT_GATE`] at most, so a server
/// that is slow to close never stalls other moves.
async fn drain_notifications(
    mut r: tokio::io::ReadHalf<crate::net::Stream>,
    mut buf: BytesMut,
    late: tokio::sync::mpsc::UnboundedSender<Bytes>,
    mut gate: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    (old_pid, client_pid): (i32, i32),
) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    loop {
        while let Ok(Some((frame, _))) = crate::protocol::codec::split_message(&buf, |_| 1 << 20) {
            let mut msg = buf.split_to(frame.total);
            if frame.tag == b'A' {
                crate::protocol::backend::rename_notifier(&mut msg, old_pid, client_pid);
                if late.send(msg.freeze()).is_err() {
                    return;
                }
            }
        }
        let until = match gate {
            Some(_) => started + EXIT_GATE,
            None => deadline,
        };
        match tokio::time::timeout_at(until, r.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) if gate.is_some() => gate = None,
            _ => return,
        }
    }
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
