//! The configuration each server is started with: `pg_hba.conf` and `pgbaton.conf` (the file the
//! template's `postgresql.conf` includes last, rewritten before every start so the port and
//! socket dir are always this server's, including in a standby copied from its primary).

use std::fmt::Write;
use std::path::Path;

use super::runas::Runner;
use super::{HostAuth, LocalPgError, LocalPgOptions};

/// Writes `pg_hba.conf`: local trust for all, `host_auth` for TCP from loopback, and trusted
/// replication connections so `pg_basebackup` and standbys need no password.
pub(crate) fn write_hba(
    data_dir: &Path,
    auth: HostAuth,
    runner: &Runner,
) -> Result<(), LocalPgError> {
    let method = auth.hba_method();
    // First match wins; "all" as database does not match replication connections, hence the
    // separate replication lines.
    let hba = format!(
        "# Written by pgbaton localpg.\n\
         # TYPE  DATABASE     USER  ADDRESS       METHOD\n\
         local   all          all                 trust\n\
         local   replication  all                 trust\n\
         host    replication  all   127.0.0.1/32  trust\n\
         host    replication  all   ::1/128       trust\n\
         host    all          all   127.0.0.1/32  {method}\n\
         host    all          all   ::1/128       {method}\n"
    );
    runner.write_file(&data_dir.join("pg_hba.conf"), &hba)
}

/// Writes `pgbaton.conf` for a server on `port` with its socket in `socket_dir`.
pub(crate) fn write_server_conf(
    data_dir: &Path,
    port: u16,
    socket_dir: &Path,
    opts: &LocalPgOptions,
    runner: &Runner,
) -> Result<(), LocalPgError> {
    let password_encryption = match opts.host_auth {
        // md5 auth against a SCRAM-stored password silently becomes SCRAM; store md5 so that
        // HostAuth::Md5 really exercises the md5 exchange.
        HostAuth::Md5 => "md5",
        _ => "scram-sha-256",
    };
    let settings: [(&str, String); 11] = [
        ("listen_addresses", "127.0.0.1".to_owned()),
        ("port", port.to_string()),
        ("unix_socket_directories", socket_dir.display().to_string()),
        // Throwaway servers: surviving an OS crash buys nothing. synchronous_commit stays on:
        // with fsync off a commit costs one write(2), and "off" loses the last commits on the
        // immediate stop() that failure tests restart from (measured: no speed difference).
        ("fsync", "off".to_owned()),
        ("full_page_writes", "off".to_owned()),
        ("max_connections", "200".to_owned()),
        // Enough for pg_basebackup (two senders with -X stream) and standbys.
        ("wal_level", "replica".to_owned()),
        ("max_wal_senders", "4".to_owned()),
        // pg_ctl -l captures stderr into the log file that log_contents() reads.
        ("logging_collector", "off".to_owned()),
        ("lc_messages", "C".to_owned()),
        ("password_encryption", password_encryption.to_owned()),
    ];
    let mut text =
        String::from("# Written by pgbaton localpg before every start; later lines win.\n");
    let extra = opts.extra_conf.iter().map(|(k, v)| (k.as_str(), v.clone()));
    for (key, value) in settings.into_iter().chain(extra) {
        let _ = writeln!(text, "{key} = {}", quote(&value));
    }
    runner.write_file(&data_dir.join("pgbaton.conf"), &text)
}

/// A `postgresql.conf` string literal: single quotes, embedded ones doubled, backslashes escaped.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quotes_values() {
        assert_eq!(quote("200"), "'200'");
        assert_eq!(quote("it's"), "'it''s'");
        assert_eq!(quote(r"a\b"), r"'a\\b'");
    }
}
