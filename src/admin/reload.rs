//! `RELOAD` (and SIGHUP): re-reads the configuration file with the same
//! command-line overrides, applies it, and starts draining every backend now
//! marked `draining = true` (its sessions move to the default backend).

use super::{AdminError, ResultSet};
use crate::protocol::SqlState;
use crate::proxy::Shared;
use std::sync::Arc;

pub fn run(shared: &Arc<Shared>) -> Result<ResultSet, AdminError> {
    let drained = shared
        .reload()
        .map_err(|e| AdminError::new(SqlState::CONFIG_FILE_ERROR, e.to_string()))?;
    let mut rs = ResultSet::new(vec!["draining", "sessions"]);
    for (backend, n) in drained {
        rs.push(vec![Some(backend), Some(n.to_string())]);
    }
    rs.tag = "RELOAD".into();
    Ok(rs)
}
