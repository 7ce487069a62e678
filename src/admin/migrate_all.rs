//! `MIGRATE ALL FROM <a> TO <b>`: starts moving every session on `a` and
//! returns at once; progress shows in SHOW MIGRATIONS.

use super::{AdminError, ResultSet};
use crate::migration::Origin;
use crate::proxy::Shared;
use crate::session::fleet;
use std::sync::Arc;

pub async fn run(shared: &Arc<Shared>, from: &str, to: &str) -> Result<ResultSet, AdminError> {
    // Asked before the moves start, while the sessions are still on `from`.
    let warnings = fleet::split_brain_warnings(&shared.env, Some(from), to).await;
    let n = fleet::move_all(&shared.env, Some(from), to, Origin::Admin, None)
        .map_err(AdminError::from)?;
    let mut rs = ResultSet::new(vec!["from", "to", "sessions"]);
    rs.warnings = warnings;
    rs.push(vec![
        Some(from.to_string()),
        Some(to.to_string()),
        Some(n.to_string()),
    ]);
    rs.tag = format!("MIGRATE {n}");
    Ok(rs)
}
