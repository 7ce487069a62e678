//! pgbaton's own batches on a session's server connection, at a safe point:
//! the state check (one round trip with a named statement and portal,
//! closed afterwards: a simple query would destroy the client's unnamed
//! statement) and probes of whether statements can be prepared. What the
//! server sends on its own meanwhile goes to the client, never to the
//! check: a notification that arrives during a check is the client's.

use super::batch::{run_batches_owed, BatchError, BatchReply};
use super::side::ServerSide;
use crate::ledger::check::{check_batch, Depth, ServerState};
use crate::ledger::Ledger;
use crate::net::Outbox;
use crate::protocol::backend::BackendTag;
use bytes::BytesMut;
use std::time::Duration;
use thiserror::Error;

/// A server that does not answer a check in this time is taken as broken.
pub const CHECK_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Error)]
pub enum CheckError {
    #[error("the session ended")]
    Ended,
    #[error("no safe point within {0:?}")]
    Timeout(Duration),
    #[error("the server refused the check: {0}")]
    Server(String),
    #[error("the server check failed: {0}")]
    Broken(String),
}

/// Reads a check's reply into the server's state.
pub fn check_result(reply: BatchReply) -> Result<ServerState, CheckError> {
    if let Some((code, msg)) = reply.error {
        return Err(CheckError::Server(format!("{msg} ({code})")));
    }
    let text = reply
        .rows
        .into_iter()
        .last()
        .flatten()
        .ok_or_else(|| CheckError::Server("the check returned no row".into()))?;
    ServerState::from_json(&text)
        .map_err(|e| CheckError::Server(format!("unreadable check result: {e}")))
}

/// Where what the server sends on its own during pgbaton's batch goes: to
/// the client, ParameterStatus through the ledger too.
pub struct Listeners<'a> {
    pub ledger: &'a mut Ledger,
    pub to_client: &'a mut Outbox,
}

impl ServerSide {
    /// Whether each statement (text, parameter types) can be prepared on
    /// this server now, at a safe point: Parse, Close, Sync each, in one
    /// round trip, leaving nothing behind.
    pub async fn probe_parses(
        &mut self,
        statements: &[(String, Vec<u32>)],
        to: Listeners<'_>,
    ) -> Result<Vec<bool>, CheckError> {
        // A name no client statement has (the client's own names are the
        // server's namespace too).
        let probe = format!("pgbaton_probe_{:016x}", rand::random::<u64>());
        let mut batch = BytesMut::with_capacity(256 * statements.len());
        for (query, types) in statements {
            postgres_protocol::message::frontend::parse(
                &probe,
                query,
                types.iter().copied(),
                &mut batch,
            )
            .map_err(|e| CheckError::Server(e.to_string()))?;
            postgres_protocol::message::frontend::close(b'S', &probe, &mut batch)
                .expect("no NUL in the probe's name");
            postgres_protocol::message::frontend::sync(&mut batch);
        }
        let reply = self.run_own_batch(&batch, statements.len(), to).await?;
        let mut works = vec![true; statements.len()];
        for (part, _, _) in reply.errors {
            if let Some(w) = works.get_mut(part) {
                *w = false;
            }
        }
        Ok(works)
    }

    /// Runs the state check. The caller guarantees a safe point. An error
    /// other than `Server` means the connection's protocol state is unknown
    /// and the session must end.
    pub async fn check(
        &mut self,
        depth: Depth<'_>,
        to: Listeners<'_>,
    ) -> Result<ServerState, CheckError> {
        let mut batch = BytesMut::with_capacity(2048);
        check_batch(to.ledger.custom_names(), depth, &mut batch);
        crate::protocol::write::message(&mut batch, b'S', |_| {});
        check_result(self.run_own_batch(&batch, 1, to).await?)
    }

    /// Runs pgbaton's own `syncs`-part batch at a safe point. A FATAL is
    /// passed on to the client and the connection is then broken. Dropped
    /// before its end, what the server still owes is in `self.owed`.
    async fn run_own_batch(
        &mut self,
        batch: &[u8],
        syncs: usize,
        to: Listeners<'_>,
    ) -> Result<BatchReply, CheckError> {
        let Listeners { ledger, to_client } = to;
        let run = run_batches_owed(
            &mut self.r,
            &mut self.w,
            &mut self.inbox.buf,
            batch,
            syncs,
            &mut self.owed,
            |tag, msg| {
                if tag == BackendTag::ParameterStatus {
                    ledger.on_backend(tag, &msg[5..]);
                }
                to_client.push(msg);
            },
        );
        match tokio::time::timeout(CHECK_LIMIT, run).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(BatchError::Fatal { raw, message, .. })) => {
                to_client.push(raw);
                Err(CheckError::Broken(message))
            }
            Ok(Err(e)) => Err(CheckError::Broken(e.to_string())),
            Err(_) => Err(CheckError::Broken(
                "the server did not answer in time".into(),
            )),
        }
    }
}
