//! Moves of many sessions at once: MIGRATE ALL FROM a TO b, the comment's
//! `from=`, SCALE OUT and drains. Each session moves on its own task at its
//! own safe point; progress shows in SHOW MIGRATIONS.
//!
//! They live with the sessions, not in the proxy that calls them too,
//! because a session's own `from=` comment starts one.

use super::env::Env;
use super::registry::SessionEntry;
use crate::migration::identity::{split_brain_warning, writes};
use crate::migration::{MoveError, MoveRequest, OnTimeout, Origin};
use crate::protocol::startup::StartupParam;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Asked before a fleet-wide move onto `to`: is `to` a promoted copy of a
/// backend whose sessions would move, while that backend still takes
/// writes? One warning per such backend. Each backend is asked on a control
/// connection that logs in as one of its sessions does; a backend that
/// cannot be asked gives no warning (the moves themselves will say more).
pub async fn split_brain_warnings(env: &Env, from: Option<&str>, to: &str) -> Vec<String> {
    let routing = env.routing.current();
    let moves = env.move_env();
    // A foreign target is declared independent of the sources.
    let Some(target) = routing.backend(to).filter(|b| !b.foreign).cloned() else {
        return Vec::new();
    };
    let mut sources: BTreeMap<String, Arc<SessionEntry>> = BTreeMap::new();
    for e in env.sessions.list() {
        let on = e.live().backend;
        if on != to && from.map_or(true, |f| f == on) {
            sources.entry(on).or_insert(e);
        }
    }
    let login = |e: &SessionEntry| {
        let param = |n: &str, v: &str| StartupParam {
            name: n.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
        };
        vec![param("user", &e.user), param("database", &e.database)]
    };
    let Some(any) = sources.values().next() else {
        return Vec::new();
    };
    let Ok((system, true)) = writes(&moves, &target, &login(any), &any.user).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, e) in &sources {
        let Some(source) = routing.backend(name) else {
            continue;
        };
        if let Ok((s, true)) = writes(&moves, source, &login(e), &e.user).await {
            if s == system {
                out.push(split_brain_warning(name, to));
            }
        }
    }
    out
}

/// Starts moving every session on `from` (every session not already on `to`
/// when `from` is `None`) to `to`. Returns how many moves were started.
pub fn move_all(
    env: &Env,
    from: Option<&str>,
    to: &str,
    origin: Origin,
    wait: Option<Duration>,
) -> Result<usize, MoveError> {
    let config = env.config();
    let routing = env.routing.current();
    if let Some(f) = from {
        if routing.backend(f).is_none() {
            return Err(MoveError::UnknownBackend(f.to_string()));
        }
    }
    if routing.backend(to).is_none() {
        return Err(MoveError::UnknownBackend(to.to_string()));
    }
    if from == Some(to) {
        return Err(MoveError::SameBackend(to.to_string()));
    }
    let on_timeout = if origin == Origin::Drain {
        config.drain_on_timeout
    } else {
        OnTimeout::Abort
    };
    let mut started = 0;
    for entry in env.sessions.list() {
        let on = entry.live().backend;
        let selected = match from {
            Some(f) => on == f,
            None => on != to,
        };
        if !selected {
            continue;
        }
        let request = MoveRequest {
            target: to.to_string(),
            wait: wait.unwrap_or(config.migration_wait),
            dry_run: false,
            on_timeout,
            origin,
        };
        started += 1;
        tokio::spawn(async move {
            let _ = entry.migrate(request).await;
        });
    }
    Ok(started)
}
