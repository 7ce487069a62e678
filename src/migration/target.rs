//! Pre-staging: while the client keeps working, connect to the target with
//! the client's startup parameters and pgbaton's own credentials, replay the
//! ledger, and read the target's state back with the same check the source
//! will get at the safe point. Comparing the two is then the whole
//! verification, and most moves pause for one round trip only.

use super::identity::identity;
use super::plan::{ReplayParts, ReplayPlan};
use super::MoveError;
use crate::config::Backend;
use crate::ledger::check::{check_batch, Depth, ServerState};

use super::moves::MoveEnv;
use crate::net::Stream;
use crate::protocol::backend::BackendTag;
use crate::protocol::startup::StartupParam;
use crate::protocol::write;
use crate::server::batch::{run_batch, run_batches, BatchError};
use crate::server::check::{check_result, CHECK_LIMIT};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::io::{ReadHalf, WriteHalf};

/// A logged-in target with the session's state replayed.
pub struct Staged {
    pub backend: Backend,
    pub r: ReadHalf<Stream>,
    pub w: WriteHalf<Stream>,
    pub buf: BytesMut,
    pub pid: i32,
    pub key: i32,
    /// The target's ParameterStatus values (startup, then replay).
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// The target's state as the light check reads it.
    pub state: ServerState,
    /// The setting names that check read, for the source's check.
    pub settable: Arc<[String]>,
    pub plan: ReplayPlan,
    /// Notifications and notices that arrived for the client meanwhile.
    pub pending: Vec<Bytes>,
    /// Prepared statements whose Parse failed here: prepared lazily, at
    /// their first use after the move, when they fail on the source too.
    /// Name, then parameter types and the target's error.
    pub deferred: BTreeMap<String, (Vec<u32>, String)>,
    /// When pre-staging finished.
    pub ready_at: tokio::time::Instant,
    /// Source and target are copies of one cluster (same system identifier)
    /// and the target is not marked `foreign`.
    pub same_system: bool,
    pub tls: bool,
}

/// Stages a move of the session whose state is `ledger` from `source` to
/// `target`: what it needs of the ledger is copied now, so the returned
/// future owns everything and can run in a task of its own while the
/// client goes on.
pub fn stage(
    env: MoveEnv,
    ledger: &crate::ledger::Ledger,
    (source, target): (Backend, Backend),
    user: &str,
) -> impl std::future::Future<Output = Result<Staged, MoveError>> + Send + 'static {
    let input = PrestageInput {
        target,
        source,
        startup: ledger.startup.clone(),
        user: user.to_string(),
        plan: ReplayPlan::from_ledger(ledger),
        custom_names: ledger.custom_names().clone(),
    };
    prestage(env, input)
}

/// What pre-staging needs from the session, copied so the client can go on.
struct PrestageInput {
    pub target: Backend,
    pub source: Backend,
    pub startup: Vec<StartupParam>,
    pub user: String,
    pub plan: ReplayPlan,
    pub custom_names: BTreeSet<String>,
}

