//! [`PgBinaries`]: where the PostgreSQL server tools (initdb, pg_ctl, psql, ...) are installed.
//!
//! Debian and Ubuntu keep the server tools out of `PATH` (in `/usr/lib/postgresql/<major>/bin`),
//! so `PATH` alone is no use; the search order is `PG_BINDIR`, `pg_config --bindir`, then the
//! newest version under `/usr/lib/postgresql`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::LocalPgError;

/// Where Debian-family packages install each major version's server binaries.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// A directory holding the PostgreSQL server binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    bindir: PathBuf,
}

impl PgBinaries {
    /// Finds the server binaries: the `PG_BINDIR` environment variable, else
    /// `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`. A place counts only
    /// if it holds an executable `initdb` (Debian's `libpq-dev` ships a `pg_config` but no server).
    pub fn locate() -> Result<PgBinaries, LocalPgError> {
        // An explicit setting that is wrong is an error, not a reason to guess elsewhere.
        if let Some(dir) = std::env::var_os("PG_BINDIR").filter(|v| !v.is_empty()) {
            return PgBinaries::at(dir);
        }
        let mut tried = vec!["PG_BINDIR is not set".to_owned()];
        match pg_config_bindir() {
            Ok(dir) if has_initdb(&dir) => return Ok(PgBinaries { bindir: dir }),
            Ok(dir) => tried.push(format!(
                "`pg_config --bindir` names {} but it has no initdb (client tools only?)",
                dir.display()
            )),
            Err(why) => tried.push(format!("`pg_config --bindir` {why}")),
        }
        match newest_versioned_bindir(Path::new(DEBIAN_ROOT)) {
            Some(dir) => return Ok(PgBinaries { bindir: dir }),
            None => tried.push(format!("no {DEBIAN_ROOT}/<version>/bin/initdb")),
        }
        Err(LocalPgError::BinariesNotFound {
            tried: tried.join("; "),
        })
    }

    /// Uses `bindir` as given, if it holds `initdb`.
    pub fn at(bindir: impl Into<PathBuf>) -> Result<PgBinaries, LocalPgError> {
        let bindir = bindir.into();
        if has_initdb(&bindir) {
            Ok(PgBinaries { bindir })
        } else {
            Err(LocalPgError::BadBinDir(bindir))
        }
    }

    /// The directory holding the binaries.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The path of one tool, e.g. `tool("pg_ctl")`. Does not check that it exists.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// True if `dir/initdb` is a file with an execute bit set.
fn has_initdb(dir: &Path) -> bool {
    std::fs::metadata(dir.join("initdb"))
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What `pg_config --bindir` prints, or why it printed nothing usable.
fn pg_config_bindir() -> Result<PathBuf, String> {
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!("failed ({})", out.status));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if dir.is_empty() {
        return Err("printed nothing".to_owned());
    }
    Ok(PathBuf::from(dir))
}

/// The `bin` dir of the highest version under `root` (e.g. `root/16/bin`) that has `initdb`.
fn newest_versioned_bindir(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else is not a version directory.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(parse_version("10") > parse_version("9.6"));
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("common"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn picks_newest_version_with_initdb() {
        let root = std::env::temp_dir().join(format!("localpg-bintest-{}", std::process::id()));
        for (version, with_initdb) in [("9.6", true), ("10", true), ("16", false), ("common", true)]
        {
            let bin = root.join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            if with_initdb {
                std::fs::write(bin.join("initdb"), "").unwrap();
                std::fs::set_permissions(bin.join("initdb"), PermissionsExt::from_mode(0o755))
                    .unwrap();
            }
        }
        let found = newest_versioned_bindir(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, Some(root.join("10").join("bin")));
    }

    #[test]
    fn at_rejects_dir_without_initdb() {
        let err = PgBinaries::at(std::env::temp_dir()).unwrap_err();
        assert!(err.to_string().contains("PG_BINDIR"), "{err}");
    }
}
