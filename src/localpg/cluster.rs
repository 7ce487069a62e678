//! [`LocalPostgres`]: one throwaway server — its directory, start with port retry, stop, restart,
//! and the `Drop` that stops it and deletes everything (printing its log first when a test is
//! panicking, so the failure shows the server's side).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::error::{tail, TAIL_LINES};
use super::ports::PortLease;
use super::runas::{run, Runner};
use super::{conf, template, LocalPgError, LocalPgOptions, PgBinaries};

/// Every server listens here only.
const HOST: &str = "127.0.0.1";
/// Starts that fail because another process took the port first get this many tries in all.
const PORT_TRIES: u32 = 5;
/// Seconds `pg_ctl` waits for start, stop and promote: generous, because a loaded CI box is slow.
const PG_CTL_TIMEOUT: &str = "60";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Numbers this process's server dirs: `pgbaton-<pid>-<n>`.
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A PostgreSQL server on 127.0.0.1 that lives as long as this value.
#[derive(Debug)]
pub struct LocalPostgres {
    pub(super) bins: PgBinaries,
    pub(super) runner: Runner,
    pub(super) opts: LocalPgOptions,
    /// `$TMPDIR/pgbaton-<pid>-<n>`, holding everything below; removed on drop.
    pub(super) root: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) socket_dir: PathBuf,
    pub(super) log_path: PathBuf,
    pub(super) port: PortLease,
    pub(super) running: bool,
}

impl LocalPostgres {
    /// Starts a server from a copy of the per-process template on a free port (see the module
    /// docs). Blocks until it accepts connections; from async code use `spawn_blocking`.
    pub fn start(opts: &LocalPgOptions) -> Result<LocalPostgres, LocalPgError> {
        let started = Instant::now();
        let runner = Runner::detect()?;
        let (bins, template) = template::prepare(&runner, &opts.superuser)?;
        // Built before anything else is created so that Drop cleans up after any failure below.
        let mut pg = LocalPostgres::allocate(bins, runner, opts.clone())?;
        template::copy_tree(&template, &pg.data_dir, &pg.runner)?;
        conf::write_hba(&pg.data_dir, opts.host_auth, &pg.runner)?;
        pg.launch_on_free_port()?;
        tracing::info!(
            port = pg.port(),
            data_dir = %pg.data_dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "localpg: server started"
        );
        Ok(pg)
    }

