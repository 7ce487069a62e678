//! The classifier: from one statement's tokens to an [`Effect`].
//!
//! It reads only as far as the grammar needs (the first few key words), then
//! scans the rest of an unrecognised statement for state-changing calls and
//! `SELECT ... INTO TEMP`. It runs on the same token stream as the statement
//! splitter, so [`classify_all`] reads the text once and allocates nothing.
//! Statement syntax: <https://www.postgresql.org/docs/15/sql-commands.html>.

use super::calls::{self, Calls};
use super::effect::{Discard, Effect, Target, Transaction};
use super::ident::Ident;
use super::lexer::{is_space, Syntax, Token, TokenKind};
use super::set;
use super::split::StmtLexer;

/// Classifies the first statement in `stmt` (normally one item of
/// [`statements`](super::statements)); empty text is [`Effect::Other`].
pub fn classify<S: AsRef<[u8]> + ?Sized>(stmt: &S) -> Effect<'_> {
    Syntax::STANDARD.classify(stmt.as_ref())
}

/// Classifies each statement of `sql`, in order, in one pass. Empty
/// statements are skipped, as they are by [`statements`](super::statements),
/// so the n-th effect belongs to the n-th CommandComplete.
pub fn classify_all<S: AsRef<[u8]> + ?Sized>(sql: &S) -> ClassifyAll<'_> {
    Syntax::STANDARD.classify_all(sql.as_ref())
}

/// Fast path: false means no statement in `sql` has anything for the ledger
/// ([`Effect::is_session_state`]). Allocates nothing.
pub fn changes_session_state<S: AsRef<[u8]> + ?Sized>(sql: &S) -> bool {
    Syntax::STANDARD.changes_session_state(sql.as_ref())
}

impl Syntax {
    /// [`classify`] under these settings.
    pub fn classify(self, stmt: &[u8]) -> Effect<'_> {
        self.classify_all(stmt).next().unwrap_or(Effect::Other)
    }

    /// [`classify_all`] under these settings.
    pub fn classify_all(self, sql: &[u8]) -> ClassifyAll<'_> {
        ClassifyAll {
            lexer: StmtLexer::new(sql, self),
        }
    }

    /// [`changes_session_state`] under these settings.
    pub fn changes_session_state(self, sql: &[u8]) -> bool {
        self.classify_all(sql).any(|e| e.is_session_state())
    }
}

/// Iterator returned by [`classify_all`].
#[derive(Clone, Debug)]
pub struct ClassifyAll<'a> {
    lexer: StmtLexer<'a>,
}

impl<'a> Iterator for ClassifyAll<'a> {
    type Item = Effect<'a>;

    fn next(&mut self) -> Option<Effect<'a>> {
        while self.lexer.next_statement() {
            let mut p = Parser::new(&mut self.lexer);
            if let Some(first) = p.next() {
                return Some(statement(&mut p, first));
            }
        }
        None
    }
}

/// A one-token lookahead over the current statement.
pub(super) struct Parser<'s, 'a> {
    lexer: &'s mut StmtLexer<'a>,
    peeked: Option<Token<'a>>,
    start: usize,
    end: usize,
}

impl<'s, 'a> Parser<'s, 'a> {
    fn new(lexer: &'s mut StmtLexer<'a>) -> Self {
        Parser {
            lexer,
            peeked: None,
            start: usize::MAX,
            end: 0,
        }
    }

    #[inline]
    pub(super) fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peeked.take().or_else(|| self.lexer.next_token())?;
        self.start = self.start.min(t.start);
        self.end = t.end();
        Some(t)
    }

    pub(super) fn peek(&mut self) -> Option<Token<'a>> {
        if self.peeked.is_none() {
            self.peeked = self.lexer.next_token();
        }
        self.peeked
    }

    /// Consumes the key word `kw` if it comes next.
    pub(super) fn eat(&mut self, kw: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_keyword(kw));
        if found {
            self.next();
        }
        found
    }

    /// Consumes the rest of the statement; the text from `from` to its end.
    pub(super) fn rest_from(&mut self, from: &Token<'a>) -> &'a [u8] {
        while self.next().is_some() {}
        &self.lexer.source()[from.start..self.end.max(from.end())]
    }

    /// The rest of the statement, if anything is left.
    pub(super) fn rest(&mut self) -> Option<&'a [u8]> {
        let first = self.next()?;
        Some(self.rest_from(&first))
    }

    /// The statement read so far.
    fn statement(&self) -> &'a [u8] {
        self.lexer.source().get(self.start..self.end).unwrap_or(b"")
    }

    pub(super) fn ident(&self, from: &Token<'a>, to: &Token<'a>) -> Ident<'a> {
        Ident::sql(
            &self.lexer.source()[from.start..to.end()],
            self.lexer.syntax(),
        )
    }

    /// One identifier token.
    pub(super) fn name(&mut self) -> Option<Ident<'a>> {
        let t = self.next().filter(Token::is_name)?;
        Some(self.ident(&t, &t))
    }

    /// One string constant.
    fn string(&mut self) -> Option<Ident<'a>> {
        let t = self
            .next()
            .filter(|t| matches!(t.kind, TokenKind::String(_)))?;
        Some(self.ident(&t, &t))
    }

    /// `name ('.' name)*` starting with `first`.
    pub(super) fn qualified(&mut self, first: Token<'a>) -> Option<Ident<'a>> {
        let mut last = first;
        if !first.is_name() {
            return None;
        }
        while self.peek().is_some_and(|t| t.kind == TokenKind::Dot) {
            self.next();
            last = self.next().filter(Token::is_name)?;
        }
        Some(self.ident(&first, &last))
    }

    /// `name | ALL`.
    fn target(&mut self) -> Option<Target<'a>> {
        if self.eat("all") {
            return Some(Target::All);
        }
        self.name().map(Target::Name)
    }
}

