//! What a statement does to session state: the classifier's answer.
//!
//! Every variant borrows the statement text; nothing here allocates until the
//! proxy decodes a name with [`Ident::to_name`]. Settings, roles, prepared
//! statements and LISTEN channels can be replayed on another server; temp
//! objects, WITH HOLD cursors, session advisory locks, LOADed libraries and
//! dblink connections cannot, and pin the session (see `ledger::Blocker`).

use super::calls::Calls;
use super::ident::Ident;

/// What one statement does to the session, as far as the text shows.
///
/// Function bodies (`DO`, `CREATE FUNCTION`, anything called) are opaque: the
/// server is asked for the truth at the safe point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Changes nothing the ledger tracks (SELECT, DML, DDL, SHOW, ...).
    Other,
    /// `SET [SESSION|LOCAL] name {TO|=} value`, `SET name FROM CURRENT`, and
    /// the special forms `SET TIME ZONE` (`timezone`), `SET SCHEMA`
    /// (`search_path`), `SET NAMES` (`client_encoding`), `SET XML OPTION`
    /// (`xmloption`). GUC names are case-insensitive on the server: compare
    /// them with `eq_ignore_ascii_case`.
    Set {
        /// `LOCAL` lasts until the end of the transaction only.
        scope: SetScope,
        /// The parameter, possibly qualified (`myapp.tenant`).
        name: Ident<'a>,
        /// The value as written.
        value: SetValue<'a>,
    },
    /// `RESET name`, `RESET TIME ZONE`.
    Reset {
        /// The parameter.
        name: Ident<'a>,
    },
    /// `RESET ALL`: every parameter, but not the role (Postgres keeps
    /// `SET ROLE` through it).
    ResetAll,
    /// `SET ROLE name|NONE`, `SET role = name`.
    SetRole {
        /// `SET LOCAL ROLE` lasts until the end of the transaction.
        scope: SetScope,
        /// The role, or [`Role::None`].
        role: Role<'a>,
    },
    /// `RESET ROLE`.
    ResetRole,
    /// `SET SESSION AUTHORIZATION name|DEFAULT`.
    SetSessionAuthorization {
        /// `SET LOCAL SESSION AUTHORIZATION` lasts until the end of the transaction.
        scope: SetScope,
        /// The user, or [`Role::Default`].
        user: Role<'a>,
    },
    /// `RESET SESSION AUTHORIZATION`.
    ResetSessionAuthorization,
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION modes`: sets the
    /// `default_transaction_*` parameters.
    SetSessionCharacteristics {
        /// The transaction modes as written (`ISOLATION LEVEL SERIALIZABLE`).
        modes: &'a [u8],
    },
    /// `SET TRANSACTION ...`, `SET TRANSACTION SNAPSHOT`, `SET CONSTRAINTS`,
    /// `RESET TRANSACTION ISOLATION LEVEL`: the current transaction only.
    SetTransaction,
    /// `PREPARE name [(types)] AS statement`. Survives a rollback.
    Prepare {
        /// The statement name.
        name: Ident<'a>,
        /// The parameter types between the parentheses, as written.
        params: Option<&'a [u8]>,
        /// The prepared statement's text; [`super::offset_in`] gives its
        /// byte range, and classifying it tells what each `EXECUTE` does.
        body: &'a [u8],
    },
    /// `EXECUTE name [(args)]`. Records nothing itself.
    Execute {
        /// The statement name.
        name: Ident<'a>,
    },
    /// `DEALLOCATE [PREPARE] name|ALL`.
    Deallocate(Target<'a>),
    /// `LISTEN channel`. Takes effect at commit.
    Listen {
        /// The channel.
        channel: Ident<'a>,
    },
    /// `UNLISTEN channel|*`.
    Unlisten(Target<'a>),
    /// `NOTIFY channel [, payload]`. Not session state.
    Notify {
        /// The channel.
        channel: Ident<'a>,
    },
    /// `DISCARD ...`.
    Discard(Discard),
    /// Transaction control.
    Transaction(Transaction<'a>),
    /// `DECLARE name ... CURSOR [WITH HOLD] FOR ...`.
    DeclareCursor {
        /// The cursor.
        name: Ident<'a>,
        /// A holdable cursor outlives its transaction and pins the session.
        with_hold: bool,
    },
    /// `CLOSE name|ALL`.
    Close(Target<'a>),
    /// Creates a temporary object: `CREATE [GLOBAL|LOCAL] TEMP ...`,
    /// `CREATE ... pg_temp.x`, `SELECT ... INTO TEMP t`. Pins.
    CreateTemp {
        /// The object kind as written (`TABLE`, `VIEW`, `FUNCTION`, ...).
        object: &'a [u8],
    },
    /// `LOAD 'file'`: a library the target would lack. Pins.
    Load {
        /// The file name.
        file: Ident<'a>,
    },
    /// Another statement that calls functions which change session state.
    Calls(Calls<'a>),
}

/// How long a `SET` lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetScope {
    /// Plain `SET` or `SET SESSION`: the session (undone by a rollback).
    Session,
    /// `SET LOCAL`: the current transaction.
    Local,
}

/// The value of a `SET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetValue<'a> {
    /// The value list as written, quotes included (`'$user', public`).
    Value(&'a [u8]),
    /// `TO DEFAULT` (also `SET TIME ZONE LOCAL`, bare `SET NAMES`): like RESET.
    Default,
    /// `FROM CURRENT`: makes the current value the session value.
    FromCurrent,
}

