//! Why a server connection could not be made, with the SQLSTATE the client
//! gets for each cause. Every message names the backend.

use crate::protocol::{ClientError, SqlState};
use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot connect to backend \"{backend}\" ({addr}): {source}")]
    Connect {
        backend: String,
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to backend \"{backend}\" ({addr})")]
    Timeout { backend: String, addr: String },
    #[error("backend \"{backend}\" does not support TLS, which its configuration requires")]
    TlsRefused { backend: String },
    #[error("TLS handshake with backend \"{backend}\" failed: {source}")]
    Tls {
        backend: String,
        source: std::io::Error,
    },
    #[error("connection to backend \"{backend}\" lost: {source}")]
    Io {
        backend: String,
        source: std::io::Error,
    },
    #[error("backend \"{backend}\" closed the connection during login")]
    Closed { backend: String },
    #[error("backend \"{backend}\" refused the login: {message}")]
    Refused {
        backend: String,
        code: String,
        message: String,
        /// The server's ErrorResponse, whole, to forward unchanged.
        raw: Bytes,
    },
    #[error("backend \"{backend}\" asks for a password and pgbaton has none for user \"{user}\"")]
    NoPassword { backend: String, user: String },
    #[error("backend \"{backend}\" asks for an authentication method pgbaton does not speak (code {method})")]
    UnsupportedAuth { backend: String, method: i32 },
    #[error("SCRAM authentication with backend \"{backend}\" failed: {reason}")]
    Scram { backend: String, reason: String },
    #[error("protocol violation from backend \"{backend}\": {reason}")]
    Protocol { backend: String, reason: String },
}

impl ClientError for ServerError {
    fn sqlstate(&self) -> SqlState {
        ServerError::sqlstate(self)
    }

    fn client_message(&self) -> String {
        format!("pgbaton: {self}")
    }
}

impl ServerError {
    /// The SQLSTATE a client sees for this failure.
    pub fn sqlstate(&self) -> SqlState {
        match self {
            ServerError::Refused { code, .. } => SqlState::from_code(code),
            ServerError::NoPassword { .. }
            | ServerError::UnsupportedAuth { .. }
            | ServerError::Scram { .. } => SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ServerError::Protocol { .. } => SqlState::PROTOCOL_VIOLATION,
            _ => SqlState::CONNECTION_FAILURE,
        }
    }

    /// The server's own ErrorResponse, when it sent one.
    pub fn server_error(&self) -> Option<&Bytes> {
        match self {
            ServerError::Refused { raw, .. } => Some(raw),
            _ => None,
        }
    }
}