/// Dispatches on the first key word; unrecognised or malformed statements
/// fall through to [`scan`].
fn statement<'a>(p: &mut Parser<'_, 'a>, first: Token<'a>) -> Effect<'a> {
    let mut buf = [0u8; 10];
    let kw: &[u8] = if first.kind == TokenKind::Ident && first.text.len() <= buf.len() {
        let kw = &mut buf[..first.text.len()];
        kw.copy_from_slice(first.text);
        kw.make_ascii_lowercase();
        kw
    } else {
        b""
    };
    let effect = match kw {
        b"set" => set::set(p),
        b"reset" => set::reset(p),
        b"prepare" => prepare(p),
        b"execute" => p.name().map(|name| Effect::Execute { name }),
        b"deallocate" => deallocate(p),
        b"listen" => p.name().map(|channel| Effect::Listen { channel }),
        b"unlisten" => match p.peek() {
            Some(t) if t.kind == TokenKind::Operator && t.text == b"*" => {
                Some(Effect::Unlisten(Target::All))
            }
            _ => p.name().map(|c| Effect::Unlisten(Target::Name(c))),
        },
        b"notify" => p.name().map(|channel| Effect::Notify { channel }),
        b"discard" => discard(p),
        b"begin" | b"start" | b"commit" | b"end" | b"rollback" | b"abort" | b"savepoint"
        | b"release" => transaction(kw, p).map(Effect::Transaction),
        b"declare" => declare(p),
        b"close" => p.target().map(Effect::Close),
        b"create" => create(p),
        b"load" => p.string().map(|file| Effect::Load { file }),
        _ => None,
    };
    effect.unwrap_or_else(|| scan(p, &first))
}

/// `PREPARE name [(types)] AS statement`, or `PREPARE TRANSACTION 'gid'`.
fn prepare<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    let first = p.next().filter(Token::is_name)?;
    if first.is_keyword("transaction")
        && p.peek()
            .is_some_and(|t| matches!(t.kind, TokenKind::String(_)))
    {
        return p
            .string()
            .map(|gid| Effect::Transaction(Transaction::Prepare(gid)));
    }
    let name = p.ident(&first, &first);
    let mut params = None;
    if p.peek().is_some_and(|t| t.kind == TokenKind::LParen) {
        let open = p.next()?;
        let (mut depth, mut last) = (0u32, open);
        let close = loop {
            let t = p.next()?;
            match t.kind {
                TokenKind::LParen => depth += 1,
                TokenKind::RParen if depth == 0 => break t,
                TokenKind::RParen => depth -= 1,
                _ => {}
            }
            last = t;
        };
        // From the first type's start to the last one's end.
        let start = p.lexer.source()[open.end()..close.start]
            .iter()
            .position(|&b| !is_space(b))
            .map_or(close.start, |n| open.end() + n);
        params = p.lexer.source().get(start..last.end().max(start));
    }
    if !p.eat("as") {
        return None;
    }
    let body = p.rest()?;
    Some(Effect::Prepare { name, params, body })
}

/// `DEALLOCATE [PREPARE] name|ALL`; PREPARE may also be the statement's name.
fn deallocate<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    let t = p.next()?;
    if t.is_keyword("prepare") && p.peek().is_some() {
        return p.target().map(Effect::Deallocate);
    }
    if t.is_keyword("all") {
        return Some(Effect::Deallocate(Target::All));
    }
    t.is_name()
        .then(|| Effect::Deallocate(Target::Name(p.ident(&t, &t))))
}

fn discard<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    let t = p.next()?;
    let what = [
        ("all", Discard::All),
        ("plans", Discard::Plans),
        ("temp", Discard::Temp),
        ("temporary", Discard::Temp),
        ("sequences", Discard::Sequences),
    ];
    let (_, d) = what.into_iter().find(|(kw, _)| t.is_keyword(kw))?;
    Some(Effect::Discard(d))
}

