//! Cluster identity per backend: `system_identifier` and major version,
//! learned once on a control connection and cached. Parse parameter OIDs and
//! the type OIDs drivers cache are only valid on a physical copy of the same
//! cluster (a type created by one cluster has another OID, or none, in
//! another), so by default a move needs both equal.
//! The same connection learns which settings a session can change, the
//! names a move's light check reads.

use super::moves::MoveEnv;
use super::MoveError;
use crate::config::Backend;
use crate::protocol::startup::StartupParam;
use crate::server::batch::{run_batch, BatchReply};
use bytes::BytesMut;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub system_identifier: String,
    pub version_num: i32,
    /// The settings a session can change there, for the light check.
    pub settable: std::sync::Arc<[String]>,
}

impl Identity {
    pub fn major(&self) -> i32 {
        self.version_num / 10000
    }
}

/// The identity of `backend`, from the cache or a control connection that
/// logs in like the session (`params`), which every role may do on PG 15
/// (`pg_control_system()` is executable by PUBLIC).
pub async fn identity(
    env: &MoveEnv,
    backend: &Backend,
    params: &[StartupParam],
    user: &str,
) -> Result<Identity, MoveError> {
    if let Some(id) = env.moves.identity(&backend.name) {
        return Ok(id);
    }
    let query = format!(
        "SELECT system_identifier::text FROM pg_control_system() UNION ALL SELECT current_setting('server_version_num') UNION ALL ({})",
        crate::ledger::check::SETTABLE_NAMES_SQL
    );
    let reply = control_query(env, backend, params, user, &query).await?;
    let rows: Vec<String> = reply.rows.into_iter().flatten().collect();
    let [sysid, version, settable] = rows.as_slice() else {
        return Err(MoveError::Identity(format!(
            "unexpected identity answer from {}",
            backend.name
        )));
    };
    let id = Identity {
        system_identifier: sysid.clone(),
        version_num: version.parse().unwrap_or(0),
        settable: settable.split(',').map(str::to_string).collect(),
    };
    env.moves.remember_identity(&backend.name, id.clone());
    Ok(id)
}

/// The warning for a move between two copies of one cluster that both take
/// writes: a standby promoted while its old primary is still open. What is
/// committed on the source from then on is not on the target, and the
/// sessions that wrote it will not see it again once moved.
pub fn split_brain_warning(from: &str, to: &str) -> String {
    format!(
        "pgbaton: {from} and {to} are copies of one cluster and both accept writes: what is committed on {from} from now on will not be on {to}. For a switchover, stop writes on {from} and let {to} replay all of its WAL before promoting it and moving (README: \"Switching over to a standby\")"
    )
}

/// A backend's system identifier and whether it takes writes, learned now
/// on a control connection (never cached: a promotion changes it).
pub async fn writes(
    env: &MoveEnv,
    backend: &Backend,
    params: &[StartupParam],
    user: &str,
) -> Result<(String, bool), MoveError> {
    let reply = control_query(
        env,
        backend,
        params,
        user,
        "SELECT system_identifier::text FROM pg_control_system() UNION ALL SELECT (NOT pg_is_in_recovery() AND NOT current_setting('default_transaction_read_only')::bool)::text",
    )
    .await?;
    match reply.rows.as_slice() {
        [Some(sysid), Some(writes)] => Ok((sysid.clone(), writes == "true")),
        _ => Err(MoveError::Identity(format!(
            "unexpected answer from {}",
            backend.name
        ))),
    }
}

/// Runs `query` on a control connection to `backend` that logs in like the
/// session (its `user` and `database` from `params`), then closes it.
async fn control_query(
    env: &MoveEnv,
    backend: &Backend,
    params: &[StartupParam],
    user: &str,
    query: &str,
) -> Result<BatchReply, MoveError> {
    let mut control: Vec<StartupParam> = params
        .iter()
        .filter(|p| p.name == b"user" || p.name == b"database")
        .cloned()
        .collect();
    control.push(StartupParam {
        name: b"application_name".to_vec(),
        value: b"pgbaton-control".to_vec(),
    });
    let conn = env
        .connect(backend, &control, user)
        .await
        .map_err(|e| MoveError::from_server(&backend.name, &e))?;
    let (mut r, mut w) = tokio::io::split(conn.stream);
    let mut buf = conn.leftover;
    let mut batch = BytesMut::new();
    postgres_protocol::message::frontend::query(query, &mut batch)
        .expect("no NUL in pgbaton's own queries");
    postgres_protocol::message::frontend::terminate(&mut batch);
    let asked = run_batch(&mut r, &mut w, &mut buf, &batch, |_, _| {});
    let reply = tokio::time::timeout(env.config.connect_timeout, asked)
        .await
        .map_err(|_| MoveError::Identity(format!("{} did not answer in time", backend.name)))?
        .map_err(|e| MoveError::Identity(format!("cannot ask {}: {e}", backend.name)))?;
    if let Some((_, msg)) = &reply.error {
        return Err(MoveError::Identity(format!(
            "{} refused pgbaton's question: {msg}",
            backend.name
        )));
    }
    Ok(reply)
}
