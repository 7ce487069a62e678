//! `SCALE OUT [TO <backend>]`: proposes a fleet-wide plan that makes the
//! backend the default for new sessions and moves every session, at every
//! replica, to it. Without TO, runs the configured scale-out hook, which
//! starts a server and prints `NAME HOST:PORT` on its last line; the plan
//! adds that backend to the fleet's routing (the flow of US11553046B1).

use super::{AdminError, ResultSet};
use crate::config::Backend;
use crate::protocol::SqlState;
use crate::proxy::Shared;
use crate::session::fleet;
use std::sync::Arc;
use std::time::Duration;

/// Longest a scale-out hook may run.
const HOOK_LIMIT: Duration = Duration::from_secs(120);

pub async fn run(shared: &Arc<Shared>, to: Option<&str>) -> Result<ResultSet, AdminError> {
    let backend = match to {
        Some(name) => shared
            .env
            .routing
            .current()
            .backend(name)
            .cloned()
            .ok_or_else(|| {
                AdminError::new(
                    SqlState::UNDEFINED_OBJECT,
                    format!(
                        "unknown backend \"{name}\": targets are configured backend names only"
                    ),
                )
            })?,
        None => run_hook(shared).await?,
    };
    let name = backend.name.clone();
    let (draft, here) = fleet::scale_out_draft(&shared.env, backend);
    let warnings = fleet::split_brain_warnings(&shared.env, None, &name).await;
    let (plan, notice) = fleet::propose(&shared.env, draft)
        .await
        .map_err(|(code, m)| AdminError::new(code, m))?;
    let mut rs = ResultSet::new(vec!["plan", "backend", "sessions"]);
    rs.warnings = warnings;
    rs.notices.extend(notice);
    rs.push(vec![Some(plan), Some(name), Some(here.to_string())]);
    rs.tag = format!("SCALE OUT {here}");
    Ok(rs)
}

async fn run_hook(shared: &Shared) -> Result<Backend, AdminError> {
    let config = shared.config();
    let routing = shared.env.routing.current();
    let hook = config.scale_out_hook.clone().ok_or_else(|| {
        AdminError::new(
            SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            "SCALE OUT without TO needs scale_out_hook in the configuration",
        )
    })?;
    let failed = |m: String| AdminError::new(SqlState::SYSTEM_ERROR, m);
    let run = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&hook)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(HOOK_LIMIT, run)
        .await
        .map_err(|_| {
            failed(format!(
                "scale-out hook did not finish within {HOOK_LIMIT:?}"
            ))
        })?
        .map_err(|e| failed(format!("scale-out hook could not run: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "scale-out hook failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let (name, addr) = line.trim().split_once(char::is_whitespace).ok_or_else(|| {
        failed(format!(
            "scale-out hook printed {line:?}, expected \"NAME HOST:PORT\""
        ))
    })?;
    let flag = format!("{}={}", name.trim(), addr.trim());
    let parsed = crate::config::Config::from_toml(
        "",
        &crate::config::Overrides {
            backends: vec![flag],
            ..Default::default()
        },
    )
    .map_err(|e| {
        failed(format!(
            "scale-out hook printed {line:?}, expected \"NAME HOST:PORT\" ({e})"
        ))
    })?;
    let mut backend = parsed.backends[0].clone();
    if routing.backend(&backend.name).is_some() {
        return Err(failed(format!(
            "scale-out hook named an existing backend \"{}\"",
            backend.name
        )));
    }
    // A new server of the same fleet: same TLS policy as the current default.
    let default = routing.default_backend();
    backend.tls = default.tls;
    backend.ca_file = default.ca_file.clone();
    Ok(backend)
}
