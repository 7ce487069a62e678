//! Moves of many sessions at once: MIGRATE ALL FROM a TO b, the comment's
//! `from=`, SCALE OUT and drains. Each session moves on its own task at its
//! own safe point; progress shows in SHOW MIGRATIONS.

use super::{MoveError, MoveRequest, OnTimeout, Origin};
use crate::proxy::Shared;
use std::sync::Arc;
use std::time::Duration;

/// Starts moving every session on `from` (every session not already on `to`
/// when `from` is `None`) to `to`. Returns how many moves were started.
pub fn move_all(
    shared: &Arc<Shared>,
    from: Option<&str>,
    to: &str,
    origin: Origin,
    wait: Option<Duration>,
) -> Result<usize, MoveError> {
    let config = shared.config();
    if let Some(f) = from {
        if config.backend(f).is_none() {
            return Err(MoveError::UnknownBackend(f.to_string()));
        }
    }
    if config.backend(to).is_none() {
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
    for entry in shared.sessions.list() {
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
