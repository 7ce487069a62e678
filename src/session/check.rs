//! The server check on a client's own connection, at a safe point: one round
//! trip with a named statement and portal, closed afterwards (a simple query
//! would destroy the client's unnamed statement, P5). Asynchronous messages
//! that arrive meanwhile go to the client, never to the check (P21).

use super::registry::CheckError;
use super::relay::Relay;
use crate::ledger::check::{check_batch, Depth, ServerState};
use crate::protocol::backend::BackendTag;
use crate::server::batch::{run_batches, BatchError, BatchReply};
use bytes::BytesMut;
use std::time::Duration;

/// A server that does not answer the check in this time is taken as broken.
pub const CHECK_LIMIT: Duration = Duration::from_secs(30);

/// Reads a check's reply into the server's state.
pub fn check_result(reply: crate::server::batch::BatchReply) -> Result<ServerState, CheckError> {
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

impl Relay {
    /// Whether each statement (text, parameter types) can be prepared on
    /// the session's server now, at a safe point: Parse, Close, Sync each,
    /// in one round trip, leaving nothing behind.
    pub(crate) async fn probe_parses(
        &mut self,
        statements: &[(String, Vec<u32>)],
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
        let reply = self.run_own_batch(&batch, statements.len()).await?;
        let mut works = vec![true; statements.len()];
        for (part, _, _) in reply.errors {
            if let Some(w) = works.get_mut(part) {
                *w = false;
            }
        }
        Ok(works)
    }

    /// Runs the check. The caller guarantees a safe point. An error other
    /// than `Server` means the connection's protocol state is unknown and the
    /// session must end.
    pub(crate) async fn server_check(
        &mut self,
        depth: Depth<'_>,
    ) -> Result<ServerState, CheckError> {
        let mut batch = BytesMut::with_capacity(2048);
        check_batch(self.ledger.custom_names(), depth, &mut batch);
        crate::protocol::write::message(&mut batch, b'S', |_| {});
        check_result(self.run_own_batch(&batch, 1).await?)
    }

    /// Runs pgbaton's own `syncs`-part batch on the session's connection at
    /// a safe point. What the server sends on its own goes to the client
    /// (ParameterStatus through the ledger too); a FATAL is passed on and
    /// the connection is then broken.
    async fn run_own_batch(
        &mut self,
        batch: &[u8],
        syncs: usize,
    ) -> Result<BatchReply, CheckError> {
        let to_client = &mut self.to_client;
        let ledger = &mut self.ledger;
        let run = run_batches(
            &mut self.server_r,
            &mut self.server_w,
            &mut self.server_in.buf,
            batch,
            syncs,
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
                self.to_client.push(raw);
                Err(CheckError::Broken(message))
            }
            Ok(Err(e)) => Err(CheckError::Broken(e.to_string())),
            Err(_) => Err(CheckError::Broken(
                "the server did not answer in time".into(),
            )),
        }
    }
}
