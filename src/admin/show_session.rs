//! `SHOW SESSION <id>`: the whole ledger of one session, one row per item,
//! with what a move does with it; blockers included.

use super::{AdminError, ResultSet};
use crate::protocol::SqlState;
use crate::proxy::Shared;

pub async fn run(shared: &Shared, id: u64) -> Result<ResultSet, AdminError> {
    let missing = || {
        AdminError::new(
            SqlState::UNDEFINED_OBJECT,
            format!("session {id} does not exist"),
        )
    };
    let entry = shared.env.sessions.get(id).ok_or_else(missing)?;
    let snapshot = entry.ledger().await.ok_or_else(missing)?;
    let mut rs = ResultSet::new(vec!["kind", "name", "value", "on_move"]);
    for r in snapshot.rows {
        rs.push(vec![
            Some(r.kind.to_string()),
            Some(r.name),
            Some(r.value),
            Some(r.on_move.to_string()),
        ]);
    }
    Ok(rs)
}
