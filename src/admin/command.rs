//! Parsing console commands. Keywords are case-insensitive; names (backends)
//! keep their case; a trailing `;` and surrounding blanks are ignored.

use super::{AdminError, ResultSet};
use crate::protocol::SqlState;
use crate::proxy::Shared;
use std::sync::Arc;

/// The commands, as listed in the error for an unknown one.
pub const COMMANDS: &[&str] = &[
    "SHOW SESSIONS",
    "SHOW SESSION <id>",
    "SHOW BACKENDS",
    "SHOW CLUSTER",
    "SHOW MIGRATIONS",
    "SHOW PLANS",
    "SHOW CONFLICTS",
    "SHOW STATS",
    "SHOW VERSION",
    "MIGRATE SESSION <id> TO <backend> [DRY RUN]",
    "MIGRATE ALL FROM <backend> TO <backend>",
    "SCALE OUT [TO <backend>]",
    "RELOAD",
    "SHUTDOWN",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    ShowSessions,
    ShowSession(u64),
    ShowBackends,
    ShowCluster,
    ShowMigrations,
    ShowPlans,
    ShowConflicts,
    ShowStats,
    ShowVersion,
    MigrateSession { id: u64, to: String, dry_run: bool },
    MigrateAll { from: String, to: String },
    ScaleOut { to: Option<String> },
    Reload,
    Shutdown,
}

fn unknown(text: &str) -> AdminError {
    let mut e = AdminError::new(
        SqlState::SYNTAX_ERROR,
        format!("unknown pgbaton admin command \"{}\"", text.trim()),
    );
    e.hint = Some(format!("commands: {}", COMMANDS.join("; ")));
    e
}

fn session_id(word: &str) -> Result<u64, AdminError> {
    word.parse().map_err(|_| {
        AdminError::new(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid session id \"{word}\": expected a number from SHOW SESSIONS"),
        )
    })
}

/// A backend name as typed: unquoted, or in double quotes.
fn name(word: &str) -> String {
    word.trim_matches('"').to_string()
}

impl AdminCommand {
    pub fn parse(text: &str) -> Result<AdminCommand, AdminError> {
        let words: Vec<&str> = text
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .collect();
        let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
        let kw: Vec<&str> = upper.iter().map(String::as_str).collect();
        Ok(match kw.as_slice() {
            ["SHOW", "SESSIONS"] => AdminCommand::ShowSessions,
            ["SHOW", "SESSION", _] => AdminCommand::ShowSession(session_id(words[2])?),
            ["SHOW", "BACKENDS"] => AdminCommand::ShowBackends,
            ["SHOW", "CLUSTER"] => AdminCommand::ShowCluster,
            ["SHOW", "MIGRATIONS"] => AdminCommand::ShowMigrations,
            ["SHOW", "PLANS"] => AdminCommand::ShowPlans,
            ["SHOW", "CONFLICTS"] => AdminCommand::ShowConflicts,
            ["SHOW", "STATS"] => AdminCommand::ShowStats,
            ["SHOW", "VERSION"] => AdminCommand::ShowVersion,
            ["MIGRATE", "SESSION", _, "TO", _] => AdminCommand::MigrateSession {
                id: session_id(words[2])?,
                to: name(words[4]),
                dry_run: false,
            },
            ["MIGRATE", "SESSION", _, "TO", _, "DRY", "RUN"] => AdminCommand::MigrateSession {
                id: session_id(words[2])?,
                to: name(words[4]),
                dry_run: true,
            },
            ["MIGRATE", "ALL", "FROM", _, "TO", _] => AdminCommand::MigrateAll {
                from: name(words[3]),
                to: name(words[5]),
            },
            ["SCALE", "OUT"] => AdminCommand::ScaleOut { to: None },
            ["SCALE", "OUT", "TO", _] => AdminCommand::ScaleOut {
                to: Some(name(words[3])),
            },
            ["RELOAD"] => AdminCommand::Reload,
            ["SHUTDOWN"] => AdminCommand::Shutdown,
            _ => return Err(unknown(text)),
        })
    }

    pub async fn run(&self, shared: &Arc<Shared>) -> Result<ResultSet, AdminError> {
        match self {
            AdminCommand::ShowSessions => Ok(super::show_sessions::run(shared)),
            AdminCommand::ShowSession(id) => super::show_session::run(shared, *id).await,
            AdminCommand::ShowBackends => Ok(super::show_backends::run(shared)),
            AdminCommand::ShowCluster => Ok(super::show_cluster::run(shared)),
            AdminCommand::ShowMigrations => Ok(super::show_migrations::run(shared)),
            AdminCommand::ShowPlans => Ok(super::show_plans::run(shared)),
            AdminCommand::ShowConflicts => Ok(super::show_conflicts::run(shared)),
            AdminCommand::ShowStats => Ok(super::show_stats::run(shared)),
            AdminCommand::ShowVersion => Ok(super::show_version::run()),
            AdminCommand::MigrateSession { id, to, dry_run } => {
                super::migrate_session::run(shared, *id, to, *dry_run).await
            }
            AdminCommand::MigrateAll { from, to } => {
                super::migrate_all::run(shared, from, to).await
            }
            AdminCommand::ScaleOut { to } => super::scale_out::run(shared, to.as_deref()).await,
            AdminCommand::Reload => super::reload::run(shared).await,
            AdminCommand::Shutdown => Ok(super::shutdown::run(shared)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            AdminCommand::parse("show sessions;").unwrap(),
            AdminCommand::ShowSessions
        );
        assert_eq!(
            AdminCommand::parse(" SHOW  SESSION 12 ").unwrap(),
            AdminCommand::ShowSession(12)
        );
        assert_eq!(
            AdminCommand::parse("Show Version").unwrap(),
            AdminCommand::ShowVersion
        );
        assert_eq!(
            AdminCommand::parse("migrate session 3 to PgTwo dry run").unwrap(),
            AdminCommand::MigrateSession {
                id: 3,
                to: "PgTwo".into(),
                dry_run: true
            }
        );
        assert_eq!(
            AdminCommand::parse("MIGRATE ALL FROM pg1 TO pg2;").unwrap(),
            AdminCommand::MigrateAll {
                from: "pg1".into(),
                to: "pg2".into()
            }
        );
        assert_eq!(
            AdminCommand::parse("scale out").unwrap(),
            AdminCommand::ScaleOut { to: None }
        );
        let e = AdminCommand::parse("SHOW SESSION x").unwrap_err();
        assert_eq!(e.code.code(), "22P02");
        let e = AdminCommand::parse("DROP EVERYTHING").unwrap_err();
        assert_eq!(e.code.code(), "42601");
        assert!(e.message.contains("DROP EVERYTHING"));
        assert!(e.hint.unwrap().contains("SHOW BACKENDS"));
    }
}
