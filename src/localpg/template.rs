//! The per-process `initdb` template, the copy of it each server starts from, and the cleanup of
//! directories left behind by dead processes.
//!
//! `initdb` takes about a second; copying its output takes a fraction of that, so it runs once per
//! process (once per superuser name, which initdb bakes in) into
//! `$TMPDIR/pgbaton-template-<pid>`, under a mutex so concurrent first starts wait for one run.
//! The template is removed by an `atexit` hook; a process killed by a signal cannot do that, so
//! creating a template also deletes `pgbaton-*` directories whose process is gone, stopping any
//! server still running in them first.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::runas::{run, Runner};
use super::{LocalPgError, PgBinaries};

/// Per-process state: the binaries the template was made with, and one data dir per superuser.
struct State {
    bins: PgBinaries,
    root: PathBuf,
    clusters: Vec<(String, PathBuf)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
/// Read by the `atexit` hook, which cannot take arguments.
static EXIT_ROOT: OnceLock<PathBuf> = OnceLock::new();

/// The binaries to use and a template data dir for `superuser`, creating it on first use.
pub(crate) fn prepare(
    runner: &Runner,
    superuser: &str,
) -> Result<(PgBinaries, PathBuf), LocalPgError> {
    // Nothing here panics while holding the lock, but a poisoned lock would hold valid data anyway.
    let mut guard = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    let state = match guard.take() {
        Some(state) => state,
        None => init_state(runner)?,
    };
    let state = guard.insert(state);
    if let Some((_, dir)) = state.clusters.iter().find(|(su, _)| su == superuser) {
        return Ok((state.bins.clone(), dir.clone()));
    }
    let dir = state.root.join(format!("data-{}", state.clusters.len()));
    initdb(&state.bins, runner, &state.root, &dir, superuser)?;
    state.clusters.push((superuser.to_owned(), dir.clone()));
    Ok((state.bins.clone(), dir))
}

fn init_state(runner: &Runner) -> Result<State, LocalPgError> {
    let bins = PgBinaries::locate()?;
    remove_stale(&bins, runner);
    let root = std::env::temp_dir().join(format!("pgbaton-template-{}", std::process::id()));
    // Only a dead process that had our pid can have left this behind.
    if root.exists() {
        fs::remove_dir_all(&root).map_err(LocalPgError::io("removing stale template", &root))?;
    }
    runner.create_private_dir(&root)?;
    if EXIT_ROOT.set(root.clone()).is_ok() {
        // SAFETY: registers a plain function that touches only a static; atexit has no other
        // preconditions. Its result is ignored: failing to register only leaves a dir that the
        // next process's stale cleanup removes.
        unsafe { libc::atexit(remove_template_at_exit) };
    }
    Ok(State {
        bins,
        root,
        clusters: Vec::new(),
    })
}

extern "C" fn remove_template_at_exit() {
    if let Some(root) = EXIT_ROOT.get() {
        let _ = fs::remove_dir_all(root);
    }
}

fn initdb(
    bins: &PgBinaries,
    runner: &Runner,
    root: &Path,
    dir: &Path,
    superuser: &str,
) -> Result<(), LocalPgError> {
    let started = std::time::Instant::now();
    let mut cmd = runner.command(&bins.tool("initdb"), root);
    cmd.arg("-D").arg(dir).args(["-U", superuser]);
    // Local and host trust here; each server writes its own pg_hba.conf. C locale: fast,
    // identical everywhere. --no-sync: nobody needs the template to survive a power cut.
    cmd.args(["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
    if let Err(err) = run(&mut cmd) {
        let _ = fs::remove_dir_all(dir);
        return Err(err);
    }
    // Settings that differ per server (port, socket dir, options) live in a file each server
    // rewrites; included last so they override initdb's defaults above.
    let conf = dir.join("postgresql.conf");
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .and_then(|mut f| {
            f.write_all(
                b"\n# Added by pgbaton localpg: per-server settings.\ninclude 'pgbaton.conf'\n",
            )
        })
        .map_err(LocalPgError::io("appending to", &conf))?;
    tracing::debug!(template = %dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "localpg: initdb done");
    Ok(())
}

/// Copies the template `src` to the new data dir `dst` (which must not exist), keeping modes and
/// giving every entry to the runner's owner. Data dirs hold plain files, dirs and maybe symlinks.
pub(crate) fn copy_tree(src: &Path, dst: &Path, runner: &Runner) -> Result<(), LocalPgError> {
    let meta = fs::symlink_metadata(src).map_err(LocalPgError::io("reading", src))?;
    fs::create_dir(dst).map_err(LocalPgError::io("creating directory", dst))?;
    fs::set_permissions(dst, meta.permissions())
        .map_err(LocalPgError::io("setting mode of", dst))?;
    runner.chown(dst)?;
    for entry in fs::read_dir(src).map_err(LocalPgError::io("listing", src))? {
        let entry = entry.map_err(LocalPgError::io("listing", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(LocalPgError::io("reading", &from))?;
        if kind.is_dir() {
            copy_tree(&from, &to, runner)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&from).map_err(LocalPgError::io("reading link", &from))?;
            std::os::unix::fs::symlink(target, &to)
                .map_err(LocalPgError::io("creating link", &to))?;
            runner.chown(&to)?;
        } else {
            // fs::copy also copies the permission bits.
            fs::copy(&from, &to).map_err(LocalPgError::io("copying to", &to))?;
            runner.chown(&to)?;
        }
    }
    Ok(())
}

/// Deletes `pgbaton-<pid>-<n>` and `pgbaton-template-<pid>` dirs whose process is gone, after
/// stopping any server still running from one (a SIGKILLed test leaves its postmaster behind).
/// Best effort: whatever cannot be removed is left for a later run.
fn remove_stale(bins: &PgBinaries, runner: &Runner) {
    let tmp = std::env::temp_dir();
    let Ok(entries) = fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(owner_pid) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let dir = entry.path();
        let data = dir.join("data");
        if data.join("postmaster.pid").exists() {
            let mut cmd = runner.command(&bins.tool("pg_ctl"), &tmp);
            cmd.args(["stop", "-m", "immediate", "-D"]).arg(&data);
            let _ = run(&mut cmd);
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "localpg: removed stale directory"),
            Err(err) => {
                tracing::debug!(dir = %dir.display(), %err, "localpg: cannot remove stale directory")
            }
        }
    }
}

/// The pid in a name this module creates, or `None` for any other name.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pgbaton-")?;
    if let Some(pid) = rest.strip_prefix("template-") {
        return pid.parse().ok();
    }
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Whether a process with this pid exists (EPERM means it exists but is not ours).
fn process_alive(pid: u32) -> bool {
    match libc::pid_t::try_from(pid) {
        // pid 0 or negative would address process groups: treat as alive, i.e. leave alone.
        Ok(pid) if pid > 0 => {
            // SAFETY: signal 0 sends nothing; it only checks that the process exists.
            let rc = unsafe { libc::kill(pid, 0) };
            rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_our_names() {
        assert_eq!(owner_pid("pgbaton-template-123"), Some(123));
        assert_eq!(owner_pid("pgbaton-123-4"), Some(123));
        assert_eq!(owner_pid("pgbaton-123"), None);
        assert_eq!(owner_pid("pgbaton-demo-4"), None);
        assert_eq!(owner_pid("pgbaton-template-x"), None);
        assert_eq!(owner_pid("other-123-4"), None);
    }

    #[test]
    fn we_are_alive() {
        assert!(process_alive(std::process::id()));
    }
}
