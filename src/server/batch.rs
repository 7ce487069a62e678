//! Running one batch of pgbaton's own messages on a server connection and
//! reading every reply up to its ReadyForQuery. Used for the server check on a
//! client's connection, and for replay and verification on a move's target.
//!
//! Messages the server sends on its own (NotificationResponse,
//! NoticeResponse, ParameterStatus) are handed to `on_async`, never mixed
//! with the batch's results: a notification that arrives during pgbaton's
//! batch belongs to the client.

use crate::net::Stream;
use crate::protocol::backend::{error_fields, BackendTag};
use crate::protocol::codec::{split_message, HEADER_LEN};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

/// What a batch answered.
#[derive(Debug, Default)]
pub struct BatchReply {
    /// The first column of every DataRow, as text.
    pub rows: Vec<Option<String>>,
    /// The first ErrorResponse: SQLSTATE and message.
    pub error: Option<(String, String)>,
    /// Which Sync-terminated part of the batch (from 0) that error ended.
    pub error_part: usize,
    /// Every ErrorResponse: its part, SQLSTATE and message.
    pub errors: Vec<(usize, String, String)>,
    /// Transaction status of the final ReadyForQuery.
    pub status: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection")]
    Closed,
    #[error("the server sent FATAL {code}: {message}")]
    Fatal {
        code: String,
        message: String,
        raw: Bytes,
    },
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Sends `batch` (which must end with Sync) and reads up to ReadyForQuery.
pub async fn run_batch(
    r: &mut ReadHalf<Stream>,
    w: &mut WriteHalf<Stream>,
    buf: &mut BytesMut,
    batch: &[u8],
    on_async: impl FnMut(BackendTag, Bytes),
) -> Result<BatchReply, BatchError> {
    run_batches(r, w, buf, batch, 1, on_async).await
}

/// Sends `batch`, which holds `syncs` Sync-terminated parts pipelined in one
/// write, and reads up to the last of their ReadyForQuery messages.
pub async fn run_batches(
    r: &mut ReadHalf<Stream>,
    w: &mut WriteHalf<Stream>,
    buf: &mut BytesMut,
    batch: &[u8],
    syncs: usize,
    on_async: impl FnMut(BackendTag, Bytes),
) -> Result<BatchReply, BatchError> {
    let mut owed = 0;
    run_batches_owed(r, w, buf, batch, syncs, &mut owed, on_async).await
}

/// Marks `owed` while a batch is being written: if the batch is dropped
/// then, nobody knows how much of it the server got.
pub const TORN: usize = usize::MAX;

/// [`run_batches`] that keeps in `owed` how many ReadyForQuery messages the
/// server still owes the batch, so a caller that stops waiting (a move's
/// pause budget) can drop the rest of the replies as they come. `owed` is
/// [`TORN`] while the batch is being written.
///
/// Cancel-safe in this sense: dropped at any await, `buf` holds whole
/// messages not yet read and `owed` says what is still to come for them.
pub async fn run_batches_owed(
    r: &mut ReadHalf<Stream>,
    w: &mut WriteHalf<Stream>,
    buf: &mut BytesMut,
    batch: &[u8],
    syncs: usize,
    owed: &mut usize,
    mut on_async: impl FnMut(BackendTag, Bytes),
) -> Result<BatchReply, BatchError> {
    let syncs = syncs.max(1);
    *owed = TORN;
    w.write_all(batch).await?;
    w.flush().await?;
    *owed = syncs;
    let mut reply = BatchReply::default();
    loop {
        let Some((frame, _)) =
            split_message(buf, |_| usize::MAX).map_err(|e| BatchError::Protocol(e.to_string()))?
        else {
            buf.reserve(8192);
            if r.read_buf(buf).await? == 0 {
                return Err(BatchError::Closed);
            }
            continue;
        };
        let msg = buf.split_to(frame.total).freeze();
        let body = &msg[HEADER_LEN..];
        let tag = BackendTag::from_byte(frame.tag);
        match tag {
            BackendTag::NotificationResponse
            | BackendTag::NoticeResponse
            | BackendTag::ParameterStatus => on_async(tag, msg.clone()),
            BackendTag::DataRow => reply.rows.push(first_column(body)),
            BackendTag::ErrorResponse => {
                let f = error_fields(body);
                let code = String::from_utf8_lossy(f.code).into_owned();
                let message = String::from_utf8_lossy(f.message).into_owned();
                if f.is_fatal() {
                    return Err(BatchError::Fatal {
                        code,
                        message,
                        raw: msg.clone(),
                    });
                }
                let part = syncs - *owed;
                if reply.error.is_none() {
                    reply.error = Some((code.clone(), message.clone()));
                    reply.error_part = part;
                }
                reply.errors.push((part, code, message));
            }
            BackendTag::ReadyForQuery => {
                reply.status = body.first().copied().unwrap_or(b'I');
                *owed -= 1;
                if *owed == 0 {
                    return Ok(reply);
                }
            }
            _ => {}
        }
    }
}

/// The first column of a DataRow, as text.
fn first_column(body: &[u8]) -> Option<String> {
    if body.len() < 6 {
        return None;
    }
    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
    if len < 0 {
        return None;
    }
    body.get(6..6 + len as usize)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