    /// A new server directory with its socket dir and a port, but no data dir and no process.
    pub(super) fn allocate(
        bins: PgBinaries,
        runner: Runner,
        opts: LocalPgOptions,
    ) -> Result<LocalPostgres, LocalPgError> {
        let port = PortLease::acquire()?;
        let root = create_server_root(&runner)?;
        let pg = LocalPostgres {
            bins,
            runner,
            opts,
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            log_path: root.join("server.log"),
            root,
            port,
            running: false,
        };
        let socket = pg.socket_dir.join(".s.PGSQL.65535");
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(LocalPgError::SocketPathTooLong { path: socket, len });
        }
        pg.runner.create_private_dir(&pg.socket_dir)?;
        Ok(pg)
    }

    /// `"127.0.0.1"`.
    pub fn host(&self) -> &str {
        HOST
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port.port()
    }

    /// `"127.0.0.1:PORT"`.
    pub fn addr(&self) -> String {
        format!("{HOST}:{}", self.port())
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log file (stderr of the postmaster, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole server log, or an empty string if it cannot be read.
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`), keeping its files for
    /// [`restart`](Self::restart); the next start runs crash recovery. Stopping a stopped server
    /// does nothing.
    pub fn stop(&mut self) -> Result<(), LocalPgError> {
        if !self.running && !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl("stop");
        cmd.args(["-m", "immediate"]);
        run(&mut cmd)?;
        self.running = false;
        tracing::info!(port = self.port(), "localpg: server stopped");
        Ok(())
    }

    /// Starts the server again on the same port (stopping it first if it is running).
    pub fn restart(&mut self) -> Result<(), LocalPgError> {
        self.stop()?;
        self.launch()
    }

    /// Launches, retrying on a fresh port while the chosen one turns out to be taken.
    pub(super) fn launch_on_free_port(&mut self) -> Result<(), LocalPgError> {
        let mut attempt = 1;
        loop {
            match self.launch() {
                Err(LocalPgError::Start { port, log_tail, .. })
                    if attempt < PORT_TRIES && log_tail.contains("Address already in use") =>
                {
                    tracing::debug!(
                        port,
                        attempt,
                        "localpg: port taken meanwhile; trying another"
                    );
                    self.port = PortLease::acquire()?;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Writes this server's settings and runs `pg_ctl start -w` (which returns once the server
    /// accepts connections, or has exited).
    fn launch(&mut self) -> Result<(), LocalPgError> {
        conf::write_server_conf(
            &self.data_dir,
            self.port(),
            &self.socket_dir,
            &self.opts,
            &self.runner,
        )?;
        // Only this attempt's part of the log explains this attempt's failure.
        let log_start = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let mut cmd = self.pg_ctl("start");
        cmd.arg("-l").arg(&self.log_path);
        match run(&mut cmd) {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(err) => {
                let log = self.log_contents();
                let new = log
                    .get(usize::try_from(log_start).unwrap_or(0)..)
                    .unwrap_or(&log);
                Err(LocalPgError::Start {
                    port: self.port(),
                    detail: err.to_string(),
                    log: self.log_path.clone(),
                    log_tail: tail(new, TAIL_LINES),
                })
            }
        }
    }

    /// `pg_ctl <action> -w -t <timeout> -D <data dir>`, run as the owner.
    pub(super) fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = self.runner.command(&self.bins.tool("pg_ctl"), &self.root);
        cmd.args([action, "-w", "-t", PG_CTL_TIMEOUT, "-D"])
            .arg(&self.data_dir);
        cmd
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Not eprintln!: a second panic here (stderr closed) would
            // abort before the server is stopped and its directory removed.
            let _ = writeln!(
                std::io::stderr(),
                "===== pgbaton localpg: log of the server on {} ({}) =====\n{}\n===== end of server log =====",
                self.addr(),
                self.log_path.display(),
                self.log_contents().trim_end()
            );
        }
        // Also covers a start that timed out while the postmaster kept going.
        if let Err(err) = self.stop() {
            tracing::warn!(port = self.port(), %err, "localpg: could not stop server");
        }
        if let Err(err) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), %err, "localpg: could not remove server directory");
        }
    }
}

/// Creates a fresh `$TMPDIR/pgbaton-<pid>-<n>` owned by the runner's owner.
fn create_server_root(runner: &Runner) -> Result<PathBuf, LocalPgError> {
    let tmp = std::env::temp_dir();
    let pid = std::process::id();
    // A name can only exist already if a dead process with our pid left it; skip past it.
    for _ in 0..1000 {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let root = tmp.join(format!("pgbaton-{pid}-{n}"));
        match runner.create_private_dir(&root) {
            Err(LocalPgError::Io { ref err, .. })
                if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            other => return other.map(|()| root),
        }
    }
    Err(LocalPgError::Io {
        action: "finding an unused name for a server directory in",
        path: tmp,
        err: std::io::ErrorKind::AlreadyExists.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forces the race `launch_on_free_port` handles: another process binds the port first.
    #[test]
    fn start_retries_on_a_taken_port() {
        let opts = LocalPgOptions::default();
        let runner = Runner::detect().expect("runner");
        let (bins, template) = template::prepare(&runner, &opts.superuser).expect("template");
        let mut pg = LocalPostgres::allocate(bins, runner, opts).expect("allocate");
        template::copy_tree(&template, &pg.data_dir, &pg.runner).expect("copy");
        conf::write_hba(&pg.data_dir, pg.opts.host_auth, &pg.runner).expect("hba");
        let squatter = std::net::TcpListener::bind((HOST, pg.port())).expect("bind leased port");
        let taken = pg.port();
        pg.launch_on_free_port().expect("start on another port");
        assert_ne!(pg.port(), taken);
        assert!(pg.log_contents().contains("Address already in use"));
        drop(squatter);
    }
}
