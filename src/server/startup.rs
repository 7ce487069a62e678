//! Logging in to a server: StartupMessage with the client's parameters,
//! authentication with pgbaton's credentials, then everything up to the first
//! ReadyForQuery.

use super::auth::{answer, AuthState};
use super::{ServerConn, ServerError};
use crate::config::{Backend, Secret};
use crate::net::Stream;
use crate::protocol::backend::{backend_key_data, error_fields, parameter_status, BackendTag};
use crate::protocol::codec::{split_message, PG_LARGE_MESSAGE_LIMIT};
use crate::protocol::startup::{write_startup, StartupParam};
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a login needs besides the transport.
pub struct Login<'a> {
    /// The client's startup parameters, sent verbatim (minus `_pq_.*`).
    pub params: &'a [StartupParam],
    pub user: &'a str,
    pub password: Option<&'a Secret>,
    pub timeout: Duration,
}

pub async fn login(
    mut stream: Stream,
    backend: &Backend,
    login: Login<'_>,
) -> Result<ServerConn, ServerError> {
    match tokio::time::timeout(login.timeout, login_inner(&mut stream, backend, &login)).await {
        Ok(Ok((pid, key, params, notices, leftover))) => Ok(ServerConn {
            stream,
            backend: backend.clone(),
            pid,
            key,
            params,
            notices,
            leftover,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ServerError::Timeout {
            backend: backend.name.clone(),
            addr: backend.addr(),
        }),
    }
}

type LoginResult = (i32, i32, Vec<(Vec<u8>, Vec<u8>)>, Vec<Bytes>, BytesMut);

async fn login_inner(
    stream: &mut Stream,
    backend: &Backend,
    login: &Login<'_>,
) -> Result<LoginResult, ServerError> {
    let io = |source| ServerError::Io {
        backend: backend.name.clone(),
        source,
    };
    let mut startup = Vec::with_capacity(256);
    write_startup(
        login
            .params
            .iter()
            .filter(|p| !p.name.starts_with(b"_pq_.")),
        &mut startup,
    );
    stream.write_all(&startup).await.map_err(io)?;
    stream.flush().await.map_err(io)?;

    let mut buf = BytesMut::with_capacity(8192);
    let mut out = BytesMut::new();
    let mut auth = AuthState::Idle;
    let mut authenticated = false;
    let (mut pid, mut key) = (0, 0);
    let mut params = Vec::new();
    let mut notices = Vec::new();
    loop {
        let (tag, msg) = read_message(stream, &mut buf, backend).await?;
        let body = &msg[5..];
        match BackendTag::from_byte(tag) {
            BackendTag::Authentication if !authenticated => {
                authenticated = answer(
                    body,
                    &mut auth,
                    &backend.name,
                    login.user,
                    login.password,
                    &mut out,
                )?;
                if !out.is_empty() {
                    stream.write_all(&out).await.map_err(io)?;
                    stream.flush().await.map_err(io)?;
                    out.clear();
                }
            }
            BackendTag::ErrorResponse => {
                let f = error_fields(body);
                return Err(ServerError::Refused {
                    backend: backend.name.clone(),
                    code: String::from_utf8_lossy(f.code).into_owned(),
                    message: String::from_utf8_lossy(f.message).into_owned(),
                    raw: msg.clone(),
                });
            }
            BackendTag::ParameterStatus => {
                if let Some((n, v)) = parameter_status(body) {
                    params.push((n.to_vec(), v.to_vec()));
                }
            }
            BackendTag::BackendKeyData => {
                (pid, key) = backend_key_data(body).ok_or_else(|| ServerError::Protocol {
                    backend: backend.name.clone(),
                    reason: "short BackendKeyData".into(),
                })?;
            }
            BackendTag::NoticeResponse => notices.push(msg.clone()),
            // We always ask for 3.0 and send no _pq_ options, but a newer
            // server may still tell us its newest version: nothing to do.
            BackendTag::NegotiateProtocolVersion => {}
            BackendTag::ReadyForQuery if authenticated => {
                return Ok((pid, key, params, notices, buf))
            }
            _ => {
                return Err(ServerError::Protocol {
                    backend: backend.name.clone(),
                    reason: format!("unexpected message {:?} during login", tag as char),
                })
            }
        }
    }
}

/// Reads one whole message; returns its tag and its bytes (header included).
pub(crate) async fn read_message(
    stream: &mut Stream,
    buf: &mut BytesMut,
    backend: &Backend,
) -> Result<(u8, Bytes), ServerError> {
    loop {
        match split_message(buf, |_| PG_LARGE_MESSAGE_LIMIT) {
            Ok(Some((frame, _))) => return Ok((frame.tag, buf.split_to(frame.total).freeze())),
            Ok(None) => {}
            Err(e) => {
                return Err(ServerError::Protocol {
                    backend: backend.name.clone(),
                    reason: e.to_string(),
                })
            }
        }
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|source| ServerError::Io {
                backend: backend.name.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ServerError::Closed {
                backend: backend.name.clone(),
            });
        }
    }
}
