//! The one edge where pgbaton's own errors meet a client: every error,
//! warning or notice pgbaton says in its own words is a [`ClientError`],
//! and [`write_client_error`] is the only writer of its ErrorResponse or
//! NoticeResponse. A SQLSTATE is a [`SqlState`], never a bare string.
//! (Errors a server sent are relayed as they came, never re-encoded.)

use super::write::{Report, Severity};
use bytes::BytesMut;
use std::fmt;

pub use tokio_postgres::error::SqlState;

/// An error (or warning, or notice) a client is told by pgbaton.
pub trait ClientError: fmt::Display {
    fn sqlstate(&self) -> SqlState;

    fn severity(&self) -> Severity {
        Severity::Error
    }

    /// What the client reads; the `Display` text unless said otherwise
    /// (logs may say more than a client is told).
    fn client_message(&self) -> String {
        self.to_string()
    }

    fn hint(&self) -> Option<String> {
        None
    }
}

/// Appends `e` as an ErrorResponse (or a NoticeResponse for a warning or a
/// notice).
pub fn write_client_error(out: &mut BytesMut, e: &(impl ClientError + ?Sized)) {
    let code = e.sqlstate();
    let message = e.client_message();
    let hint = e.hint();
    let mut r = Report::new(e.severity(), code.code(), &message);
    r.hint = hint.as_deref();
    r.write(out);
}

/// Something pgbaton says in place: a code, a severity and a message.
#[derive(Debug, Clone)]
pub struct Said {
    pub code: SqlState,
    pub severity: Severity,
    pub message: String,
}

impl Said {
    pub fn error(code: SqlState, message: impl Into<String>) -> Said {
        Said::new(Severity::Error, code, message)
    }

    pub fn fatal(code: SqlState, message: impl Into<String>) -> Said {
        Said::new(Severity::Fatal, code, message)
    }

    /// A WARNING (01000) about something done that needs a person.
    pub fn warning(message: impl Into<String>) -> Said {
        Said::new(Severity::Warning, SqlState::WARNING, message)
    }

    /// A NOTICE (00000) with news, not trouble.
    pub fn notice(message: impl Into<String>) -> Said {
        Said::new(Severity::Notice, SqlState::SUCCESSFUL_COMPLETION, message)
    }

    fn new(severity: Severity, code: SqlState, message: impl Into<String>) -> Said {
        Said {
            code,
            severity,
            message: message.into(),
        }
    }

    /// Written, as [`write_client_error`] writes it.
    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        write_client_error(&mut out, self);
        out
    }
}

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ClientError for Said {
    fn sqlstate(&self) -> SqlState {
        self.code.clone()
    }

    fn severity(&self) -> Severity {
        self.severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::error_fields;
    use crate::protocol::codec::split_message;

    #[test]
    fn one_writer_for_every_severity() {
        for (said, tag, severity) in [
            (
                Said::error(SqlState::UNDEFINED_OBJECT, "no"),
                b'E',
                &b"ERROR"[..],
            ),
            (Said::fatal(SqlState::ADMIN_SHUTDOWN, "bye"), b'E', b"FATAL"),
            (Said::warning("careful"), b'N', b"WARNING"),
            (Said::notice("news"), b'N', b"NOTICE"),
        ] {
            let out = said.to_bytes();
            let (frame, body) = split_message(&out, |_| 1 << 20).unwrap().unwrap();
            assert_eq!(frame.tag, tag);
            let f = error_fields(body);
            assert_eq!(f.code, said.code.code().as_bytes());
            assert_eq!(f.severity, severity);
        }
    }
}
