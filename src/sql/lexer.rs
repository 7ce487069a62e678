//! Tokenizer for PostgreSQL SQL text.
//!
//! Follows "Lexical Structure" in the PostgreSQL manual
//! (<https://www.postgresql.org/docs/15/sql-syntax-lexical.html>) and the
//! server's own scanner, `src/backend/parser/scan.l`. It works on bytes, never
//! allocates, and never fails: malformed input (unterminated strings,
//! comments, dollar quotes) still yields tokens, flagged `terminated: false`,
//! because the proxy must classify whatever a client sends and leave the
//! verdict to the server.
//!
//! Whitespace and comments are not tokens; they are skipped between tokens.

/// Lexical settings that change where a token ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Syntax {
    /// The session's `standard_conforming_strings`. When off, backslash is an
    /// escape inside plain `'...'` strings too, so `'\''` is one string
    /// (<https://www.postgresql.org/docs/15/runtime-config-compatible.html>).
    /// On by default since 9.1, and reported by the server in ParameterStatus,
    /// so the proxy always knows it.
    pub standard_conforming_strings: bool,
}

impl Syntax {
    /// The default since PostgreSQL 9.1: `standard_conforming_strings = on`.
    pub const STANDARD: Syntax = Syntax {
        standard_conforming_strings: true,
    };
}

impl Default for Syntax {
    fn default() -> Self {
        Self::STANDARD
    }
}

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Unquoted identifier or key word (`select`, `Foo`, `a$b`).
    Ident,
    /// `"Quoted"` or `U&"quoted"` identifier.
    QuotedIdent,
    /// String constant (with any continuation lines folded in).
    String(StrKind),
    /// `$tag$ ... $tag$` or `$$ ... $$`.
    DollarString,
    /// Numeric constant.
    Number,
    /// Positional parameter `$1`.
    Param,
    /// Operator such as `=`, `<>`, `||`, `*`.
    Operator,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `,`
    Comma,
    /// `;`
    Semicolon,
    /// `.`
    Dot,
    /// `[`, `]`, `:` or `::`.
    Punct,
    /// Any other byte, such as a lone `$` or `\`.
    Other,
}

/// The flavour of a string constant; it decides how its body is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StrKind {
    /// `'...'` or `N'...'` with standard_conforming_strings on.
    Standard,
    /// `E'...'`, or `'...'` with standard_conforming_strings off.
    Escape,
    /// `U&'...'`.
    Unicode,
    /// `B'...'` or `X'...'`.
    Bit,
}

/// One token: its kind and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// What it is.
    pub kind: TokenKind,
    /// Byte offset of its first byte in the lexed text.
    pub start: usize,
    /// Its bytes, quotes and prefixes included.
    pub text: &'a [u8],
    /// False for a string, quoted identifier or dollar quote that runs to the
    /// end of the input without its closing quote.
    pub terminated: bool,
}

impl<'a> Token<'a> {
    /// Byte offset just past the token.
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    /// Whether this is the unquoted key word `kw`, which must be lower case
    /// (key words are case-insensitive; quoted identifiers never are key words).
    pub fn is_keyword(&self, kw: &str) -> bool {
        self.kind == TokenKind::Ident && self.text.eq_ignore_ascii_case(kw.as_bytes())
    }

    /// Whether the token can be a name: an identifier or a quoted identifier.
    pub fn is_name(&self) -> bool {
        matches!(self.kind, TokenKind::Ident | TokenKind::QuotedIdent)
    }
}

const SPACE: u8 = 1;
const ID_START: u8 = 2;
const ID_CONT: u8 = 4;
const OP: u8 = 8;
const DIGIT: u8 = 16;

/// scan.l `op_chars`.
const OP_CHARS: &[u8] = b"~!@#^&|`?+-*/%<>=";

/// Byte classes from scan.l: `space`, `ident_start` (letters, `_`, and every
/// byte >= 0x80 so any multibyte character is a letter), `ident_cont` (adds
/// digits and `$`), `op_chars`.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0;
        // \v (0x0b) is whitespace from PG 16 on; treating it so on 15 is harmless.
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) {
            c |= SPACE;
        }
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            c |= ID_START | ID_CONT;
        }
        if b.is_ascii_digit() {
            c |= ID_CONT | DIGIT;
        }
        if b == b'$' {
            c |= ID_CONT;
        }
        let mut k = 0;
        while k < OP_CHARS.len() {
            if OP_CHARS[k] == b {
                c |= OP;
            }
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn class(b: u8) -> u8 {
    CLASS[b as usize]
}

pub(crate) fn is_space(b: u8) -> bool {
    class(b) & SPACE != 0
}

/// Dollar-quote tags follow identifier rules but may not contain `$`.
fn is_tag_cont(b: u8) -> bool {
    class(b) & (ID_START | DIGIT) != 0
}

/// A tokenizer over SQL bytes; an iterator of [`Token`]s.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    syntax: Syntax,
}

impl<'a> Lexer<'a> {
    /// Tokenizes `src` with standard_conforming_strings on.
    pub fn new<S: AsRef<[u8]> + ?Sized>(src: &'a S) -> Self {
        Self::with_syntax(src.as_ref(), Syntax::STANDARD)
    }

