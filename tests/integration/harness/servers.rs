//! Postgres servers for tests: throwaway local ones (via `pgbaton::localpg`),
//! or existing ones from `PGBATON_TEST_SERVERS=host:port,host:port` with the
//! superuser from `PGBATON_TEST_USER` / `PGBATON_TEST_PASSWORD`.

use pgbaton::localpg::{LocalPgOptions, LocalPostgres};
use std::process::Command;

pub enum TestServer {
    Local(LocalPostgres),
    External { host: String, port: u16 },
}

impl TestServer {
    pub fn host(&self) -> String {
        match self {
            TestServer::Local(pg) => pg.host().to_string(),
            TestServer::External { host, .. } => host.clone(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            TestServer::Local(pg) => pg.port(),
            TestServer::External { port, .. } => *port,
        }
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }

    pub fn local(&self) -> &LocalPostgres {
        match self {
            TestServer::Local(pg) => pg,
            TestServer::External { .. } => {
                panic!("this test needs a local server it can configure")
            }
        }
    }

    pub fn local_mut(&mut self) -> &mut LocalPostgres {
        match self {
            TestServer::Local(pg) => pg,
            TestServer::External { .. } => {
                panic!("this test needs a local server it can configure")
            }
        }
    }

    /// Runs SQL as the superuser and returns psql's unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        match self {
            TestServer::Local(pg) => pg
                .psql(db, sql)
                .unwrap_or_else(|e| panic!("psql on {}: {e}", self.addr())),
            TestServer::External { host, port } => {
                let out = Command::new("psql")
                    .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
                    .args([
                        "-h",
                        host,
                        "-p",
                        &port.to_string(),
                        "-U",
                        &superuser(),
                        "-d",
                        db,
                        "-c",
                        sql,
                    ])
                    .output()
                    .expect("psql runs");
                assert!(
                    out.status.success(),
                    "psql on {host}:{port}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).trim_end().to_string()
            }
        }
    }

    /// A direct tokio-postgres connection as the superuser (bypassing pgbaton).
    pub async fn connect_direct(&self, db: &str) -> tokio_postgres::Client {
        let mut conf = format!(
            "host={} port={} user={} dbname={db}",
            self.host(),
            self.port(),
            superuser()
        );
        if let Ok(pw) = std::env::var("PGBATON_TEST_PASSWORD") {
            conf.push_str(&format!(" password={pw}"));
        }
        let (client, conn) = tokio_postgres::connect(&conf, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("direct connection to {}: {e}", self.addr()));
        tokio::spawn(conn);
        client
    }
}

pub fn superuser() -> String {
    std::env::var("PGBATON_TEST_USER").unwrap_or_else(|_| "postgres".into())
}

fn external() -> Option<Vec<(String, u16)>> {
    let list = std::env::var("PGBATON_TEST_SERVERS").ok()?;
    let servers = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (h, p) = s
                .trim()
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("PGBATON_TEST_SERVERS entry {s:?} is not host:port"));
            (h.to_string(), p.parse().expect("port"))
        })
        .collect();
    Some(servers)
}

/// `n` servers with default settings: external ones when configured.
pub async fn start_servers(n: usize) -> Vec<TestServer> {
    if let Some(ext) = external() {
        assert!(
            ext.len() >= n,
            "this test needs {n} servers; PGBATON_TEST_SERVERS names {}",
            ext.len()
        );
        return ext
            .into_iter()
            .take(n)
            .map(|(host, port)| TestServer::External { host, port })
            .collect();
    }
    start_servers_with(n, LocalPgOptions::default()).await
}

/// `n` local servers with the given options (always local: the test
/// configures them).
pub async fn start_servers_with(n: usize, opts: LocalPgOptions) -> Vec<TestServer> {
    super::init_tracing();
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                TestServer::Local(
                    LocalPostgres::start(&opts)
                        .unwrap_or_else(|e| panic!("starting Postgres: {e}")),
                )
            })
            .collect()
    })
    .await
    .expect("server start task")
}
