//! Messages pgbaton writes itself, as the server side to clients: errors
//! (through [`super::error::write_client_error`] only),
//! authentication, parameter and key data, and simple result sets for the
//! admin console. Relayed messages are never re-encoded.

use bytes::{BufMut, BytesMut};

/// Appends one message, writing its length once the body is written.
pub fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    // A NUL inside would end the field early on the other side.
    out.extend(s.iter().copied().filter(|&b| b != 0));
    out.put_u8(0);
}

/// Severity of a message pgbaton sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Severity::Error => b"ERROR",
            Severity::Fatal => b"FATAL",
            Severity::Notice => b"NOTICE",
            Severity::Warning => b"WARNING",
        }
    }
}

/// An ErrorResponse or NoticeResponse written by pgbaton.
#[derive(Debug, Clone)]
pub(crate) struct Report<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

impl<'a> Report<'a> {
    pub fn new(severity: Severity, code: &'a str, message: &'a str) -> Self {
        Report {
            severity,
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    pub fn write(&self, out: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Notice | Severity::Warning => b'N',
            _ => b'E',
        };
        message(out, tag, |b| {
            for (k, v) in [
                (b'S', self.severity.as_bytes()),
                (b'V', self.severity.as_bytes()),
                (b'C', self.code.as_bytes()),
                (b'M', self.message.as_bytes()),
            ] {
                b.put_u8(k);
                put_cstr(b, v);
            }
            if let Some(d) = self.detail {
                b.put_u8(b'D');
                put_cstr(b, d.as_bytes());
            }
            if let Some(h) = self.hint {
                b.put_u8(b'H');
                put_cstr(b, h.as_bytes());
            }
            b.put_u8(0);
        });
    }
}

pub fn auth_ok(out: &mut BytesMut) {
    message(out, b'R', |b| b.put_i32(0));
}

/// AuthenticationSASL offering the given mechanisms.
pub fn auth_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    message(out, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    message(out, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, key: i32) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(key);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version pgbaton speaks and the
/// protocol options (`_pq_.*`) it did not recognise.
pub fn negotiate_protocol_version(out: &mut BytesMut, newest_minor: i32, unrecognized: &[&[u8]]) {
    message(out, b'v', |b| {
        b.put_i32((3 << 16) | newest_minor);
        b.put_i32(unrecognized.len() as i32);
        for o in unrecognized {
            put_cstr(b, o);
        }
    });
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |b| put_cstr(b, tag.as_bytes()));
}

pub fn empty_query_response(out: &mut BytesMut) {
    message(out, b'I', |_| {});
}

/// RowDescription where every column is `text` (OID 25) in text format.
pub fn row_description(out: &mut BytesMut, columns: &[&str], types: &[u32]) {
    message(out, b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (i, c) in columns.iter().enumerate() {
            put_cstr(b, c.as_bytes());
            b.put_i32(0); // table oid
            b.put_i16(0); // column number
            b.put_u32(types.get(i).copied().unwrap_or(TEXT_OID));
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no typmod
            b.put_i16(0); // text format
        }
    });
}

/// The type of a column unless told otherwise.
pub const TEXT_OID: u32 = 25;
pub const INT8_OID: u32 = 20;
/// `timestamp with time zone`, for columns written by [`timestamptz`].
pub const TIMESTAMPTZ_OID: u32 = 1184;

/// A time as Postgres writes a `timestamptz` in UTC with DateStyle ISO:
/// `2026-12-07 00:48:28.123456+00`.
pub fn timestamptz(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}+00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// DataRow of text values; `None` is SQL NULL.
pub fn data_row(out: &mut BytesMut, values: &[Option<&str>]) {
    message(out, b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::error_fields;
    use crate::protocol::codec::split_message;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_written_as_postgres_writes_them() {
        let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us);
        assert_eq!(timestamptz(at(0, 0)), "1970-01-01 00:00:00.000000+00");
        // SELECT to_timestamp(1796604508.123456) AT TIME ZONE 'UTC'
        assert_eq!(
            timestamptz(at(1_796_604_508, 123_456)),
            "2026-12-07 00:48:28.123456+00"
        );
        // A leap day.
        assert_eq!(
            timestamptz(at(951_782_400, 0)),
            "2000-02-29 00:00:00.000000+00"
        );
    }

    #[test]
    fn error_round_trips_through_the_reader() {
        let mut out = BytesMut::new();
        let mut r = Report::new(Severity::Fatal, "57P01", "shutting\0down");
        r.hint = Some("reconnect");
        r.write(&mut out);
        let (frame, body) = split_message(&out, |_| 1 << 20).unwrap().unwrap();
        assert_eq!(frame.tag, b'E');
        assert_eq!(frame.total, out.len());
        let f = error_fields(body);
        assert!(f.is_fatal());
        assert_eq!(f.code, b"57P01");
        assert_eq!(f.message, b"shuttingdown");
    }

    #[test]
    fn lengths_are_right() {
        let mut out = BytesMut::new();
        auth_ok(&mut out);
        assert_eq!(&out[..], b"R\0\0\0\x08\0\0\0\0");
        out.clear();
        ready_for_query(&mut out, b'I');
        assert_eq!(&out[..], b"Z\0\0\0\x05I");
    }
}
