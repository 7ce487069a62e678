//! Function calls that change session state from inside any statement.
//!
//! `SELECT set_config('myapp.tenant', '42', false)` changes a setting that no
//! ParameterStatus reports and `pg_settings` hides (a custom `x.y` setting
//! shows only through `current_setting`);
//! session advisory locks and dblink connections pin a session. A call is an
//! identifier (optionally schema-qualified or quoted) followed by `(`.
//! Functions (<https://www.postgresql.org/docs/15/functions-admin.html>):
//! `set_config`, `pg_[try_]advisory[_xact]_lock[_shared]`,
//! `pg_advisory_unlock[_shared|_all]`, `dblink_connect[_u]`, `dblink_disconnect`.

use super::ident::Ident;
use super::lexer::{Lexer, StrKind, Syntax, Token, TokenKind};

pub(crate) const SET_CONFIG: u8 = 1;
pub(crate) const ADVISORY_LOCK: u8 = 2;
pub(crate) const ADVISORY_UNLOCK: u8 = 4;
pub(crate) const ADVISORY_UNLOCK_ALL: u8 = 8;
pub(crate) const ADVISORY_XACT_LOCK: u8 = 16;
pub(crate) const DBLINK_CONNECT: u8 = 32;
pub(crate) const DBLINK_DISCONNECT: u8 = 64;

/// The state-changing functions one statement calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calls<'a> {
    stmt: &'a [u8],
    syntax: Syntax,
    flags: u8,
}

impl<'a> Calls<'a> {
    pub(crate) fn new(stmt: &'a [u8], syntax: Syntax, flags: u8) -> Self {
        Calls {
            stmt,
            syntax,
            flags,
        }
    }

    /// The statement text.
    pub fn statement(&self) -> &'a [u8] {
        self.stmt
    }

    /// Calls `set_config`; see [`set_configs`](Self::set_configs) for each call.
    pub fn set_config(&self) -> bool {
        self.flags & SET_CONFIG != 0
    }

    /// Takes a session-level advisory lock: `pg_advisory_lock[_shared]`,
    /// `pg_try_advisory_lock[_shared]`. Pins.
    pub fn advisory_lock(&self) -> bool {
        self.flags & ADVISORY_LOCK != 0
    }

    /// Releases one session-level advisory lock: `pg_advisory_unlock[_shared]`.
    pub fn advisory_unlock(&self) -> bool {
        self.flags & ADVISORY_UNLOCK != 0
    }

    /// Releases every session-level advisory lock: `pg_advisory_unlock_all`.
    pub fn advisory_unlock_all(&self) -> bool {
        self.flags & ADVISORY_UNLOCK_ALL != 0
    }

    /// Takes a transaction-level advisory lock (`_xact_` variants): released
    /// at transaction end, so it does not pin.
    pub fn xact_advisory_lock(&self) -> bool {
        self.flags & ADVISORY_XACT_LOCK != 0
    }

    /// Opens a dblink connection: `dblink_connect[_u]`. Pins.
    pub fn dblink_connect(&self) -> bool {
        self.flags & DBLINK_CONNECT != 0
    }

    /// Closes a dblink connection: `dblink_disconnect`.
    pub fn dblink_disconnect(&self) -> bool {
        self.flags & DBLINK_DISCONNECT != 0
    }

    /// Whether any call leaves session state behind.
    pub fn is_session_state(&self) -> bool {
        self.flags & !ADVISORY_XACT_LOCK != 0
    }

    /// Whether any call pins the session.
    pub fn pins(&self) -> bool {
        self.flags & (ADVISORY_LOCK | DBLINK_CONNECT) != 0
    }

    /// Each `set_config(...)` call in the statement, in order (nested ones
    /// included). Re-reads the statement; allocates nothing.
    pub fn set_configs(&self) -> SetConfigCalls<'a> {
        SetConfigCalls {
            lexer: Lexer::with_syntax(self.stmt, self.syntax),
            after_name: false,
        }
    }
}

/// One `set_config(name, value, is_local)` call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetConfigCall<'a> {
    /// The setting, when the first argument is a string constant.
    pub name: Option<Ident<'a>>,
    /// The third argument, when it is a boolean constant (`false`,
    /// `'off'`, ...): `Some(true)` means the change is transaction-local.
    pub is_local: Option<bool>,
    /// The second argument, when it is a string constant (decoded like a
    /// name: quotes removed, `''` undoubled).
    pub value: Option<Ident<'a>>,
}

/// Iterator returned by [`Calls::set_configs`].
#[derive(Clone, Debug)]
pub struct SetConfigCalls<'a> {
    lexer: Lexer<'a>,
    after_name: bool,
}

impl<'a> Iterator for SetConfigCalls<'a> {
    type Item = SetConfigCall<'a>;

    fn next(&mut self) -> Option<SetConfigCall<'a>> {
        loop {
            let t = self.lexer.next()?;
            if self.after_name && t.kind == TokenKind::LParen {
                self.after_name = false;
                return Some(parse_args(self.lexer.clone()));
            }
            self.after_name = call_flag(&t) == SET_CONFIG;
        }
    }
}

/// Up to three leading tokens of one argument, and how many it had.
#[derive(Default)]
struct Arg<'a> {
    toks: [Option<Token<'a>>; 3],
    count: usize,
}

