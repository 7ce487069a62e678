//! Startup packets: the untagged first messages of a connection.
//!
//! A client opens with SSLRequest, GSSENCRequest, CancelRequest or a
//! StartupMessage; all share the form `length (int32) | code (int32) | body`.
//! See "Message Flow / Start-up" in the protocol chapter of the PG docs.

use super::codec::cstr;
use thiserror::Error;

/// `MAX_STARTUP_PACKET_LENGTH` in src/include/libpq/pqcomm.h.
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
/// pgbaton's own code (1234.5699, unused by Postgres): a CancelRequest one
/// replica forwards to the replica that owns the session. The owner handles
/// it and never forwards it again, so a misconfigured address (one that
/// leads back to a load balancer) cannot make a cancel go round.
pub const FORWARDED_CANCEL_CODE: i32 = (1234 << 16) | 5699;
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// One ordered startup parameter, kept as raw bytes so that it can be sent to
/// a server verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupParam {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        key: i32,
        /// Sent by another replica (`FORWARDED_CANCEL_CODE`).
        forwarded: bool,
    },
    Startup {
        /// The version the client asked for (major << 16 | minor).
        version: i32,
        params: Vec<StartupParam>,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid startup packet length {0}")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0")]
    UnsupportedVersion { major: i32, minor: i32 },
    #[error("invalid startup packet layout: {0}")]
    BadLayout(&'static str),
    /// Postgres takes the last of two values, so a proxy that reads the
    /// first would authenticate one user and log in another.
    #[error("startup packet repeats the parameter \"{0}\"")]
    Duplicate(String),
}

/// Length of the startup packet at the start of `buf`, once its length word is
/// there. Checked against Postgres' own limit before the rest is read.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, StartupError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 || len as usize > MAX_STARTUP_PACKET_LEN {
        return Err(StartupError::BadLength(len.into()));
    }
    Ok(Some(len as usize))
}

/// Parses one whole startup packet (length word included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE | FORWARDED_CANCEL_CODE => {
            if body.len() < 8 {
                return Err(StartupError::BadLayout("cancel request too short"));
            }
            Ok(StartupPacket::Cancel {
                pid: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                key: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                forwarded: code == FORWARDED_CANCEL_CODE,
            })
        }
        version => {
            let (major, minor) = (version >> 16, version & 0xffff);
            if major != 3 {
                return Err(StartupError::UnsupportedVersion { major, minor });
            }
            Ok(StartupPacket::Startup {
                version,
                params: parse_params(body)?,
            })
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<StartupParam>, StartupError> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = cstr(body).ok_or(StartupError::BadLayout("missing terminator"))?;
        if name.is_empty() {
            return Ok(params);
        }
        let (value, rest) = cstr(rest).ok_or(StartupError::BadLayout("parameter without value"))?;
        if params.iter().any(|p: &StartupParam| p.name == name) {
            return Err(StartupError::Duplicate(
                String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned(),
            ));
        }
        params.push(StartupParam {
            name: name.to_vec(),
            value: value.to_vec(),
        });
        body = rest;
    }
}

/// Looks a parameter up by name.
pub fn param<'a>(params: &'a [StartupParam], name: &str) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|p| p.name == name.as_bytes())
        .map(|p| p.value.as_slice())
}

/// Whether `replication` asks for a walsender (physical or logical).
pub fn is_replication(params: &[StartupParam]) -> bool {
    match param(params, "replication") {
        None => false,
        Some(v) => !matches!(
            v.to_ascii_lowercase().as_slice(),
            b"false" | b"off" | b"no" | b"0"
        ),
    }
}

/// Writes a StartupMessage for protocol 3.0 with `params` in their order.
pub fn write_startup<'a>(params: impl IntoIterator<Item = &'a StartupParam>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for p in params {
        out.extend_from_slice(&p.name);
        out.push(0);
        out.extend_from_slice(&p.value);
        out.push(0);
    }
    out.push(0);
    let len = (out.len() - start) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_cancel_forwarded_by_a_replica_says_so() {
        let mut body = Vec::new();
        body.extend_from_slice(&7i32.to_be_bytes());
        body.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse(&packet(FORWARDED_CANCEL_CODE, &body)),
            Ok(StartupPacket::Cancel {
                pid: 7,
                key: 9,
                forwarded: true
            })
        );
    }

    use super::*;

    fn packet(code: i32, body: &[u8]) -> Vec<u8> {
        let mut p = ((8 + body.len()) as i32).to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn parses_requests() {
        assert_eq!(
            parse(&packet(SSL_REQUEST_CODE, b"")),
            Ok(StartupPacket::SslRequest)
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST_CODE, b"")),
            Ok(StartupPacket::GssEncRequest)
        );
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&9i32.to_be_bytes());
        assert_eq!(
            parse(&packet(CANCEL_REQUEST_CODE, &body)),
            Ok(StartupPacket::Cancel {
                pid: 7,
                key: 9,
                forwarded: false
            })
        );
    }

    #[test]
    fn parses_startup_and_round_trips() {
        let p = packet(PROTOCOL_3_0, b"user\0app\0options\0-c a=b\0\0");
        let StartupPacket::Startup { version, params } = parse(&p).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(version, PROTOCOL_3_0);
        assert_eq!(param(&params, "user"), Some(&b"app"[..]));
        let mut out = Vec::new();
        write_startup(&params, &mut out);
        assert_eq!(out, p);
    }

    #[test]
    fn refuses_bad_packets() {
        assert!(packet_len(&[0, 0, 0, 4]).is_err());
        assert!(packet_len(&[0, 1, 0, 0]).is_err());
        assert!(parse(&packet(2 << 16, b"")).is_err());
        assert!(parse(&packet(PROTOCOL_3_0, b"user\0")).is_err());
        assert!(parse(&packet(CANCEL_REQUEST_CODE, b"\0")).is_err());
    }

    #[test]
    fn refuses_a_repeated_parameter() {
        let p = packet(PROTOCOL_3_0, b"user\0app\0database\0d\0user\0postgres\0\0");
        assert_eq!(parse(&p), Err(StartupError::Duplicate("user".into())));
        let p = packet(PROTOCOL_3_0, b"options\0a\0options\0b\0\0");
        assert_eq!(parse(&p), Err(StartupError::Duplicate("options".into())));
    }

    #[test]
    fn replication_flag() {
        let mk = |v: &[u8]| {
            vec![StartupParam {
                name: b"replication".to_vec(),
                value: v.to_vec(),
            }]
        };
        assert!(is_replication(&mk(b"database")));
        assert!(is_replication(&mk(b"true")));
        assert!(!is_replication(&mk(b"false")));
        assert!(!is_replication(&[]));
    }
}
