//! Messages a server (backend) sends, by tag, and the few bodies pgbaton reads.

use super::codec::cstr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendTag {
    Authentication,
    BackendKeyData,
    ParameterStatus,
    ReadyForQuery,
    ErrorResponse,
    NoticeResponse,
    NotificationResponse,
    CommandComplete,
    ParseComplete,
    BindComplete,
    CloseComplete,
    CopyInResponse,
    CopyOutResponse,
    CopyBothResponse,
    CopyData,
    CopyDone,
    DataRow,
    RowDescription,
    NegotiateProtocolVersion,
    EmptyQueryResponse,
    PortalSuspended,
    NoData,
    ParameterDescription,
    FunctionCallResponse,
    Unknown(u8),
}

impl BackendTag {
    pub const fn from_byte(b: u8) -> BackendTag {
        match b {
            b'R' => BackendTag::Authentication,
            b'K' => BackendTag::BackendKeyData,
            b'S' => BackendTag::ParameterStatus,
            b'Z' => BackendTag::ReadyForQuery,
            b'E' => BackendTag::ErrorResponse,
            b'N' => BackendTag::NoticeResponse,
            b'A' => BackendTag::NotificationResponse,
            b'C' => BackendTag::CommandComplete,
            b'1' => BackendTag::ParseComplete,
            b'2' => BackendTag::BindComplete,
            b'3' => BackendTag::CloseComplete,
            b'G' => BackendTag::CopyInResponse,
            b'H' => BackendTag::CopyOutResponse,
            b'W' => BackendTag::CopyBothResponse,
            b'd' => BackendTag::CopyData,
            b'c' => BackendTag::CopyDone,
            b'D' => BackendTag::DataRow,
            b'T' => BackendTag::RowDescription,
            b'v' => BackendTag::NegotiateProtocolVersion,
            b'I' => BackendTag::EmptyQueryResponse,
            b's' => BackendTag::PortalSuspended,
            b'n' => BackendTag::NoData,
            b't' => BackendTag::ParameterDescription,
            b'V' => BackendTag::FunctionCallResponse,
            other => BackendTag::Unknown(other),
        }
    }
}

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    pub fn as_char(self) -> char {
        match self {
            TxStatus::Idle => 'I',
            TxStatus::InTransaction => 'T',
            TxStatus::Failed => 'E',
        }
    }
}

/// A ParameterStatus body: `name\0value\0`.
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = cstr(body)?;
    let (value, _) = cstr(rest)?;
    Some((name, value))
}

/// The fields of an ErrorResponse or NoticeResponse that pgbaton looks at.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// `V`: the non-localized severity (ERROR, FATAL, PANIC, ...).
    pub severity: &'a [u8],
    pub code: &'a [u8],
    pub message: &'a [u8],
}

impl ErrorFields<'_> {
    pub fn is_fatal(&self) -> bool {
        self.severity == b"FATAL" || self.severity == b"PANIC"
    }
}

pub fn error_fields(body: &[u8]) -> ErrorFields<'_> {
    let mut out = ErrorFields::default();
    let mut rest = body;
    let mut localized_severity: &[u8] = b"";
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, tail)) = cstr(tail) else {
            break;
        };
        match kind {
            b'V' => out.severity = value,
            b'S' => localized_severity = value,
            b'C' => out.code = value,
            b'M' => out.message = value,
            _ => {}
        }
        rest = tail;
    }
    if out.severity.is_empty() {
        out.severity = localized_severity;
    }
    out
}

/// BackendKeyData body for protocol 3.0: process id and a 4-byte secret.
pub fn backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    if body.len() < 8 {
        return None;
    }
    let pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let key = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    Some((pid, key))
}

/// Gives a NotificationResponse (whole message, header included) sent by
/// server process `from` the pid `to` instead: a session's own
/// notifications must carry the pid its client was told, whichever server
/// it is on now. Others' notifications are left alone.
pub fn rename_notifier(msg: &mut [u8], from: i32, to: i32) {
    if from == to || msg.len() < 9 || msg[0] != b'A' {
        return;
    }
    if msg[5..9] == from.to_be_bytes() {
        msg[5..9].copy_from_slice(&to.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_only_the_sessions_own_notifications() {
        let mut own = b"A\0\0\0\x0e\0\0\0\x07ch\0p\0".to_vec();
        rename_notifier(&mut own, 7, 42);
        assert_eq!(&own[5..9], &42i32.to_be_bytes());
        let mut other = b"A\0\0\0\x0e\0\0\0\x08ch\0p\0".to_vec();
        rename_notifier(&mut other, 7, 42);
        assert_eq!(&other[5..9], &8i32.to_be_bytes());
        let mut short = b"A\0\0".to_vec();
        rename_notifier(&mut short, 7, 42);
    }

    #[test]
    fn reads_error_fields() {
        let body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\0\0";
        let f = error_fields(body);
        assert!(f.is_fatal());
        assert_eq!(f.code, b"57P01");
        assert_eq!(f.message, b"terminating connection");
        assert!(!error_fields(b"SERROR\0C22012\0\0").is_fatal());
        // Truncated input never panics.
        let _ = error_fields(b"SFAT");
    }

    #[test]
    fn reads_parameter_status() {
        assert_eq!(
            parameter_status(b"TimeZone\0UTC\0"),
            Some((&b"TimeZone"[..], &b"UTC"[..]))
        );
        assert_eq!(parameter_status(b"TimeZone\0UTC"), None);
    }
}
