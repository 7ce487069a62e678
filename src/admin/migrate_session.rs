//! `MIGRATE SESSION <id> TO <backend> [DRY RUN]`: moves one session and
//! answers when it is done (or says why not).

use super::{AdminError, ResultSet};
use crate::migration::{MoveError, MoveRequest, OnTimeout, Origin};
use crate::protocol::SqlState;
use crate::proxy::Shared;

pub async fn run(
    shared: &Shared,
    id: u64,
    to: &str,
    dry_run: bool,
) -> Result<ResultSet, AdminError> {
    let entry = shared.env.sessions.get(id).ok_or_else(|| {
        AdminError::new(
            SqlState::UNDEFINED_OBJECT,
            format!("session {id} does not exist"),
        )
    })?;
    let request = MoveRequest {
        target: to.to_string(),
        wait: shared.config().migration_wait,
        dry_run,
        on_timeout: OnTimeout::Abort,
        origin: Origin::Admin,
    };
    let mut rs = ResultSet::new(vec![
        "session", "from", "to", "status", "pause_us", "message",
    ]);
    match entry.migrate(request).await {
        Ok(o) => {
            rs.warnings.extend(o.warning.clone());
            rs.push(vec![
                Some(id.to_string()),
                Some(o.from.clone()),
                Some(o.to.clone()),
                Some(if o.dry_run { "dry run" } else { "done" }.to_string()),
                Some(o.pause.as_micros().to_string()),
                Some(o.notice()),
            ]);
            rs.tag = format!("MIGRATE {}", u8::from(!o.dry_run));
            Ok(rs)
        }
        Err(MoveError::AlreadyThere(b)) => {
            rs.push(vec![
                Some(id.to_string()),
                Some(b.clone()),
                Some(b.clone()),
                Some("unchanged".to_string()),
                None,
                Some(format!("session {id} is already on {b}")),
            ]);
            rs.tag = "MIGRATE 0".into();
            Ok(rs)
        }
        // A dry run's "no, because" is its answer, not an error.
        Err(e) if dry_run && e.is_verdict() => {
            let from = entry.live().backend;
            rs.push(vec![
                Some(id.to_string()),
                Some(from.clone()),
                Some(to.to_string()),
                Some("dry run".to_string()),
                None,
                Some(e.dry_run_notice(id, &from, to)),
            ]);
            rs.tag = "MIGRATE 0".into();
            Ok(rs)
        }
        Err(e) => Err(AdminError::new(e.sqlstate(), format!("session {id}: {e}"))),
    }
}
