//! Running the PostgreSQL tools as the right OS user, with an environment that cannot steer them.
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root. When our effective uid is 0 every
//! tool runs as the `postgres` OS user (via `CommandExt::uid/gid`, so no `runuser`/`su` is
//! needed) and every file we create for the server is chowned to it; otherwise tools run as us.

use std::ffi::CString;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::error::{tail, TAIL_LINES};
use super::LocalPgError;

/// The account the server runs as when we are root (the one Debian's packages create).
const SERVICE_USER: &str = "postgres";

/// Who runs the tools and owns the server files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Runner {
    /// `(uid, gid)` to switch to, or `None` to run as ourselves.
    owner: Option<(u32, u32)>,
}

impl Runner {
    /// Runs as `postgres` when we are root, else as the current user.
    pub(crate) fn detect() -> Result<Runner, LocalPgError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Runner { owner: None });
        }
        match lookup_user(SERVICE_USER) {
            Some(owner) => Ok(Runner { owner: Some(owner) }),
            None => Err(LocalPgError::NoServiceUser(SERVICE_USER.to_owned())),
        }
    }

    /// A command for `program`, run as the owner from `cwd`, with a scrubbed environment.
    ///
    /// `cwd` must be a directory the owner can enter: the tools complain when they cannot
    /// resolve their working directory (ours may be under /root).
    pub(crate) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd).stdin(Stdio::null());
        // A process group of its own (the postmaster pg_ctl forks inherits
        // it): a Ctrl-C at the terminal reaches pgbaton alone, which then
        // closes its sessions and stops and removes the servers in order,
        // instead of each server shutting down under live sessions.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // PGDATA, PGHOST, PGPORT, PGUSER, PGOPTIONS, PGSERVICE... would override or add to what
        // we pass; the tools must see only our arguments.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        // English messages, so the "Address already in use" check in `cluster` can match.
        cmd.env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            // std calls setgroups(0) before setuid, so root's supplementary groups are dropped.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Gives `path` to the owner (no-op when not root). Does not follow symlinks.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), LocalPgError> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .map_err(LocalPgError::io("changing the owner of", path)),
            None => Ok(()),
        }
    }

    /// Creates `path` with mode 0700 (PostgreSQL insists on it for data dirs) for the owner.
    /// Fails if it exists.
    pub(crate) fn create_private_dir(&self, path: &Path) -> Result<(), LocalPgError> {
        DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(LocalPgError::io("creating directory", path))?;
        self.chown(path)
    }

    /// Writes `contents` to `path` (mode 0600 if new), owned by the owner.
    pub(crate) fn write_file(&self, path: &Path, contents: &str) -> Result<(), LocalPgError> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .map_err(LocalPgError::io("writing", path))?;
        self.chown(path)
    }
}

/// Runs `cmd` to completion, capturing its output; an unsuccessful exit is an error that carries
/// the tail of stderr (or of stdout, where e.g. initdb says what went wrong).
pub(crate) fn run(cmd: &mut Command) -> Result<Output, LocalPgError> {
    tracing::debug!(command = %describe(cmd), "localpg: running");
    let out = cmd.output().map_err(|err| LocalPgError::Spawn {
        command: describe(cmd),
        err,
    })?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        stderr
    };
    Err(LocalPgError::Command {
        command: describe(cmd),
        status: out.status,
        output: tail(&text, TAIL_LINES),
    })
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// `(uid, gid)` of the OS user `name`, or `None` if there is no such user.
///
/// Uses `getpwnam_r`, not `getpwnam`: the latter returns a static buffer that another thread
/// starting a server at the same moment could overwrite.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: `passwd` is a plain C struct of integers and pointers; all-zero is valid.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is the buffer's real size;
        // the strings written into `buf` are not read after it is dropped.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some((pwd.pw_uid, pwd.pw_gid));
    }
}

#[cfg(test)]
mod tests {
    use super::{lookup_user, run, Runner};
    use std::path::Path;

    #[test]
    fn tools_run_without_root_privileges() {
        let runner = Runner::detect().expect("runner");
        let mut cmd = runner.command(Path::new("id"), Path::new("/"));
        cmd.arg("-G");
        let out = run(&mut cmd).expect("id -G");
        let groups = String::from_utf8_lossy(&out.stdout);
        if runner.owner.is_some() {
            // Neither uid 0 nor root's group 0 may survive the switch.
            assert!(
                !groups.split_whitespace().any(|g| g == "0"),
                "groups: {groups}"
            );
            let mut cmd = runner.command(Path::new("id"), Path::new("/"));
            let uid = run(cmd.arg("-u")).expect("id -u");
            assert_ne!(String::from_utf8_lossy(&uid.stdout).trim(), "0");
        }
    }

    #[test]
    fn looks_up_root_and_not_nonsense() {
        assert_eq!(lookup_user("root"), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-pgbaton"), None);
        assert_eq!(lookup_user("nul\0byte"), None);
    }
}
