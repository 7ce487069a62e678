//! Clients authenticating to pgbaton: trust, or SCRAM-SHA-256 against the
//! configured users (plain password or a pg_authid SCRAM secret).

use super::env::Env;
use crate::auth::scram::{ServerExchange, StoredSecret, MECHANISM};
use crate::config::ClientAuth;
use crate::net::Stream;
use crate::protocol::codec::{cstr, HEADER_LEN, PG_SMALL_MESSAGE_LIMIT};
use crate::protocol::write;
use crate::protocol::{ClientError, SqlState};
use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Error)]
pub enum ClientAuthError {
    #[error("password authentication failed for user \"{0}\"")]
    BadPassword(String),
    /// Told to the client exactly as a wrong password is; only pgbaton's
    /// log says why (see [`ClientAuthError::detail`]).
    #[error("password authentication failed for user \"{0}\"")]
    UnknownUser(String),
    #[error("invalid authentication message: {0}")]
    Protocol(String),
    #[error("client connection lost during authentication: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError for ClientAuthError {
    fn sqlstate(&self) -> SqlState {
        ClientAuthError::sqlstate(self)
    }

    fn severity(&self) -> crate::protocol::write::Severity {
        crate::protocol::write::Severity::Fatal
    }
}

impl ClientAuthError {
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ClientAuthError::BadPassword(_) | ClientAuthError::UnknownUser(_) => {
                SqlState::INVALID_PASSWORD
            }
            ClientAuthError::Protocol(_) | ClientAuthError::Io(_) => SqlState::PROTOCOL_VIOLATION,
        }
    }

    /// What the log says beyond what the client is told.
    pub fn detail(&self) -> &'static str {
        match self {
            ClientAuthError::UnknownUser(_) => "the user is not configured in pgbaton",
            ClientAuthError::BadPassword(_) => "the password does not match",
            _ => "",
        }
    }
}

/// Runs the authentication exchange; on success AuthenticationOk has been
/// queued in `out` (the caller sends it with the rest of the startup reply).
pub async fn authenticate(
    stream: &mut Stream,
    env: &Env,
    method: ClientAuth,
    user: &str,
    out: &mut BytesMut,
) -> Result<(), ClientAuthError> {
    if method == ClientAuth::Trust {
        write::auth_ok(out);
        return Ok(());
    }
    // An unknown user goes through the same exchange against a secret no
    // password matches, and is told what a wrong password is told.
    let mock;
    let known = env.secrets.contains_key(user);
    let secret = match env.secrets.get(user) {
        Some(s) => s,
        None => {
            mock = StoredSecret::mock(user.as_bytes(), &env.mock_nonce, env.mock_iterations);
            &mock
        }
    };
    let mut msg = BytesMut::new();
    write::auth_sasl(&mut msg, &[MECHANISM]);
    stream.write_all(&msg).await?;
    stream.flush().await?;

    let initial = read_auth_message(stream).await?;
    let (mechanism, rest) =
        cstr(&initial).ok_or_else(|| ClientAuthError::Protocol("no mechanism".into()))?;
    if mechanism != MECHANISM.as_bytes() {
        return Err(ClientAuthError::Protocol(format!(
            "client selected an invalid SASL authentication mechanism {:?}",
            String::from_utf8_lossy(mechanism)
        )));
    }
    if rest.len() < 4 {
        return Err(ClientAuthError::Protocol(
            "short SASLInitialResponse".into(),
        ));
    }
    let data = &rest[4..];
    let exchange = ServerExchange::start(data, secret)
        .map_err(|e| ClientAuthError::Protocol(e.to_string()))?;
    msg.clear();
    write::auth_sasl_continue(&mut msg, exchange.server_first());
    stream.write_all(&msg).await?;
    stream.flush().await?;

    let final_msg = read_auth_message(stream).await?;
    match exchange.finish(&final_msg, secret) {
        Ok(server_final) => {
            write::auth_sasl_final(out, &server_final);
            write::auth_ok(out);
            Ok(())
        }
        Err(crate::auth::scram::ScramError::BadProof) if known => {
            Err(ClientAuthError::BadPassword(user.to_string()))
        }
        Err(crate::auth::scram::ScramError::BadProof) => {
            Err(ClientAuthError::UnknownUser(user.to_string()))
        }
        Err(e) => Err(ClientAuthError::Protocol(e.to_string())),
    }
}

/// Reads one `p` message (password / SASL response) and returns its body.
async fn read_auth_message(stream: &mut Stream) -> Result<Vec<u8>, ClientAuthError> {
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).await?;
    if header[0] != b'p' {
        return Err(ClientAuthError::Protocol(format!(
            "expected SASL response, got message type {:?}",
            header[0] as char
        )));
    }
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if !(4..=PG_SMALL_MESSAGE_LIMIT as i32).contains(&len) {
        return Err(ClientAuthError::Protocol(format!(
            "invalid message length {len}"
        )));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    Ok(body)
}