    /// Tokenizes `src` under the given settings.
    pub fn with_syntax(src: &'a [u8], syntax: Syntax) -> Self {
        Lexer {
            src,
            pos: 0,
            syntax,
        }
    }

    /// The settings this lexer uses.
    pub fn syntax(&self) -> Syntax {
        self.syntax
    }

    /// The text being tokenized.
    pub fn source(&self) -> &'a [u8] {
        self.src
    }

    /// Byte offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Skips whitespace, `--` comments and nested `/* */` comments.
    fn skip_trivia(&mut self) {
        let s = self.src;
        let mut i = self.pos;
        while i < s.len() {
            let b = s[i];
            if is_space(b) {
                i += 1;
            } else if b == b'-' && s.get(i + 1) == Some(&b'-') {
                i = line_comment_end(s, i);
            } else if b == b'/' && s.get(i + 1) == Some(&b'*') {
                i = block_comment_end(s, i).unwrap_or(s.len());
            } else {
                break;
            }
        }
        self.pos = i;
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize, terminated: bool) -> Token<'a> {
        let end = end.min(self.src.len());
        self.pos = end;
        Token {
            kind,
            start,
            text: &self.src[start..end],
            terminated,
        }
    }

    fn string(&mut self, start: usize, body: usize, kind: StrKind) -> Token<'a> {
        let (end, terminated) = scan_string(self.src, body, kind == StrKind::Escape);
        self.token(TokenKind::String(kind), start, end, terminated)
    }

    /// The kind of a plain `'...'` (or `N'...'`) string under this session.
    fn plain(&self) -> StrKind {
        if self.syntax.standard_conforming_strings {
            StrKind::Standard
        } else {
            StrKind::Escape
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    #[inline]
    fn next(&mut self) -> Option<Token<'a>> {
        self.skip_trivia();
        let s = self.src;
        let i = self.pos;
        let b = *s.get(i)?;
        let b1 = s.get(i + 1).copied();
        let tok = match b {
            b'\'' => self.string(i, i + 1, self.plain()),
            b'"' => {
                let (end, ok) = scan_quoted(s, i + 1, b'"', false);
                self.token(TokenKind::QuotedIdent, i, end, ok)
            }
            b'e' | b'E' if b1 == Some(b'\'') => self.string(i, i + 2, StrKind::Escape),
            // N'...' is lexed as the key word NATIONAL CHARACTER and a plain string.
            b'n' | b'N' if b1 == Some(b'\'') => self.string(i, i + 2, self.plain()),
            b'b' | b'B' | b'x' | b'X' if b1 == Some(b'\'') => self.string(i, i + 2, StrKind::Bit),
            b'u' | b'U' if b1 == Some(b'&') && s.get(i + 2) == Some(&b'\'') => {
                self.string(i, i + 3, StrKind::Unicode)
            }
            b'u' | b'U' if b1 == Some(b'&') && s.get(i + 2) == Some(&b'"') => {
                let (end, ok) = scan_quoted(s, i + 3, b'"', false);
                self.token(TokenKind::QuotedIdent, i, end, ok)
            }
            b'$' => self.dollar(i),
            b'(' => self.token(TokenKind::LParen, i, i + 1, true),
            b')' => self.token(TokenKind::RParen, i, i + 1, true),
            b',' => self.token(TokenKind::Comma, i, i + 1, true),
            b';' => self.token(TokenKind::Semicolon, i, i + 1, true),
            b'.' if b1.is_some_and(|c| c.is_ascii_digit()) => {
                self.token(TokenKind::Number, i, number_end(s, i), true)
            }
            b'.' => self.token(TokenKind::Dot, i, i + 1, true),
            b':' if b1 == Some(b':') => self.token(TokenKind::Punct, i, i + 2, true),
            b':' | b'[' | b']' => self.token(TokenKind::Punct, i, i + 1, true),
            _ if class(b) & ID_START != 0 => {
                let end = s[i..]
                    .iter()
                    .position(|&c| class(c) & ID_CONT == 0)
                    .map_or(s.len(), |n| i + n);
                self.token(TokenKind::Ident, i, end, true)
            }
            _ if class(b) & DIGIT != 0 => self.token(TokenKind::Number, i, number_end(s, i), true),
            _ if class(b) & OP != 0 => self.token(TokenKind::Operator, i, operator_end(s, i), true),
            _ => self.token(TokenKind::Other, i, i + 1, true),
        };
        Some(tok)
    }
}

