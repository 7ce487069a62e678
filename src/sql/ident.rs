//! Names as written in SQL, decoded only on demand.
//!
//! The classifier hands out [`Ident`]s that borrow the statement text, so a
//! statement costs no allocation; [`Ident::to_name`] applies the rules of
//! manual 4.1.1 and 4.1.2 (<https://www.postgresql.org/docs/15/sql-syntax-lexical.html>)
//! only when the proxy actually records the name.

use std::fmt;

use super::lexer::{continuation, scan_quoted, Lexer, StrKind, Syntax, TokenKind};

/// `NAMEDATALEN - 1`: identifiers longer than this are truncated (manual 4.1.1).
const MAX_IDENT_BYTES: usize = 63;

/// A name from a statement: an identifier, a qualified name (`myapp.tenant`)
/// or a string constant (`SET ROLE 'x'`, `LOAD 'lib'`), kept as raw text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ident<'a>(Repr<'a>);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Repr<'a> {
    Sql(&'a [u8], Syntax),
    /// A name implied by special syntax, such as `timezone` for `SET TIME ZONE`.
    Fixed(&'static str),
}

impl<'a> Ident<'a> {
    pub(crate) fn sql(raw: &'a [u8], syntax: Syntax) -> Self {
        Ident(Repr::Sql(raw, syntax))
    }

    pub(crate) const fn fixed(name: &'static str) -> Self {
        Ident(Repr::Fixed(name))
    }

    /// The text as written (for names implied by syntax, the canonical name).
    pub fn raw(&self) -> &'a [u8] {
        match self.0 {
            Repr::Sql(raw, _) => raw,
            Repr::Fixed(name) => name.as_bytes(),
        }
    }

    /// The name as the server sees it: unquoted identifiers folded to lower
    /// case (ASCII only, as the server does for UTF-8), quoted ones with `""`
    /// undoubled and `U&` escapes decoded, both truncated to 63 bytes; string
    /// constants unescaped; qualified names joined with `.`. Invalid UTF-8 is
    /// replaced with U+FFFD. Allocates.
    pub fn to_name(&self) -> String {
        let (raw, syntax) = match self.0 {
            Repr::Fixed(name) => return name.to_owned(),
            Repr::Sql(raw, syntax) => (raw, syntax),
        };
        let mut out = Vec::with_capacity(raw.len());
        for t in Lexer::with_syntax(raw, syntax) {
            let from = out.len();
            match t.kind {
                TokenKind::Ident => out.extend(t.text.iter().map(u8::to_ascii_lowercase)),
                TokenKind::QuotedIdent => unquote_ident(t.text, &mut out),
                TokenKind::String(kind) => {
                    decode_string(t.text, kind, &mut out);
                    continue;
                }
                _ => out.extend_from_slice(t.text),
            }
            truncate(&mut out, from);
        }
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Whether [`to_name`](Self::to_name) equals `name`. Compares in place
    /// for plain identifiers, qualified or not, and for quoted names and
    /// strings without doubled quotes or escapes; allocates only otherwise.
    pub fn eq_name(&self, name: &str) -> bool {
        let (raw, syntax) = match self.0 {
            Repr::Fixed(fixed) => return fixed == name,
            Repr::Sql(raw, syntax) => (raw, syntax),
        };
        let mut rest = name.as_bytes();
        for t in Lexer::with_syntax(raw, syntax) {
            let part = match t.kind {
                TokenKind::Dot => Some((&b"."[..], false)),
                TokenKind::Ident if t.text.len() <= MAX_IDENT_BYTES => Some((t.text, true)),
                TokenKind::QuotedIdent | TokenKind::String(StrKind::Standard) => {
                    plain_quoted(t.text, t.terminated).map(|inner| (inner, false))
                }
                _ => None,
            };
            let Some((part, fold)) = part else {
                return self.to_name() == name;
            };
            let Some((head, tail)) = rest.split_at_checked(part.len()) else {
                return false;
            };
            let same = if fold {
                // Folding yields no upper-case ASCII; other bytes stay as they are.
                !head.iter().any(u8::is_ascii_uppercase) && head.eq_ignore_ascii_case(part)
            } else {
                head == part
            };
            if !same {
                return false;
            }
            rest = tail;
        }
        rest.is_empty()
    }
}

/// The body of `"x"` or `'x'` when decoding would not change it: closed, no
/// prefix, no doubled quote inside, and (identifiers) not over 63 bytes.
fn plain_quoted(text: &[u8], terminated: bool) -> Option<&[u8]> {
    let (&quote, rest) = text.split_first()?;
    let inner = rest.strip_suffix(&[quote])?;
    let ok = terminated
        && matches!(quote, b'"' | b'\'')
        && !inner.contains(&quote)
        && (quote == b'\'' || inner.len() <= MAX_IDENT_BYTES);
    ok.then_some(inner)
}

impl fmt::Debug for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({:?})", String::from_utf8_lossy(self.raw()))
    }
}

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_name())
    }
}

/// Truncates the identifier that starts at `from` to 63 bytes, on a UTF-8
/// character boundary as `pg_mbcliplen` does.
fn truncate(out: &mut Vec<u8>, from: usize) {
    if out.len() - from <= MAX_IDENT_BYTES {
        return;
    }
    let mut cut = from + MAX_IDENT_BYTES;
    while cut > from && out[cut] & 0xC0 == 0x80 {
        cut -= 1;
    }
    out.truncate(cut);
}

