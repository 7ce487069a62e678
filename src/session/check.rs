//! The server check: one round trip on the session's own server connection
//! at a safe point, with a named statement and portal closed afterwards (a
//! simple query would destroy the client's unnamed statement, P5).
//! Asynchronous messages that arrive meanwhile (notifications, notices,
//! parameter changes) go to the client, never to the check (P21).

use super::registry::CheckError;
use super::relay::Relay;
use crate::ledger::check::{text_array_literal, ServerState, CHECK_NAME, CHECK_SQL};
use crate::protocol::backend::{error_fields, BackendTag};
use crate::protocol::codec::{split_message, HEADER_LEN};
use crate::protocol::write;
use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// OIDs of the check's parameters: text[] and text.
const TEXT_ARRAY_OID: u32 = 1009;
const TEXT_OID: u32 = 25;

/// A server that does not answer the check in this time is taken as broken.
const CHECK_LIMIT: Duration = Duration::from_secs(30);

/// Writes Parse, Bind, Execute, Close, Sync for the check.
fn check_batch(custom_names: &str, out: &mut BytesMut) {
    frontend::parse(CHECK_NAME, CHECK_SQL, [TEXT_ARRAY_OID, TEXT_OID], out)
        .expect("static names have no NUL");
    write::message(out, b'B', |b| {
        b.put_slice(CHECK_NAME.as_bytes());
        b.put_u8(0);
        b.put_slice(CHECK_NAME.as_bytes());
        b.put_u8(0);
        b.put_i16(0); // all parameters in text
        b.put_i16(2);
        for v in [custom_names.as_bytes(), CHECK_NAME.as_bytes()] {
            b.put_i32(v.len() as i32);
            b.put_slice(v);
        }
        b.put_i16(0); // results in text
    });
    frontend::execute(CHECK_NAME, 0, out).expect("static name");
    frontend::close(b'S', CHECK_NAME, out).expect("static name");
    frontend::sync(out);
}

impl Relay {
    /// Runs the check. The caller guarantees a safe point. An error other
    /// than `Server` means the connection's protocol state is unknown and the
    /// session must end.
    pub(crate) async fn server_check(&mut self) -> Result<ServerState, CheckError> {
        match tokio::time::timeout(CHECK_LIMIT, self.server_check_inner()).await {
            Ok(r) => r,
            Err(_) => Err(CheckError::Broken(
                "the server did not answer in time".into(),
            )),
        }
    }

    async fn server_check_inner(&mut self) -> Result<ServerState, CheckError> {
        let names = text_array_literal(self.ledger.custom_names());
        let mut out = BytesMut::with_capacity(2048);
        check_batch(&names, &mut out);
        let io = |e: std::io::Error| CheckError::Broken(e.to_string());
        self.server_w.write_all(&out).await.map_err(io)?;
        self.server_w.flush().await.map_err(io)?;

        let mut result: Option<String> = None;
        let mut error: Option<String> = None;
        loop {
            let Some((frame, _)) = split_message(&self.server_in.buf, |_| usize::MAX)
                .map_err(|e| CheckError::Broken(e.to_string()))?
            else {
                self.server_in.buf.reserve(8192);
                let n = self
                    .server_r
                    .read_buf(&mut self.server_in.buf)
                    .await
                    .map_err(io)?;
                if n == 0 {
                    return Err(CheckError::Broken(
                        "the server closed the connection".into(),
                    ));
                }
                continue;
            };
            let msg = self.server_in.buf.split_to(frame.total).freeze();
            let body = &msg[HEADER_LEN..];
            match BackendTag::from_byte(frame.tag) {
                BackendTag::NotificationResponse | BackendTag::NoticeResponse => {
                    self.to_client.push(msg.clone())
                }
                BackendTag::ParameterStatus => {
                    self.ledger.on_backend(BackendTag::ParameterStatus, body);
                    self.to_client.push(msg.clone());
                }
                BackendTag::ParseComplete
                | BackendTag::BindComplete
                | BackendTag::CommandComplete
                | BackendTag::CloseComplete => {}
                BackendTag::DataRow => result = data_row_text(body),
                BackendTag::ErrorResponse => {
                    let f = error_fields(body);
                    if f.is_fatal() {
                        // Let the relay deliver it and see the server close.
                        self.to_client.push(msg.clone());
                        return Err(CheckError::Broken(
                            String::from_utf8_lossy(f.message).into_owned(),
                        ));
                    }
                    error = Some(String::from_utf8_lossy(f.message).into_owned());
                }
                BackendTag::ReadyForQuery => break,
                other => {
                    return Err(CheckError::Broken(format!(
                        "unexpected reply {other:?} to the check"
                    )))
                }
            }
        }
        if let Some(e) = error {
            return Err(CheckError::Server(e));
        }
        let text = result.ok_or_else(|| CheckError::Server("the check returned no row".into()))?;
        ServerState::from_json(&text)
            .map_err(|e| CheckError::Server(format!("unreadable check result: {e}")))
    }
}

/// The single text column of a DataRow.
fn data_row_text(body: &[u8]) -> Option<String> {
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