async fn prestage(env: MoveEnv, input: PrestageInput) -> Result<Staged, MoveError> {
    let PrestageInput {
        target,
        source,
        startup,
        user,
        plan,
        custom_names,
    } = input;
    let _slot = env.moves.prestage_slots.clone().acquire_owned().await;
    let src = identity(&env, &source, &startup, &user).await?;
    let dst = identity(&env, &target, &startup, &user).await?;
    if src.major() != dst.major() {
        return Err(MoveError::Identity(format!(
            "{} runs PostgreSQL {} and {} runs {}",
            source.name,
            src.major(),
            target.name,
            dst.major()
        )));
    }
    if src.system_identifier != dst.system_identifier && !target.foreign {
        return Err(MoveError::Identity(format!(
            "{} (system {}) is not a copy of {} (system {}); mark it foreign = true to allow moves between independent clusters",
            target.name, dst.system_identifier, source.name, src.system_identifier
        )));
    }
    // The login and the replay load Postgres: shared with other
    // pre-stagings, never with a cutover (see `Moves::move_gate`).
    let _gate = env.moves.move_gate.clone().read_owned().await;
    let conn = env
        .connect(&target, &startup, &user)
        .await
        .map_err(|e| MoveError::from_server(&target.name, &e))?;
    let tls = conn.stream.is_tls();
    let same_system = src.system_identifier == dst.system_identifier && !target.foreign;
    let (mut r, mut w) = tokio::io::split(conn.stream);
    let mut buf = conn.leftover;
    let mut params = conn.params;
    let mut pending: Vec<Bytes> = conn.notices;
    let batch = replay_batch(&plan, &custom_names, Depth::Fresh(&dst.settable));
    let mut full = BytesMut::with_capacity(2048);
    check_batch(&custom_names, Depth::Full, &mut full);
    crate::protocol::write::message(&mut full, b'S', |_| {});
    let mut deferred = BTreeMap::new();
    let state = replay(
        &mut Conn {
            r: &mut r,
            w: &mut w,
            buf: &mut buf,
            backend: &target.name,
            params: &mut params,
            pending: &mut pending,
        },
        &batch,
        Some(&full),
        &mut deferred,
    )
    .await?;
    Ok(Staged {
        backend: target,
        r,
        w,
        buf,
        pid: conn.pid,
        key: conn.key,
        params,
        state,
        settable: dst.settable.clone(),
        plan,
        pending,
        deferred,
        ready_at: tokio::time::Instant::now(),
        // A backend marked foreign is declared independent, even when it
        // began as a copy (servers cloned from one data directory).
        same_system,
        tls,
    })
}

/// Messages for a target, in Sync-terminated parts, with the parts whose
/// failure only defers a prepared statement.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: BytesMut,
    pub parts: ReplayParts,
}

impl Batch {
    /// A batch that starts with `before` (`syncs` parts of pgbaton's own),
    /// then `rest`.
    pub fn after(before: &[u8], syncs: usize, rest: Batch) -> Batch {
        let mut bytes = BytesMut::with_capacity(before.len() + rest.bytes.len());
        bytes.extend_from_slice(before);
        bytes.extend_from_slice(&rest.bytes);
        let mut parts = rest.parts;
        parts.syncs += syncs;
        for (part, _, _) in &mut parts.lazy {
            *part += syncs;
        }
        Batch { bytes, parts }
    }

    /// A batch of `syncs` parts none of which may fail.
    pub fn strict(bytes: BytesMut, syncs: usize) -> Batch {
        Batch {
            bytes,
            parts: ReplayParts {
                syncs,
                lazy: Vec::new(),
            },
        }
    }
}

/// The replay's parts, then the check, Sync: the check runs after the
/// replay's implicit transactions committed, since LISTEN only takes effect
/// at commit. All go in one write: one round trip.
pub fn replay_batch(plan: &ReplayPlan, custom_names: &BTreeSet<String>, depth: Depth<'_>) -> Batch {
    let mut bytes = BytesMut::with_capacity(4096);
    let mut parts = plan.write(&mut bytes);
    check_batch(custom_names, depth, &mut bytes);
    crate::protocol::write::message(&mut bytes, b'S', |_| {});
    parts.syncs += 1;
    Batch { bytes, parts }
}

/// Reads a staged target's full state: one round trip, for a move whose
/// light check found a difference.
pub async fn read_state(
    staged: &mut Staged,
    custom_names: &BTreeSet<String>,
) -> Result<ServerState, MoveError> {
    let mut batch = BytesMut::with_capacity(2048);
    check_batch(custom_names, Depth::Full, &mut batch);
    crate::protocol::write::message(&mut batch, b'S', |_| {});
    staged.run(&Batch::strict(batch, 1)).await
}