/// BEGIN, START TRANSACTION, COMMIT/END, ROLLBACK/ABORT (with AND [NO]
/// CHAIN, TO SAVEPOINT, PREPARED), SAVEPOINT, RELEASE.
fn transaction<'a>(kw: &[u8], p: &mut Parser<'_, 'a>) -> Option<Transaction<'a>> {
    let chain = |p: &mut Parser<'_, 'a>| p.eat("and") && !p.eat("no") && p.eat("chain");
    Some(match kw {
        b"begin" => Transaction::Begin,
        b"start" => p.eat("transaction").then_some(Transaction::Begin)?,
        b"commit" if p.eat("prepared") => Transaction::CommitPrepared(p.string()?),
        b"rollback" if p.eat("prepared") => Transaction::RollbackPrepared(p.string()?),
        b"commit" | b"end" => {
            let _ = p.eat("work") || p.eat("transaction");
            Transaction::Commit { chain: chain(p) }
        }
        b"rollback" | b"abort" => {
            let _ = p.eat("work") || p.eat("transaction");
            if p.eat("to") {
                p.eat("savepoint");
                Transaction::RollbackTo(p.name()?)
            } else {
                Transaction::Rollback { chain: chain(p) }
            }
        }
        b"savepoint" => Transaction::Savepoint(p.name()?),
        _ => {
            p.eat("savepoint");
            Transaction::Release(p.name()?)
        }
    })
}

/// `DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR
/// [{WITH|WITHOUT} HOLD] FOR query`.
fn declare<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    let name = p.name()?;
    while !p.next()?.is_keyword("cursor") {}
    let with_hold = p.eat("with") && p.eat("hold");
    Some(Effect::DeclareCursor { name, with_hold })
}

/// `CREATE [OR REPLACE] [GLOBAL|LOCAL] {TEMP|TEMPORARY} ...` or a name
/// qualified with `pg_temp` before the first `(` or AS. Routine bodies are
/// not run at creation, so a CREATE FUNCTION is not scanned for calls.
fn create<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    if p.eat("or") && !p.eat("replace") {
        return None;
    }
    let mut temp = false;
    let mut t = p.next()?;
    while ["temp", "temporary", "global", "local", "unlogged"]
        .iter()
        .any(|kw| t.is_keyword(kw))
    {
        temp |= t.is_keyword("temp") || t.is_keyword("temporary");
        t = p.next()?;
    }
    let object = t.text;
    if temp {
        return Some(Effect::CreateTemp { object });
    }
    let routine = t.is_keyword("function") || t.is_keyword("procedure");
    let mut schema = false;
    while let Some(t) = p.peek() {
        if t.kind == TokenKind::LParen || t.is_keyword("as") {
            break;
        }
        p.next();
        if schema && t.kind == TokenKind::Dot {
            return Some(Effect::CreateTemp { object });
        }
        schema = calls::is_temp_schema(&t);
    }
    routine.then_some(Effect::Other)
}

/// Scans the rest of a statement for state-changing calls and for
/// `SELECT ... INTO [GLOBAL|LOCAL] TEMP t` / `INTO pg_temp.t`.
fn scan<'a>(p: &mut Parser<'_, 'a>, first: &Token<'a>) -> Effect<'a> {
    enum After {
        Other,
        Into,
        TempSchema,
    }
    let mut flags = 0u8;
    let mut pending = 0u8;
    let mut after = After::Other;
    let mut temp = false;
    // INSERT INTO and MERGE INTO name a target table, not a new one.
    let is_insert = |t: &Token<'_>| t.is_keyword("insert") || t.is_keyword("merge");
    let mut insert = is_insert(first);
    while let Some(t) = p.next() {
        let prev = std::mem::replace(&mut after, After::Other);
        let after_insert = std::mem::replace(&mut insert, false);
        let call = std::mem::replace(&mut pending, 0);
        match t.kind {
            TokenKind::Ident | TokenKind::QuotedIdent => {}
            TokenKind::LParen => {
                flags |= call;
                continue;
            }
            TokenKind::Dot => {
                temp |= matches!(prev, After::TempSchema);
                continue;
            }
            _ => continue,
        }
        pending = calls::call_flag(&t);
        match prev {
            After::Into if t.is_keyword("temp") || t.is_keyword("temporary") => temp = true,
            After::Into if t.is_keyword("global") || t.is_keyword("local") => after = After::Into,
            After::Into if calls::is_temp_schema(&t) => after = After::TempSchema,
            After::Other if t.is_keyword("into") && !after_insert => after = After::Into,
            _ => insert = is_insert(&t),
        }
    }
    if temp {
        Effect::CreateTemp { object: b"TABLE" }
    } else if flags != 0 {
        Effect::Calls(Calls::new(p.statement(), p.lexer.syntax(), flags))
    } else {
        Effect::Other
    }
}
