//! The pgbaton command comment: `/* pgbaton: migrate to=pg2 */`.
//!
//! A block comment at the very start of a simple query (or of the first Parse
//! of an extended-protocol request), leading whitespace allowed. Block
//! comments because psql strips `--` comments before sending (DESIGN,
//! "Migrating by SQL comment"). Words are `key=value` or bare flags separated
//! by whitespace; the `pgbaton:` prefix, the verb, keys and flags are
//! case-insensitive, values are taken as written. Anything unknown is a
//! [`CommandError`] naming the word; the proxy answers it with SQLSTATE 42601
//! (syntax_error).

use std::time::Duration;

use super::lexer::{block_comment_end, is_space, Lexer, TokenKind};

const PREFIX: &[u8] = b"pgbaton:";

/// Errors quote at most this many bytes of a word (the text is the client's).
const MAX_WORD: usize = 64;

/// A command given in a comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `migrate to=B [from=A] [wait=D] [dry_run]`.
    Migrate {
        /// The backend to move to: a configured backend name, never a host.
        to: String,
        /// With `from=A`: every session on backend A, fleet-wide (admin only).
        from: Option<String>,
        /// `dry_run`: only say whether the move would succeed, and why not.
        dry_run: bool,
        /// `wait=D`: how long to wait for a safe point (`500ms`, `10s`, `2m`,
        /// `1h`, or bare seconds).
        wait: Option<Duration>,
    },
}

/// A parsed command comment and what follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommentCommand {
    /// The command.
    pub command: Command,
    /// Byte offset of the text after the comment's closing `*/`.
    pub rest: usize,
    /// Whether a statement follows. False when the rest is empty or only
    /// whitespace, `;` and comments: "move, answer only". True: "move, then
    /// run the rest on the new server".
    pub has_statement: bool,
}

/// Why a command comment was refused. Each message names the offending word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The comment never ends.
    #[error("pgbaton: command comment has no closing \"*/\"")]
    Unterminated,
    /// Nothing after `pgbaton:`.
    #[error("pgbaton: no command after \"pgbaton:\"")]
    MissingVerb,
    /// Not a known command.
    #[error("pgbaton: unknown command \"{0}\"")]
    UnknownVerb(String),
    /// A `key=value` word with an unknown key.
    #[error("pgbaton: unknown option \"{0}\"")]
    UnknownOption(String),
    /// A bare word that is not a known flag.
    #[error("pgbaton: unknown flag \"{0}\"")]
    UnknownFlag(String),
    /// A known key with a value it cannot take.
    #[error("pgbaton: invalid value in \"{word}\": {reason}")]
    BadValue {
        /// The whole `key=value` word.
        word: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The same key or flag twice.
    #[error("pgbaton: \"{0}\" is given twice")]
    Duplicate(String),
    /// `migrate` without `to=`.
    #[error("pgbaton: migrate needs \"to=<backend>\"")]
    MissingTarget,
}

impl CommandError {
    /// The word the error is about.
    pub fn word(&self) -> &str {
        match self {
            CommandError::Unterminated => "*/",
            CommandError::MissingVerb => "pgbaton:",
            CommandError::MissingTarget => "to=",
            CommandError::UnknownVerb(w)
            | CommandError::UnknownOption(w)
            | CommandError::UnknownFlag(w)
            | CommandError::Duplicate(w)
            | CommandError::BadValue { word: w, .. } => w,
        }
    }
}

/// Parses a command comment at the start of `sql`. `None` when the text does
/// not start with a block comment whose body starts with `pgbaton:` (an
/// ordinary comment is no command); otherwise the command or why it is wrong.
pub fn parse_command<S: AsRef<[u8]> + ?Sized>(
    sql: &S,
) -> Option<Result<CommentCommand, CommandError>> {
    let sql = sql.as_ref();
    let start = sql.iter().position(|&b| !is_space(b))?;
    if !sql[start..].starts_with(b"/*") {
        return None;
    }
    let end = block_comment_end(sql, start);
    let body = &sql[start + 2..end.map_or(sql.len(), |e| e - 2)];
    let body = &body[body
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(body.len())..];
    if body.len() < PREFIX.len() || !body[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let Some(end) = end else {
        return Some(Err(CommandError::Unterminated));
    };
    let parsed = parse_words(&body[PREFIX.len()..]).map(|command| CommentCommand {
        command,
        rest: end,
        has_statement: Lexer::new(&sql[end..]).any(|t| t.kind != TokenKind::Semicolon),
    });
    Some(parsed)
}

fn parse_words(body: &[u8]) -> Result<Command, CommandError> {
    let mut words = body.split(|&b| is_space(b)).filter(|w| !w.is_empty());
    let verb = words.next().ok_or(CommandError::MissingVerb)?;
    if !verb.eq_ignore_ascii_case(b"migrate") {
        return Err(CommandError::UnknownVerb(quote(verb)));
    }
    let mut to = None;
    let mut from = None;
    let mut wait = None;
    let mut dry_run = false;
    for word in words {
        let Some(eq) = word.iter().position(|&b| b == b'=') else {
            if !word.eq_ignore_ascii_case(b"dry_run") {
                return Err(CommandError::UnknownFlag(quote(word)));
            }
            if std::mem::replace(&mut dry_run, true) {
                return Err(CommandError::Duplicate(quote(word)));
            }
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        if key.eq_ignore_ascii_case(b"to") {
            once(&mut to, backend(word, value)?, word)?;
        } else if key.eq_ignore_ascii_case(b"from") {
            once(&mut from, backend(word, value)?, word)?;
        } else if key.eq_ignore_ascii_case(b"wait") {
            once(&mut wait, duration(word, value)?, word)?;
        } else {
            return Err(CommandError::UnknownOption(quote(word)));
        }
    }
    let to = to.ok_or(CommandError::MissingTarget)?;
    Ok(Command::Migrate {
        to,
        from,
        dry_run,
        wait,
    })
}

fn once<T>(slot: &mut Option<T>, value: T, word: &[u8]) -> Result<(), CommandError> {
    match slot.replace(value) {
        Some(_) => Err(CommandError::Duplicate(quote(word))),
        None => Ok(()),
    }
}

/// A backend name: non-empty UTF-8 without control characters. Whether it is
/// configured is the proxy's question (42704).
fn backend(word: &[u8], value: &[u8]) -> Result<String, CommandError> {
    let bad = |reason| CommandError::BadValue {
        word: quote(word),
        reason,
    };
    let name = std::str::from_utf8(value).map_err(|_| bad("not valid UTF-8"))?;
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(bad("expected a backend name"));
    }
    Ok(name.to_owned())
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
fn duration(word: &[u8], value: &[u8]) -> Result<Duration, CommandError> {
    let bad = || CommandError::BadValue {
        word: quote(word),
        reason: "expected a duration such as 500ms, 10s or 2m",
    };
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, unit) = value.split_at(digits);
    let n: u64 = std::str::from_utf8(number)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let per_unit = match unit {
        b"ms" => return Ok(Duration::from_millis(n)),
        b"" | b"s" => 1,
        b"m" => 60,
        b"h" => 3600,
        _ => return Err(bad()),
    };
    n.checked_mul(per_unit)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// The word for an error message: lossy UTF-8, at most [`MAX_WORD`] bytes.
fn quote(word: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(word).into_owned();
    if s.len() > MAX_WORD {
        let mut cut = MAX_WORD;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}
