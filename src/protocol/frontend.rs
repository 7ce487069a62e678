//! Messages a client (frontend) sends after startup, by tag.
//!
//! Only the tags pgbaton acts on get a variant; every other byte is
//! `Unknown` and is forwarded untouched, so protocol additions pass through.

use super::codec::{PG_LARGE_MESSAGE_LIMIT, PG_SMALL_MESSAGE_LIMIT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendTag {
    Query,
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    Flush,
    FunctionCall,
    CopyData,
    CopyDone,
    CopyFail,
    Terminate,
    /// `p`: password, SASLInitialResponse or SASLResponse, by context.
    AuthResponse,
    Unknown(u8),
}

impl FrontendTag {
    pub const fn from_byte(b: u8) -> FrontendTag {
        match b {
            b'Q' => FrontendTag::Query,
            b'P' => FrontendTag::Parse,
            b'B' => FrontendTag::Bind,
            b'D' => FrontendTag::Describe,
            b'E' => FrontendTag::Execute,
            b'C' => FrontendTag::Close,
            b'S' => FrontendTag::Sync,
            b'H' => FrontendTag::Flush,
            b'F' => FrontendTag::FunctionCall,
            b'd' => FrontendTag::CopyData,
            b'c' => FrontendTag::CopyDone,
            b'f' => FrontendTag::CopyFail,
            b'X' => FrontendTag::Terminate,
            b'p' => FrontendTag::AuthResponse,
            other => FrontendTag::Unknown(other),
        }
    }

    /// Largest body Postgres itself accepts for this message type
    /// (`SocketBackend` in src/backend/tcop/postgres.c). Unknown tags get the
    /// large limit: the server, not pgbaton, decides whether it knows them.
    pub fn body_limit(self, configured_max: usize) -> usize {
        match self {
            // Held whole by pgbaton (the ledger and the command parser
            // read their text): bounded by the configured maximum.
            FrontendTag::Query | FrontendTag::Parse => configured_max.min(PG_LARGE_MESSAGE_LIMIT),
            // Streamed through in pieces: Postgres' own limit.
            FrontendTag::Bind
            | FrontendTag::FunctionCall
            | FrontendTag::CopyData
            | FrontendTag::AuthResponse
            | FrontendTag::Unknown(_) => PG_LARGE_MESSAGE_LIMIT,
            _ => PG_SMALL_MESSAGE_LIMIT,
        }
    }
}

/// Decoded `Query` body: the SQL text without its terminating NUL.
pub fn query_text(body: &[u8]) -> &[u8] {
    body.strip_suffix(b"\0").unwrap_or(body)
}

/// Decoded `Parse` body: statement name, query text and parameter type OIDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseBody<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    pub param_types: Vec<u32>,
}

pub fn parse_body(body: &[u8]) -> Option<ParseBody<'_>> {
    let (name, rest) = super::codec::cstr(body)?;
    let (query, rest) = super::codec::cstr(rest)?;
    if rest.len() < 2 {
        return None;
    }
    let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let oids = &rest[2..];
    if oids.len() < n * 4 {
        return None;
    }
    let param_types = oids
        .chunks_exact(4)
        .take(n)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(ParseBody {
        name,
        query,
        param_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for b in 0..=255u8 {
            let t = FrontendTag::from_byte(b);
            if let FrontendTag::Unknown(x) = t {
                assert_eq!(x, b);
            }
        }
        assert_eq!(FrontendTag::from_byte(b'S'), FrontendTag::Sync);
    }

    #[test]
    fn small_messages_have_small_limits() {
        assert_eq!(
            FrontendTag::Sync.body_limit(1 << 30),
            PG_SMALL_MESSAGE_LIMIT
        );
        assert_eq!(FrontendTag::Query.body_limit(1000), 1000);
        assert_eq!(
            FrontendTag::CopyData.body_limit(1000),
            PG_LARGE_MESSAGE_LIMIT
        );
    }

    #[test]
    fn decodes_parse() {
        let body = b"s1\0SELECT $1\0\0\x01\0\0\0\x17";
        let p = parse_body(body).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.query, b"SELECT $1");
        assert_eq!(p.param_types, vec![23]);
        assert!(parse_body(b"s1\0SELECT\0\0\x05").is_none());
    }
}