impl<'a> Lexer<'a> {
    /// `$1` is a parameter; `$tag$` opens a dollar quote that ends at the next
    /// identical `$tag$`; anything else is a lone `$` (scan.l `dolqfailed`).
    fn dollar(&mut self, i: usize) -> Token<'a> {
        let s = self.src;
        let mut j = i + 1;
        if s.get(j).is_some_and(|c| c.is_ascii_digit()) {
            while s.get(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            return self.token(TokenKind::Param, i, j, true);
        }
        if s.get(j).is_some_and(|&c| class(c) & ID_START != 0) {
            while s.get(j).is_some_and(|&c| is_tag_cont(c)) {
                j += 1;
            }
        }
        if s.get(j) != Some(&b'$') {
            return self.token(TokenKind::Other, i, i + 1, true);
        }
        let delim = &s[i..=j];
        // A plain search is exact: a tag has no `$`, so no closing delimiter can
        // start inside a longer `$other$` that scan.l would skip over.
        match find(&s[j + 1..], delim) {
            Some(at) => self.token(TokenKind::DollarString, i, j + 1 + at + delim.len(), true),
            None => self.token(TokenKind::DollarString, i, s.len(), false),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == b'$') {
        let at = from + p;
        if hay[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// End of the `--` comment starting at `i`: the newline (`\n` or `\r`) that ends it.
pub(crate) fn line_comment_end(s: &[u8], i: usize) -> usize {
    s[i..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(s.len(), |n| i + n)
}

/// End (exclusive) of the block comment that starts with `/*` at `start`, or
/// `None` if it is never closed. Block comments nest, unlike the SQL standard's
/// (manual 4.1.5): `/* a /* b */ c */` is one comment.
pub(crate) fn block_comment_end(s: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < s.len() {
        match (s[i], s[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Scans a body quoted by `quote`, starting just after the opening quote.
/// A doubled quote stands for one; with `backslash`, `\` escapes the next
/// byte (E'' strings, manual 4.1.2.2). Returns the end and whether it closed.
pub(crate) fn scan_quoted(s: &[u8], mut i: usize, quote: u8, backslash: bool) -> (usize, bool) {
    while i < s.len() {
        let b = s[i];
        if b == quote {
            if s.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += if backslash && b == b'\\' { 2 } else { 1 };
    }
    (s.len(), false)
}

/// Scans a string constant and its continuations: two constants separated by
/// whitespace with at least one newline are one constant (manual 4.1.2.1).
pub(crate) fn scan_string(s: &[u8], body: usize, backslash: bool) -> (usize, bool) {
    let (mut end, mut ok) = scan_quoted(s, body, b'\'', backslash);
    while ok {
        match continuation(s, end) {
            Some(q) => (end, ok) = scan_quoted(s, q + 1, b'\'', backslash),
            None => break,
        }
    }
    (end, ok)
}

/// scan.l `quotecontinue`: horizontal space, a newline, then any whitespace
/// or `--` comment lines, then a quote. Returns the quote's offset.
pub(crate) fn continuation(s: &[u8], mut i: usize) -> Option<usize> {
    while matches!(s.get(i), Some(b' ' | b'\t' | 0x0c)) {
        i += 1;
    }
    if !matches!(s.get(i), Some(b'\n' | b'\r')) {
        return None;
    }
    loop {
        match *s.get(i)? {
            b'\'' => return Some(i),
            b if is_space(b) => i += 1,
            b'-' if s.get(i + 1) == Some(&b'-') => {
                i = line_comment_end(s, i);
                // A comment must end with a newline to be part of the gap.
                s.get(i)?;
            }
            _ => return None,
        }
    }
}

/// Numbers: digits with `_` separators, a fraction, an exponent, and the
/// PG 16 `0x`/`0o`/`0b` forms. Anything glued on after is lexed separately,
/// as releases before 15 do (15 and later reject such "trailing junk").
fn number_end(s: &[u8], i: usize) -> usize {
    let digits = |mut j: usize| {
        while s.get(j).is_some_and(|&c| c.is_ascii_digit() || c == b'_') {
            j += 1;
        }
        j
    };
    if s[i] == b'0' && matches!(s.get(i + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')) {
        let mut j = i + 2;
        while s
            .get(j)
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_')
        {
            j += 1;
        }
        return j;
    }
    let mut j = digits(i);
    if s.get(j) == Some(&b'.') && s.get(j + 1) != Some(&b'.') {
        j = digits(j + 1);
    }
    if matches!(s.get(j), Some(b'e' | b'E')) {
        let k = j + 1 + usize::from(matches!(s.get(j + 1), Some(b'+' | b'-')));
        if s.get(k).is_some_and(|c| c.is_ascii_digit()) {
            j = digits(k);
        }
    }
    j
}

/// Operators: a run of op chars that stops before `--` or `/*` (which start
/// comments), and sheds a trailing `+`/`-` unless it holds one of
/// `~ ! @ # % ^ & | \` ?` (manual 4.1.3), so `x=-1` is `x`, `=`, `-`, `1`.
fn operator_end(s: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < s.len() && class(s[j]) & OP != 0 {
        let next = s.get(j + 1).copied();
        if (s[j] == b'-' && next == Some(b'-')) || (s[j] == b'/' && next == Some(b'*')) {
            break;
        }
        j += 1;
    }
    let op = &s[i..j];
    if op.len() > 1 && !op.iter().any(|c| b"~!@#%^&|`?".contains(c)) {
        while j > i + 1 && matches!(s[j - 1], b'+' | b'-') {
            j -= 1;
        }
    }
    j.max(i + 1)
}
