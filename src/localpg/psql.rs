//! Running setup SQL on a [`LocalPostgres`] through `psql` over its unix socket.
//!
//! The SQL goes through a file (`psql -f`), not `-c` and not stdin: `-c` sends a multi-statement
//! string as one implicit transaction, which `CREATE DATABASE` refuses; writing to a child's stdin
//! risks SIGPIPE if psql exits early and the host program has restored the default handler.

use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{tail, TAIL_LINES};
use super::{LocalPgError, LocalPostgres};

/// Numbers the SQL files, so concurrent calls on one server do not share one.
static NEXT_SCRIPT: AtomicU64 = AtomicU64::new(0);

impl LocalPostgres {
    /// Runs `sql` (any number of `;`-separated statements, each in its own transaction unless the
    /// SQL says otherwise) in database `db` as the superuser, stopping at the first error.
    /// Returns psql's unaligned, tuples-only output (`-At`: one row per line, columns joined by
    /// `|`) without its final newline. The error carries psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, LocalPgError> {
        let script = self.root.join(format!(
            "psql-{}.sql",
            NEXT_SCRIPT.fetch_add(1, Ordering::Relaxed)
        ));
        self.runner.write_file(&script, sql)?;
        let mut cmd = self.runner.command(&self.bins.tool("psql"), &self.root);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port().to_string(),
                "-U",
                &self.opts.superuser,
                "-d",
                db,
                "-f",
            ])
            .arg(&script)
            // The output is decoded as UTF-8 below; ask for that rather than rely on psql's
            // locale-dependent default.
            .env("PGCLIENTENCODING", "UTF8");
        let output = cmd.output();
        let _ = std::fs::remove_file(&script);
        let output = output.map_err(|err| LocalPgError::Spawn {
            command: super::runas::describe(&cmd),
            err,
        })?;
        if !output.status.success() {
            return Err(LocalPgError::Psql {
                port: self.port(),
                db: db.to_owned(),
                status: output.status,
                stderr: tail(&String::from_utf8_lossy(&output.stderr), TAIL_LINES),
            });
        }
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if stdout.ends_with('\n') {
            stdout.pop();
        }
        Ok(stdout)
    }
}