/// The argument of `SET ROLE` / `SET SESSION AUTHORIZATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role<'a> {
    /// A role name (identifier or string).
    Name(Ident<'a>),
    /// `SET ROLE NONE`.
    None,
    /// `SET SESSION AUTHORIZATION DEFAULT`.
    Default,
}

/// A named object or `ALL` (`*` for UNLISTEN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// One object.
    Name(Ident<'a>),
    /// All of them.
    All,
}

/// What `DISCARD` drops (<https://www.postgresql.org/docs/15/sql-discard.html>).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Discard {
    /// Everything: CLOSE ALL, SET SESSION AUTHORIZATION DEFAULT, RESET ALL,
    /// DEALLOCATE ALL, UNLISTEN *, pg_advisory_unlock_all(), and the three
    /// below. Refused inside a transaction.
    All,
    /// Cached plans.
    Plans,
    /// Temporary tables (`TEMP` or `TEMPORARY`).
    Temp,
    /// Cached sequence state (currval/lastval).
    Sequences,
}

/// Transaction control statements
/// (<https://www.postgresql.org/docs/15/tutorial-transactions.html>).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transaction<'a> {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`; `chain` for `AND CHAIN` (a new transaction starts).
    Commit {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `ROLLBACK`, `ABORT`; `chain` for `AND CHAIN`.
    Rollback {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `SAVEPOINT name`.
    Savepoint(Ident<'a>),
    /// `RELEASE [SAVEPOINT] name`.
    Release(Ident<'a>),
    /// `ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name`.
    RollbackTo(Ident<'a>),
    /// `PREPARE TRANSACTION 'gid'`: ends the transaction for this session.
    Prepare(Ident<'a>),
    /// `COMMIT PREPARED 'gid'`.
    CommitPrepared(Ident<'a>),
    /// `ROLLBACK PREPARED 'gid'`.
    RollbackPrepared(Ident<'a>),
}

impl Effect<'_> {
    /// Whether the ledger has anything to record for this statement: false
    /// for [`Effect::Other`], `NOTIFY`, transaction-only `SET`s, cursors
    /// without hold, and calls of transaction-scoped functions only.
    /// Transaction control counts, since SET and LISTEN follow it; so does
    /// `EXECUTE`, which applies whatever its prepared statement changes (a
    /// prepared `set_config`, say).
    pub fn is_session_state(&self) -> bool {
        match self {
            Effect::Other | Effect::Notify { .. } => false,
            Effect::SetTransaction => false,
            Effect::DeclareCursor { with_hold, .. } => *with_hold,
            Effect::Calls(calls) => calls.is_session_state(),
            _ => true,
        }
    }

    /// Whether the statement creates state that cannot be replayed on
    /// another server, so the session is pinned: temp objects, holdable
    /// cursors, loaded libraries, session advisory locks, dblink connections.
    pub fn pins(&self) -> bool {
        match self {
            Effect::CreateTemp { .. } | Effect::Load { .. } => true,
            Effect::DeclareCursor { with_hold, .. } => *with_hold,
            Effect::Calls(calls) => calls.pins(),
            _ => false,
        }
    }
}
