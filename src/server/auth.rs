//! Answers a server's authentication requests with pgbaton's own credentials:
//! cleartext, md5 and SCRAM-SHA-256 (client side from `postgres-protocol`).
//! This is what lets pgbaton open a server connection for a session without
//! its client, which migration depends on.

use super::ServerError;
use crate::config::Secret;
use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;

/// State of one authentication exchange.
pub(super) enum AuthState {
    Idle,
    Scram(Box<ScramSha256>),
}

/// Handles one AuthenticationXXX message body; appends the reply (if any) to
/// `out`. Returns true once AuthenticationOk has arrived.
pub(super) fn answer(
    body: &[u8],
    state: &mut AuthState,
    backend: &str,
    user: &str,
    password: Option<&Secret>,
    out: &mut BytesMut,
) -> Result<bool, ServerError> {
    let protocol = |reason: &str| ServerError::Protocol {
        backend: backend.to_string(),
        reason: reason.to_string(),
    };
    if body.len() < 4 {
        return Err(protocol("short authentication message"));
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let data = &body[4..];
    let need_password = || {
        password.ok_or_else(|| ServerError::NoPassword {
            backend: backend.to_string(),
            user: user.to_string(),
        })
    };
    let io = |e: std::io::Error| protocol(&e.to_string());
    match code {
        0 => return Ok(true),
        3 => {
            frontend::password_message(need_password()?.expose().as_bytes(), out).map_err(io)?;
        }
        5 => {
            let salt: [u8; 4] = data
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| protocol("md5 request without salt"))?;
            let hash = postgres_protocol::authentication::md5_hash(
                user.as_bytes(),
                need_password()?.expose().as_bytes(),
                salt,
            );
            frontend::password_message(hash.as_bytes(), out).map_err(io)?;
        }
        10 => {
            let offers_scram = data
                .split(|&b| b == 0)
                .any(|m| m == crate::auth::scram::MECHANISM.as_bytes());
            if !offers_scram {
                return Err(ServerError::UnsupportedAuth {
                    backend: backend.to_string(),
                    method: code,
                });
            }
            let scram = ScramSha256::new(
                need_password()?.expose().as_bytes(),
                ChannelBinding::unsupported(),
            );
            frontend::sasl_initial_response(crate::auth::scram::MECHANISM, scram.message(), out)
                .map_err(io)?;
            *state = AuthState::Scram(Box::new(scram));
        }
        11 | 12 => {
            let AuthState::Scram(scram) = state else {
                return Err(protocol("SASL message outside a SASL exchange"));
            };
            let scram_err = |e: std::io::Error| ServerError::Scram {
                backend: backend.to_string(),
                reason: e.to_string(),
            };
            if code == 11 {
                scram.update(data).map_err(scram_err)?;
                frontend::sasl_response(scram.message(), out).map_err(io)?;
            } else {
                scram.finish(data).map_err(scram_err)?;
            }
        }
        other => {
            return Err(ServerError::UnsupportedAuth {
                backend: backend.to_string(),
                method: other,
            })
        }
    }
    Ok(false)
}
