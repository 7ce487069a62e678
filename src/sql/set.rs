//! `SET` and `RESET` in all their forms.
//!
//! Mirrors the grammar of `VariableSetStmt` / `VariableResetStmt` in the
//! server's `gram.y` (manual: <https://www.postgresql.org/docs/15/sql-set.html>,
//! <https://www.postgresql.org/docs/15/sql-reset.html>,
//! <https://www.postgresql.org/docs/15/sql-set-role.html>,
//! <https://www.postgresql.org/docs/15/sql-set-session-authorization.html>).
//! The special forms map to the parameter names gram.y gives them
//! (`SET TIME ZONE` sets `timezone`, `SET SCHEMA` sets `search_path`, ...),
//! and `SET role = x` is normalised to [`Effect::SetRole`], since the
//! server treats it the same.

use super::classify::Parser;
use super::effect::{Effect, Role, SetScope, SetValue};
use super::ident::Ident;
use super::lexer::{Token, TokenKind};

const TIMEZONE: Ident<'static> = Ident::fixed("timezone");
const SEARCH_PATH: Ident<'static> = Ident::fixed("search_path");
const CLIENT_ENCODING: Ident<'static> = Ident::fixed("client_encoding");
const XMLOPTION: Ident<'static> = Ident::fixed("xmloption");

fn is_assign(t: &Token<'_>) -> bool {
    t.is_keyword("to") || (t.kind == TokenKind::Operator && t.text == b"=")
}

/// After `SET`.
pub(super) fn set<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    let mut scope = SetScope::Session;
    if p.eat("local") {
        scope = SetScope::Local;
    } else if p.peek()?.is_keyword("session") {
        // SET SESSION AUTHORIZATION and SET SESSION CHARACTERISTICS are forms
        // of their own; otherwise SESSION is the (default) scope.
        let session = p.next()?;
        let n = p.peek()?;
        if n.is_keyword("authorization") || n.is_keyword("characteristics") {
            return set_rest(p, scope, session);
        }
    }
    let t = p.next()?;
    set_rest(p, scope, t)
}

/// gram.y `set_rest`, `t` being its first token.
fn set_rest<'a>(p: &mut Parser<'_, 'a>, scope: SetScope, t: Token<'a>) -> Option<Effect<'a>> {
    let assign_next = |p: &mut Parser<'_, 'a>| p.peek().is_some_and(|n| is_assign(&n));
    if t.is_keyword("transaction") || t.is_keyword("constraints") {
        return Some(Effect::SetTransaction);
    }
    if t.is_keyword("session") {
        if p.eat("authorization") {
            let user = match p.next()? {
                d if d.is_keyword("default") => Role::Default,
                n => Role::Name(role_name(p, &n)?),
            };
            return Some(Effect::SetSessionAuthorization { scope, user });
        }
        if p.peek()?.is_keyword("characteristics") {
            let c = p.next()?;
            if !p.eat("as") {
                return generic(p, scope, c);
            }
            if !p.eat("transaction") {
                return None;
            }
            let modes = p.rest()?;
            return Some(Effect::SetSessionCharacteristics { modes });
        }
    }
    if t.is_keyword("time") && p.eat("zone") {
        let v = p.next()?;
        let value = if v.is_keyword("local") || v.is_keyword("default") {
            SetValue::Default
        } else {
            SetValue::Value(p.rest_from(&v))
        };
        return Some(Effect::Set {
            scope,
            name: TIMEZONE,
            value,
        });
    }
    if t.is_keyword("schema")
        && p.peek()
            .is_some_and(|n| matches!(n.kind, TokenKind::String(_)))
    {
        let value = SetValue::Value(p.rest()?);
        return Some(Effect::Set {
            scope,
            name: SEARCH_PATH,
            value,
        });
    }
    if t.is_keyword("names") && !assign_next(p) {
        let value = match p.next() {
            None => SetValue::Default,
            Some(d) if d.is_keyword("default") => SetValue::Default,
            Some(v) => SetValue::Value(p.rest_from(&v)),
        };
        return Some(Effect::Set {
            scope,
            name: CLIENT_ENCODING,
            value,
        });
    }
    if t.is_keyword("role") && !assign_next(p) {
        let v = p.next()?;
        let role = role(p, &v)?;
        return Some(Effect::SetRole { scope, role });
    }
    if t.is_keyword("xml") && p.eat("option") {
        let value = SetValue::Value(p.rest()?);
        return Some(Effect::Set {
            scope,
            name: XMLOPTION,
            value,
        });
    }
    generic(p, scope, t)
}

/// `var_name {TO|=} {value, ...|DEFAULT}` or `var_name FROM CURRENT`.
fn generic<'a>(p: &mut Parser<'_, 'a>, scope: SetScope, first: Token<'a>) -> Option<Effect<'a>> {
    let name = p.qualified(first)?;
    let t = p.next()?;
    if t.is_keyword("from") {
        return p.eat("current").then_some(Effect::Set {
            scope,
            name,
            value: SetValue::FromCurrent,
        });
    }
    if !is_assign(&t) {
        return None;
    }
    let v = p.next()?;
    let single = p.peek().is_none();
    if single && name.eq_name("role") {
        let role = role(p, &v)?;
        return Some(Effect::SetRole { scope, role });
    }
    if single && name.eq_name("session_authorization") {
        let user = if v.is_keyword("default") {
            Role::Default
        } else {
            Role::Name(role_name(p, &v)?)
        };
        return Some(Effect::SetSessionAuthorization { scope, user });
    }
    let value = if single && v.is_keyword("default") {
        SetValue::Default
    } else {
        SetValue::Value(p.rest_from(&v))
    };
    Some(Effect::Set { scope, name, value })
}

/// The role of `SET ROLE`: a name or string, where `none` in any spelling
/// means NONE (the server compares the value with "none").
fn role<'a>(p: &Parser<'_, 'a>, t: &Token<'a>) -> Option<Role<'a>> {
    let name = role_name(p, t)?;
    Some(if name.eq_name("none") {
        Role::None
    } else {
        Role::Name(name)
    })
}

/// gram.y `NonReservedWord_or_Sconst`: one identifier or string constant.
fn role_name<'a>(p: &Parser<'_, 'a>, t: &Token<'a>) -> Option<Ident<'a>> {
    (t.is_name() || matches!(t.kind, TokenKind::String(_))).then(|| p.ident(t, t))
}

/// After `RESET`: `ALL`, `SESSION AUTHORIZATION`, `TIME ZONE`,
/// `TRANSACTION ISOLATION LEVEL`, or a parameter name.
pub(super) fn reset<'a>(p: &mut Parser<'_, 'a>) -> Option<Effect<'a>> {
    let t = p.next()?;
    if t.is_keyword("all") {
        return Some(Effect::ResetAll);
    }
    if t.is_keyword("session") && p.eat("authorization") {
        return Some(Effect::ResetSessionAuthorization);
    }
    if t.is_keyword("time") && p.eat("zone") {
        return Some(Effect::Reset { name: TIMEZONE });
    }
    if t.is_keyword("transaction") {
        return Some(Effect::SetTransaction);
    }
    let name = p.qualified(t)?;
    Some(if name.eq_name("role") {
        Effect::ResetRole
    } else if name.eq_name("session_authorization") {
        Effect::ResetSessionAuthorization
    } else {
        Effect::Reset { name }
    })
}
