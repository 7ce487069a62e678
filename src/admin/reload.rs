//! `RELOAD` (and SIGHUP): re-reads the configuration file with the same
//! command-line overrides, applies this replica's settings, and proposes
//! the file's backend list to the fleet; every backend now marked
//! `draining = true` is drained fleet-wide (its sessions move to the
//! default backend).

use super::{AdminError, ResultSet};
use crate::protocol::SqlState;
use crate::proxy::shared::ReloadError;
use crate::proxy::Shared;
use std::sync::Arc;

pub async fn run(shared: &Arc<Shared>) -> Result<ResultSet, AdminError> {
    let done = shared.reload().await.map_err(|e| match &e {
        ReloadError::Plan { code, .. } => AdminError::new(code.clone(), e.to_string()),
        _ => AdminError::new(SqlState::CONFIG_FILE_ERROR, e.to_string()),
    })?;
    let mut rs = ResultSet::new(vec!["draining", "sessions", "plan"]);
    rs.notices.extend(done.notice);
    for (backend, n) in done.drained {
        rs.push(vec![Some(backend), Some(n.to_string()), done.plan.clone()]);
    }
    if rs.rows.is_empty() {
        if let Some(plan) = &done.plan {
            rs.notices
                .push(format!("pgbaton: plan {plan} changed the fleet's routing"));
        }
    }
    rs.tag = "RELOAD".into();
    Ok(rs)
}