/// `"a""b"` -> `a"b`; `U&"d\0061t"` -> `dat`.
fn unquote_ident(text: &[u8], out: &mut Vec<u8>) {
    let (unicode, quoted) = match text {
        [b'u' | b'U', b'&', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let (end, ok) = scan_quoted(quoted, 1, b'"', false);
    let body = quoted.get(1..if ok { end - 1 } else { end }).unwrap_or(b"");
    let mut plain = Vec::with_capacity(body.len());
    undouble(body, b'"', &mut plain);
    if unicode {
        unicode_escapes(&plain, out);
    } else {
        out.extend_from_slice(&plain);
    }
}

fn undouble(body: &[u8], quote: u8, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < body.len() {
        out.push(body[i]);
        i += if body[i] == quote && body.get(i + 1) == Some(&quote) {
            2
        } else {
            1
        };
    }
}

/// Decodes a string constant token, continuation lines included.
pub(crate) fn decode_string(text: &[u8], kind: StrKind, out: &mut Vec<u8>) {
    let Some(mut q) = text.iter().position(|&b| b == b'\'') else {
        return;
    };
    let backslash = kind == StrKind::Escape;
    let mut plain = Vec::with_capacity(text.len());
    loop {
        let (end, ok) = scan_quoted(text, q + 1, b'\'', backslash);
        let body = &text[q + 1..if ok { end - 1 } else { end }];
        match kind {
            StrKind::Escape => backslash_escapes(body, &mut plain),
            _ => undouble(body, b'\'', &mut plain),
        }
        match continuation(text, end) {
            Some(next) if ok => q = next,
            _ => break,
        }
    }
    if kind == StrKind::Unicode {
        unicode_escapes(&plain, out);
    } else {
        out.extend_from_slice(&plain);
    }
}

/// E'' escapes, manual 4.1.2.2: `\b \f \n \r \t`, octal `\o..`, hex `\xh.`,
/// `\uXXXX`, `\UXXXXXXXX`, and `\c` for any other c; `''` is a quote.
fn backslash_escapes(body: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b == b'\'' {
            out.push(b'\'');
            i += usize::from(body.get(i) == Some(&b'\''));
            continue;
        }
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&c) = body.get(i) else { break };
        i += 1;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let (v, n) = radix(&body[i - 1..], 8, 3);
                out.push(v as u8);
                i += n - 1;
            }
            b'x' if body.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let (v, n) = radix(&body[i..], 16, 2);
                out.push(v as u8);
                i += n;
            }
            b'u' | b'U' => {
                let len = if c == b'u' { 4 } else { 8 };
                match body
                    .get(i..i + len)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                {
                    Some(hex) => {
                        i += len;
                        let mut cp = radix(hex, 16, len).0;
                        if (0xD800..0xDC00).contains(&cp) && body[i..].starts_with(b"\\u") {
                            if let Some(lo) = low_surrogate(&body[i + 2..], 4) {
                                cp = combine(cp, lo);
                                i += 6;
                            }
                        }
                        push_char(cp, out);
                    }
                    None => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
}

/// U&'' and U&"" escapes with the default escape character `\`:
/// `\XXXX`, `\+XXXXXX`, and `\\`. (A `UESCAPE` clause is not supported.)
fn unicode_escapes(body: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        if body.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
            continue;
        }
        let Some((mut cp, n)) = unicode_escape(&body[i + 1..]) else {
            out.push(b'\\');
            i += 1;
            continue;
        };
        i += 1 + n;
        if (0xD800..0xDC00).contains(&cp) && body.get(i) == Some(&b'\\') {
            if let Some((lo, n)) = unicode_escape(&body[i + 1..]) {
                if (0xDC00..0xE000).contains(&lo) {
                    cp = combine(cp, lo);
                    i += 1 + n;
                }
            }
        }
        push_char(cp, out);
    }
}

/// `XXXX` or `+XXXXXX` after the escape character: (code point, bytes used).
fn unicode_escape(s: &[u8]) -> Option<(u32, usize)> {
    let (digits, skip) = if s.first() == Some(&b'+') {
        (6, 1)
    } else {
        (4, 0)
    };
    let hex = s.get(skip..skip + digits)?;
    hex.iter()
        .all(u8::is_ascii_hexdigit)
        .then(|| (radix(hex, 16, digits).0, skip + digits))
}

fn low_surrogate(s: &[u8], len: usize) -> Option<u32> {
    let hex = s.get(..len)?;
    if !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(radix(hex, 16, len).0).filter(|lo| (0xDC00..0xE000).contains(lo))
}

fn combine(hi: u32, lo: u32) -> u32 {
    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
}

/// Parses up to `max` leading digits of `radix`: (value, digits used >= 1
/// when the first byte is a digit).
fn radix(s: &[u8], radix: u32, max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut n = 0;
    while let Some(d) = s
        .get(n)
        .and_then(|&b| (b as char).to_digit(radix))
        .filter(|_| n < max)
    {
        v = v.wrapping_mul(radix).wrapping_add(d);
        n += 1;
    }
    (v, n)
}

/// Appends a code point as UTF-8; invalid ones (which the server rejects)
/// become U+FFFD.
fn push_char(cp: u32, out: &mut Vec<u8>) {
    let c = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}
