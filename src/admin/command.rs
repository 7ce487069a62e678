//! Parsing console commands. Keywords are case-insensitive; a trailing `;`
//! and surrounding blanks are ignored.

use super::{AdminError, ResultSet};
use crate::proxy::Shared;
use std::sync::Arc;
use tokio_postgres::error::SqlState;

/// The commands, as listed in the error for an unknown one.
pub const COMMANDS: &[&str] = &[
    "SHOW SESSIONS",
    "SHOW SESSION <id>",
    "SHOW BACKENDS",
    "SHOW STATS",
    "SHOW VERSION",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    ShowSessions,
    ShowSession(u64),
    ShowBackends,
    ShowStats,
    ShowVersion,
}

fn unknown(text: &str) -> AdminError {
    let mut e = AdminError::new(
        SqlState::SYNTAX_ERROR.code(),
        format!("unknown pgbaton admin command \"{}\"", text.trim()),
    );
    e.hint = Some(format!("commands: {}", COMMANDS.join("; ")));
    e
}

impl AdminCommand {
    pub fn parse(text: &str) -> Result<AdminCommand, AdminError> {
        let words: Vec<String> = text
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["SHOW", "SESSIONS"] => Ok(AdminCommand::ShowSessions),
            ["SHOW", "SESSION", id] => id.parse().map(AdminCommand::ShowSession).map_err(|_| {
                AdminError::new(
                    SqlState::INVALID_TEXT_REPRESENTATION.code(),
                    format!("invalid session id \"{id}\": expected a number from SHOW SESSIONS"),
                )
            }),
            ["SHOW", "BACKENDS"] => Ok(AdminCommand::ShowBackends),
            ["SHOW", "STATS"] => Ok(AdminCommand::ShowStats),
            ["SHOW", "VERSION"] => Ok(AdminCommand::ShowVersion),
            _ => Err(unknown(text)),
        }
    }

    pub async fn run(&self, shared: &Arc<Shared>) -> Result<ResultSet, AdminError> {
        match self {
            AdminCommand::ShowSessions => Ok(super::show_sessions::run(shared)),
            AdminCommand::ShowSession(id) => super::show_session::run(shared, *id).await,
            AdminCommand::ShowBackends => Ok(super::show_backends::run(shared)),
            AdminCommand::ShowStats => Ok(super::show_stats::run(shared)),
            AdminCommand::ShowVersion => Ok(super::show_version::run()),
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
        let e = AdminCommand::parse("SHOW SESSION x").unwrap_err();
        assert_eq!(e.code, "22P02");
        let e = AdminCommand::parse("DROP EVERYTHING").unwrap_err();
        assert_eq!(e.code, "42601");
        assert!(e.message.contains("DROP EVERYTHING"));
        assert!(e.hint.unwrap().contains("SHOW BACKENDS"));
    }
}