impl<'a> Arg<'a> {
    /// A lone constant, optionally cast (`'x'::text`).
    fn constant(&self) -> Option<Token<'a>> {
        let [first, second, _] = self.toks;
        let cast = second.is_some_and(|t| t.kind == TokenKind::Punct && t.text == b"::");
        first.filter(|_| self.count == 1 || (self.count == 3 && cast))
    }
}

/// Reads the arguments after `set_config(`.
fn parse_args(mut lexer: Lexer<'_>) -> SetConfigCall<'_> {
    let mut args: [Arg; 3] = Default::default();
    let mut n = 0;
    let mut depth = 0u32;
    for t in lexer.by_ref() {
        match t.kind {
            TokenKind::LParen => depth += 1,
            TokenKind::RParen if depth == 0 => break,
            TokenKind::RParen => depth -= 1,
            TokenKind::Comma if depth == 0 => {
                n += 1;
                continue;
            }
            TokenKind::Semicolon if depth == 0 => break,
            _ => {}
        }
        if let Some(arg) = args.get_mut(n) {
            if let Some(slot) = arg.toks.get_mut(arg.count) {
                *slot = Some(t);
            }
            arg.count += 1;
        }
    }
    let syntax = lexer.syntax();
    let name = args[0]
        .constant()
        .filter(|t| matches!(t.kind, TokenKind::String(_)))
        .map(|t| Ident::sql(t.text, syntax));
    let is_local = args[2].constant().and_then(|t| match t.kind {
        TokenKind::Ident => parse_bool(t.text),
        TokenKind::String(StrKind::Standard) if t.text.len() >= 2 => {
            parse_bool(&t.text[1..t.text.len() - 1])
        }
        _ => None,
    });
    let value = args[1]
        .constant()
        .filter(|t| matches!(t.kind, TokenKind::String(_)))
        .map(|t| Ident::sql(t.text, syntax));
    SetConfigCall {
        name,
        is_local,
        value,
    }
}

/// The server's `parse_bool` (utils/adt/bool.c): trimmed, case-insensitive,
/// any prefix of true/false/yes/no, exactly `on`/`off`, `1`/`0`.
fn parse_bool(s: &[u8]) -> Option<bool> {
    let s = s.trim_ascii();
    let prefix_of = |w: &str| {
        !s.is_empty() && w.len() >= s.len() && w.as_bytes()[..s.len()].eq_ignore_ascii_case(s)
    };
    if prefix_of("true") || prefix_of("yes") || s.eq_ignore_ascii_case(b"on") || s == b"1" {
        Some(true)
    } else if prefix_of("false") || prefix_of("no") || s.eq_ignore_ascii_case(b"off") || s == b"0" {
        Some(false)
    } else {
        None
    }
}

/// Which function a name token calls, if it is one of ours. Unquoted names
/// match case-insensitively, quoted ones exactly.
#[inline]
pub(crate) fn call_flag(t: &Token<'_>) -> u8 {
    let name = match t.kind {
        TokenKind::Ident => t.text,
        TokenKind::QuotedIdent if t.terminated && t.text[0] == b'"' => &t.text[1..t.text.len() - 1],
        _ => return 0,
    };
    // Cheap filter first: every name is 10..=32 bytes and starts with s, p or d.
    if !(10..=32).contains(&name.len()) || !matches!(name[0] | 0x20, b's' | b'p' | b'd') {
        return 0;
    }
    let mut buf = [0u8; 32];
    let buf = &mut buf[..name.len()];
    buf.copy_from_slice(name);
    if t.kind == TokenKind::Ident {
        buf.make_ascii_lowercase();
    }
    match &buf[..] {
        b"set_config" => SET_CONFIG,
        b"pg_advisory_lock"
        | b"pg_advisory_lock_shared"
        | b"pg_try_advisory_lock"
        | b"pg_try_advisory_lock_shared" => ADVISORY_LOCK,
        b"pg_advisory_unlock" | b"pg_advisory_unlock_shared" => ADVISORY_UNLOCK,
        b"pg_advisory_unlock_all" => ADVISORY_UNLOCK_ALL,
        b"pg_advisory_xact_lock"
        | b"pg_advisory_xact_lock_shared"
        | b"pg_try_advisory_xact_lock"
        | b"pg_try_advisory_xact_lock_shared" => ADVISORY_XACT_LOCK,
        b"dblink_connect" | b"dblink_connect_u" => DBLINK_CONNECT,
        b"dblink_disconnect" => DBLINK_DISCONNECT,
        _ => 0,
    }
}

/// `pg_temp` (the session's temporary schema) or an explicit `pg_temp_N`.
pub(crate) fn is_temp_schema(t: &Token<'_>) -> bool {
    let name = match t.kind {
        TokenKind::Ident => t.text,
        TokenKind::QuotedIdent if t.terminated && t.text[0] == b'"' => &t.text[1..t.text.len() - 1],
        _ => return false,
    };
    if name.len() < 7 || !name[..7].eq_ignore_ascii_case(b"pg_temp") {
        return false;
    }
    let exact = t.kind == TokenKind::Ident || &name[..7] == b"pg_temp";
    let suffix = &name[7..];
    exact
        && (suffix.is_empty()
            || (suffix.len() > 1
                && suffix[0] == b'_'
                && suffix[1..].iter().all(u8::is_ascii_digit)))
}