impl Staged {
    /// The target may have died (or been told to) while the session was busy.
    /// A dead one has left EOF or a FATAL in its socket, which a read that does
    /// not wait finds; one that waited long also gets a Sync round trip (after
    /// 10 s), which proves it alive and idle.
    pub async fn alive(&mut self) -> Result<(), MoveError> {
        let staged = self;
        let dead = |why: String| MoveError::Target {
            backend: staged.backend.name.clone(),
            code: crate::protocol::SqlState::CONNECTION_FAILURE,
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
            let fields = crate::protocol::backend::error_fields(body);
            if frame.tag == b'E' && fields.is_fatal() {
                return Err(dead(String::from_utf8_lossy(fields.message).into_owned()));
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

    /// Runs `batch`, whose last part is a check, on the target; returns the
    /// state the check read. Statements deferred by it are added to
    /// `self.deferred`.
    pub async fn run(&mut self, batch: &Batch) -> Result<ServerState, MoveError> {
        replay(
            &mut Conn {
                r: &mut self.r,
                w: &mut self.w,
                buf: &mut self.buf,
                backend: &self.backend.name,
                params: &mut self.params,
                pending: &mut self.pending,
            },
            batch,
            None,
            &mut self.deferred,
        )
        .await
    }
}

/// A target connection and where what it sends on its own goes.
struct Conn<'a> {
    r: &'a mut ReadHalf<Stream>,
    w: &'a mut WriteHalf<Stream>,
    buf: &'a mut BytesMut,
    backend: &'a str,
    params: &'a mut Vec<(Vec<u8>, Vec<u8>)>,
    pending: &'a mut Vec<Bytes>,
}

/// Runs a [`Batch`] whose last part is a check; returns the state the check
/// read. The target's ParameterStatus values go to `conn.params` and
/// whatever else arrives for the client to `conn.pending`. An error in a
/// part that prepares one statement defers that statement (into
/// `deferred`); any other error fails the replay. When the replay went
/// through but a light check at its end was refused (a setting the
/// session's role may not read, say), `fallback`, a full check, is run
/// instead: the cutover then compares the full states.
async fn replay(
    conn: &mut Conn<'_>,
    batch: &Batch,
    mut fallback: Option<&[u8]>,
    deferred: &mut BTreeMap<String, (Vec<u32>, String)>,
) -> Result<ServerState, MoveError> {
    let backend = conn.backend;
    let failed = |message: String| MoveError::Replay {
        backend: backend.to_string(),
        message,
    };
    let (mut bytes, mut syncs, mut lazy) =
        (&batch.bytes[..], batch.parts.syncs, &batch.parts.lazy[..]);
    loop {
        let (params, pending) = (&mut *conn.params, &mut *conn.pending);
        let run = run_batches(conn.r, conn.w, conn.buf, bytes, syncs, |tag, msg| {
            if tag == BackendTag::ParameterStatus {
                // Swallowed: the client only gets values that differ, at the swap.
                if let Some((n, v)) = crate::protocol::backend::parameter_status(&msg[5..]) {
                    match params.iter_mut().find(|(name, _)| name == n) {
                        Some((_, val)) => *val = v.to_vec(),
                        None => params.push((n.to_vec(), v.to_vec())),
                    }
                }
            } else {
                pending.push(msg);
            }
        });
        let mut reply = match tokio::time::timeout(CHECK_LIMIT, run).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(BatchError::Fatal { message, .. })) | Ok(Err(BatchError::Protocol(message))) => {
                return Err(failed(message))
            }
            // The connection itself failed: the target is unreachable now.
            Ok(Err(e)) => {
                return Err(MoveError::Target {
                    backend: backend.to_string(),
                    code: crate::protocol::SqlState::CONNECTION_FAILURE,
                    message: format!("connection lost during replay: {e}"),
                })
            }
            Err(_) => return Err(failed("the target did not answer in time".into())),
        };
        // A statement that cannot be prepared here now is prepared at its
        // first use; everything else must have worked.
        let mut strict = None;
        for (part, code, message) in std::mem::take(&mut reply.errors) {
            match lazy.iter().find(|(p, _, _)| *p == part) {
                Some((_, name, types)) => {
                    tracing::info!(statement = %name, %code, %message, "prepared statement deferred: it is prepared again at its first use");
                    deferred.insert(name.clone(), (types.clone(), format!("{message} ({code})")));
                }
                None if strict.is_none() => strict = Some((part, code, message)),
                None => {}
            }
        }
        reply.error = None;
        match (strict, fallback.take()) {
            (Some((part, code, message)), Some(full)) if syncs > 1 && part == syncs - 1 => {
                tracing::debug!(%code, %message, "the light check was refused; reading the full state");
                (bytes, syncs, lazy) = (full, 1, &[]);
            }
            (Some((_, code, message)), _) => return Err(failed(format!("{message} ({code})"))),
            (None, _) => return check_result(reply).map_err(|e| failed(e.to_string())),
        }
    }
}
