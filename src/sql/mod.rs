//! SQL text: statement splitting, session-state classification, and the
//! `/* pgbaton: ... */` command comment.
//!
//! The proxy sees the SQL of every simple Query (and Parse). It must know,
//! cheaply, which statements change state the ledger records (settings,
//! roles, prepared statements, LISTEN, transaction boundaries) and which pin
//! a session (temp objects, holdable cursors, advisory locks, dblink, LOAD).
//! Most queries change nothing, so that answer costs one pass over the bytes
//! and no allocation; names are decoded only when recorded.
//!
//! Input is `&[u8]` (the Query body without its NUL) or anything
//! `AsRef<[u8]>`; invalid UTF-8, unterminated quotes and comments are
//! tolerated and nothing panics. Lexical rules: manual 4.1,
//! <https://www.postgresql.org/docs/15/sql-syntax-lexical.html>.
//!
//! # API
//! ```text
//! statements(sql)            -> Statements: Iterator<Item = &[u8]>   (no ';', no edge comments)
//! classify(stmt)             -> Effect<'_>                          (first statement of stmt)
//! classify_all(sql)          -> ClassifyAll: Iterator<Item = Effect<'_>>  (one pass)
//! changes_session_state(sql) -> bool                                (false: nothing to record)
//! parse_command(sql)         -> Option<Result<CommentCommand, CommandError>>
//! Syntax { standard_conforming_strings }.statements/classify/classify_all/changes_session_state
//! offset_in(outer, inner)    -> Option<Range<usize>>                (where a slice sits)
//! Lexer / Token / TokenKind                                         (for other SQL parsing)
//! ```
//! [`Effect`] borrows the text: [`Ident`] keeps a name raw and decodes it in
//! [`Ident::to_name`]; values stay raw (`SetValue::Value`), since the proxy
//! asks the server for the effective value at the safe point.
//!
//! ```
//! use pgbaton::sql::{self, Effect, SetValue};
//!
//! let sql = b"SET work_mem='5MB'; PREPARE pm(int) AS SELECT $1; SELECT 42";
//! let effects: Vec<Effect<'_>> = sql::classify_all(sql).collect();
//! let Effect::Set { name, value, .. } = effects[0] else { panic!() };
//! assert!(name.eq_name("work_mem"));
//! assert_eq!(value, SetValue::Value(b"'5MB'"));
//! let Effect::Prepare { name, body, .. } = effects[1] else { panic!() };
//! assert_eq!((name.to_name().as_str(), body), ("pm", &b"SELECT $1"[..]));
//! assert_eq!(sql::offset_in(sql, body), Some(39..48));
//! assert_eq!(effects[2], Effect::Other);
//! assert!(!sql::changes_session_state("SELECT abalance FROM pgbench_accounts WHERE aid = 42"));
//! ```
//!
//! # Layout
//! - `lexer`: tokens, strings, quoted identifiers, dollar quotes, comments.
//! - `split`: top-level `;` (not in parentheses or `BEGIN ATOMIC` bodies).
//! - `classify`: statement dispatch and the call / `INTO TEMP` scan.
//! - `set`: every form of SET and RESET.
//! - `calls`: `set_config`, advisory lock and dblink calls.
//! - `effect`: the answer types; `ident`: lazy name decoding.
//! - `command`: the `/* pgbaton: migrate ... */` comment.
//!
//! # Limits
//! Function bodies (`DO`, `CREATE FUNCTION`, `EXECUTE` of a prepared
//! statement) are opaque; the server is asked at the safe point. `UESCAPE`
//! clauses are not applied when decoding `U&` names.

mod calls;
mod classify;
mod command;
mod effect;
mod ident;
mod lexer;
mod set;
mod split;
#[cfg(test)]
mod tests;

pub use calls::{Calls, SetConfigCall, SetConfigCalls};
pub use classify::{changes_session_state, classify, classify_all, ClassifyAll};
pub use command::{parse_command, Command, CommandError, CommentCommand};
pub use effect::{Discard, Effect, Role, SetScope, SetValue, Target, Transaction};
pub use ident::Ident;
pub use lexer::{Lexer, StrKind, Syntax, Token, TokenKind};
pub use split::{offset_in, statements, Statements};
