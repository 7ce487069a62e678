//! [`LocalPgError`], the one error type of this module, and the helper that trims tool output.
//!
//! Each variant's message says what failed and carries the tool's stderr or the server log's tail,
//! so a failed test or `pgbaton demo` shows the cause without anyone opening files. I/O errors are
//! part of the message rather than a `source()`, so printing the chain does not repeat them.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// How many trailing lines of stderr or of a server log an error keeps.
pub(crate) const TAIL_LINES: usize = 30;

/// A failure to find, start, drive or stop a throwaway PostgreSQL server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalPgError {
    /// No directory holding `initdb` was found.
    #[error(
        "PostgreSQL server binaries not found ({tried}). Install the server package \
         (Debian/Ubuntu: `apt-get install postgresql`) or set PG_BINDIR to the directory \
         that holds initdb and pg_ctl"
    )]
    BinariesNotFound {
        /// What was looked at, and why each place did not do.
        tried: String,
    },

    /// `PG_BINDIR` (or [`PgBinaries::at`](super::PgBinaries::at)) names a dir without `initdb`.
    #[error(
        "no `initdb` in `{}` (given by PG_BINDIR or PgBinaries::at); point PG_BINDIR at the \
         server's bin directory (e.g. /usr/lib/postgresql/15/bin) or unset it",
        .0.display()
    )]
    BadBinDir(PathBuf),

    /// We are root (initdb and pg_ctl refuse to run as root) and the service user is missing.
    #[error(
        "running as root, but initdb and pg_ctl refuse to run as root and the OS user `{0}` \
         to run them as does not exist; create it (Debian: `apt-get install postgresql` does) \
         or run as an ordinary user"
    )]
    NoServiceUser(String),

    /// A file-system operation failed.
    #[error("{action} `{}`: {err}", .path.display())]
    Io {
        /// What was being done, e.g. "copying the template to".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },

    /// A tool could not be started at all.
    #[error("could not run `{command}`: {err}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error from `exec`.
        err: io::Error,
    },

    /// A tool ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its stderr (or stdout when stderr was empty).
        output: String,
    },

    /// `pg_ctl start` failed or timed out.
    #[error(
        "PostgreSQL on 127.0.0.1:{port} did not start: {detail}\n\
         --- last lines of the server log {} ---\n{log_tail}",
        .log.display()
    )]
    Start {
        /// The port it was meant to listen on.
        port: u16,
        /// What `pg_ctl` said.
        detail: String,
        /// The server log file.
        log: PathBuf,
        /// What this start attempt wrote to the log (last lines).
        log_tail: String,
    },

    /// SQL run through `psql` failed.
    #[error("psql on port {port}, database `{db}`, failed ({status}):\n{stderr}")]
    Psql {
        /// The server's port.
        port: u16,
        /// The database connected to.
        db: String,
        /// psql's exit status (3 means an SQL error under ON_ERROR_STOP).
        status: ExitStatus,
        /// The last lines of psql's stderr.
        stderr: String,
    },

    /// No free TCP port could be reserved on 127.0.0.1.
    #[error("no free TCP port on 127.0.0.1: {0}")]
    NoFreePort(String),

    /// The socket directory is so deep that the socket path would not fit in `sun_path`.
    #[error(
        "unix socket path `{}` would be {len} bytes, over PostgreSQL's limit of 107; \
         set TMPDIR to a shorter directory",
        .path.display()
    )]
    SocketPathTooLong {
        /// The socket path that would have been used.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },

    /// The operation needs a running server.
    #[error("the server on port {port} is not running; call restart() first")]
    NotRunning {
        /// The stopped server's port.
        port: u16,
    },
}

impl LocalPgError {
    /// Wraps an I/O error with what was being done to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |err| LocalPgError::Io { action, path, err }
    }
}

/// The last `lines` lines of `text`, so errors stay readable when a log is long.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let trimmed = text.trim_end();
    let start = trimmed
        .rmatch_indices('\n')
        .nth(lines.saturating_sub(1))
        .map_or(0, |(at, _)| at + 1);
    trimmed[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("only", 1), "only");
    }
}
