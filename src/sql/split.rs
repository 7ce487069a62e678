//! Splitting a simple-query string into statements.
//!
//! The server parses the whole string and runs each statement in turn
//! (<https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-MULTI-STATEMENT>),
//! so the proxy must see the same boundaries. A `;` ends a statement only at
//! the top level, as psql decides it (`src/fe_utils/psqlscan.l`): not inside
//! parentheses (`CREATE RULE ... DO (INSERT ...; INSERT ...)`) and not inside
//! the `BEGIN ATOMIC ... END` body of a `CREATE FUNCTION`/`PROCEDURE`
//! (manual, CREATE FUNCTION, "sql_body"). Semicolons in strings, quoted
//! identifiers, dollar quotes and comments never reach this layer.

use std::ops::Range;

use super::lexer::{Lexer, Syntax, Token, TokenKind};

/// Splits `sql` into statements: each item is the text from a statement's
/// first token to its last, without surrounding whitespace, comments or the
/// `;`. Empty statements (`;;`, a comment alone) are skipped, as the server
/// skips them.
pub fn statements<S: AsRef<[u8]> + ?Sized>(sql: &S) -> Statements<'_> {
    Syntax::STANDARD.statements(sql.as_ref())
}

impl Syntax {
    /// [`statements`] under these settings.
    pub fn statements(self, sql: &[u8]) -> Statements<'_> {
        Statements {
            cursor: StmtLexer::new(sql, self),
        }
    }
}

/// The byte range of `inner` within `outer`, when `inner` is a subslice of it,
/// such as a statement from [`statements`] or a slice inside an
/// [`Effect`](super::Effect).
pub fn offset_in(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// Iterator returned by [`statements`].
#[derive(Clone, Debug)]
pub struct Statements<'a> {
    cursor: StmtLexer<'a>,
}

impl<'a> Iterator for Statements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.cursor.next_statement() {
            let Some(first) = self.cursor.next_token() else {
                continue;
            };
            let mut end = first.end();
            while let Some(t) = self.cursor.next_token() {
                end = t.end();
            }
            return Some(&self.cursor.source()[first.start..end]);
        }
        None
    }
}

/// Tokens of one statement at a time: [`StmtLexer::next_token`] returns
/// `None` at the statement's top-level `;` (consumed) or at the end of input;
/// [`StmtLexer::next_statement`] then moves on to the next statement.
#[derive(Clone, Debug)]
pub(crate) struct StmtLexer<'a> {
    lexer: Lexer<'a>,
    /// Input exhausted.
    eof: bool,
    /// Current statement ended (at `;` or end of input).
    ended: bool,
    parens: u32,
    /// Depth of `BEGIN ... END` inside a CREATE FUNCTION/PROCEDURE.
    begins: u32,
    /// psqlscan.l's heuristic: the first letters of the first four
    /// identifiers, recorded only for CREATE, OR, REPLACE, FUNCTION, PROCEDURE.
    head: [u8; 4],
    /// Identifiers seen, counted up to `head.len()`.
    idents: usize,
    /// The statement is a CREATE FUNCTION/PROCEDURE, per `head`.
    routine: bool,
}

impl<'a> StmtLexer<'a> {
    pub(crate) fn new(src: &'a [u8], syntax: Syntax) -> Self {
        StmtLexer {
            lexer: Lexer::with_syntax(src, syntax),
            eof: false,
            ended: true,
            parens: 0,
            begins: 0,
            head: [0; 4],
            idents: 0,
            routine: false,
        }
    }

    pub(crate) fn source(&self) -> &'a [u8] {
        self.lexer.source()
    }

    pub(crate) fn syntax(&self) -> Syntax {
        self.lexer.syntax()
    }

    /// Finishes the current statement (skipping its remaining tokens) and
    /// starts the next; false when the input is exhausted.
    pub(crate) fn next_statement(&mut self) -> bool {
        while self.next_token().is_some() {}
        if self.eof {
            return false;
        }
        self.ended = false;
        self.parens = 0;
        self.begins = 0;
        self.head = [0; 4];
        self.idents = 0;
        self.routine = false;
        true
    }

    /// The next token of the current statement.
    #[inline]
    pub(crate) fn next_token(&mut self) -> Option<Token<'a>> {
        if self.ended {
            return None;
        }
        let Some(tok) = self.lexer.next() else {
            self.eof = true;
            self.ended = true;
            return None;
        };
        match tok.kind {
            TokenKind::Semicolon if self.parens == 0 && self.begins == 0 => {
                self.ended = true;
                return None;
            }
            TokenKind::LParen => self.parens += 1,
            TokenKind::RParen => self.parens = self.parens.saturating_sub(1),
            TokenKind::Ident => self.track_begin_atomic(&tok),
            _ => {}
        }
        Some(tok)
    }

    /// psqlscan.l's rule: in a statement that starts CREATE [OR REPLACE]
    /// FUNCTION|PROCEDURE, outside parentheses, BEGIN opens a block, CASE
    /// (inside one) opens another, and END closes one.
    fn track_begin_atomic(&mut self, tok: &Token<'a>) {
        const HEAD_WORDS: [&str; 5] = ["create", "function", "procedure", "or", "replace"];
        if self.idents < self.head.len() {
            if let Some(w) = HEAD_WORDS.iter().find(|w| tok.is_keyword(w)) {
                self.head[self.idents] = w.as_bytes()[0];
            }
            self.idents += 1;
            let h = self.head;
            self.routine = h[0] == b'c'
                && (matches!(h[1], b'f' | b'p')
                    || (h[1] == b'o' && h[2] == b'r' && matches!(h[3], b'f' | b'p')));
        }
        if !self.routine || self.parens != 0 {
            return;
        }
        if tok.is_keyword("begin") {
            self.begins += 1;
        } else if tok.is_keyword("case") {
            if self.begins >= 1 {
                self.begins += 1;
            }
        } else if tok.is_keyword("end") {
            self.begins = self.begins.saturating_sub(1);
        }
    }
}
