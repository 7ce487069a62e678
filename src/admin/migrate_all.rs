//! `MIGRATE ALL FROM <a> TO <b>`: proposes a fleet-wide plan that moves
//! every session on `a`, at every replica, to `b`; answers once the leader
//! has decided it (normally within a fraction of a second) with the plan
//! id; progress shows in SHOW PLANS and SHOW MIGRATIONS.

use super::{AdminError, ResultSet};
use crate::migration::Origin;
use crate::proxy::Shared;
use crate::session::fleet;
use std::sync::Arc;

pub async fn run(shared: &Arc<Shared>, from: &str, to: &str) -> Result<ResultSet, AdminError> {
    let (draft, here) =
        fleet::move_draft(&shared.env, Some(from), to, Origin::Admin).map_err(AdminError::from)?;
    // Asked before the moves start, while the sessions are still on `from`.
    let warnings = fleet::split_brain_warnings(&shared.env, Some(from), to).await;
    let (plan, notice) = fleet::propose(&shared.env, draft)
        .await
        .map_err(|(code, m)| AdminError::new(code, m))?;
    let mut rs = ResultSet::new(vec!["plan", "from", "to", "sessions"]);
    rs.warnings = warnings;
    rs.notices.extend(notice);
    rs.push(vec![
        Some(plan),
        Some(from.to_string()),
        Some(to.to_string()),
        Some(here.to_string()),
    ]);
    rs.tag = format!("MIGRATE {here}");
    Ok(rs)
}
