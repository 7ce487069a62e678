//! `pgbaton demo`: the first thing a new user runs. Starts two throwaway local
//! Postgres servers with the same small schema, runs a proxy in front of them
//! with trust auth on loopback, prints the psql commands to try, and removes
//! everything on Ctrl-C or SIGTERM.

use crate::config::{Config, Overrides};
use crate::localpg::{LocalPgOptions, LocalPostgres, PgBinaries};
use crate::net::busy_poll::BusyPoll;
use crate::proxy::Proxy;
use crate::say;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error(transparent)]
    LocalPg(#[from] crate::localpg::LocalPgError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("demo server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Fleet(String),
}

/// The schema loaded into both servers, so a moved session finds its tables.
const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
INSERT INTO accounts SELECT g, 'owner ' || g, 100 * g FROM generate_series(1, 10) AS g;
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), note text);
";

pub async fn run(listen: &str, replicas: u16) -> Result<(), DemoError> {
    // Fail early, with what to install, before starting anything.
    PgBinaries::locate()?;
    // Listen for Ctrl-C and SIGTERM before anything exists: a signal during
    // start-up is then handled after it, and everything is still removed.
    let mut stop = Signals::new();
    let (pg1, pg2) = tokio::task::spawn_blocking(|| -> Result<_, DemoError> {
        let opts = LocalPgOptions::default();
        let pg1 = LocalPostgres::start(&opts)?;
        let pg2 = LocalPostgres::start(&opts)?;
        for pg in [&pg1, &pg2] {
            pg.psql("postgres", "CREATE DATABASE demo")?;
            pg.psql("demo", SCHEMA)?;
        }
        Ok((pg1, pg2))
    })
    .await??;

    let overrides = Overrides {
        listen: Some(listen.to_string()),
        backends: vec![format!("pg1={}", pg1.addr()), format!("pg2={}", pg2.addr())],
        auth: Some("trust".into()),
        admin_users: vec!["postgres".into()],
        ..Default::default()
    };
    if replicas > 1 {
        let result = fleet(listen, replicas, &pg1, &pg2, &mut stop).await;
        tokio::task::spawn_blocking(move || drop((pg1, pg2))).await?;
        say!("done.");
        return result;
    }
    let mut config = Config::from_toml("", &overrides)?;
    config.shutdown_timeout = std::time::Duration::from_secs(2);
    for b in &mut config.backends {
        b.tls = crate::config::ServerTls::Disable;
    }
    let proxy = Proxy::bind(config, crate::admin::console, BusyPoll::off()).await?;
    let addr = proxy.local_addr();
    let (host, port) = (addr.ip(), addr.port());
    say!("pgbaton demo is running: two throwaway Postgres servers behind a proxy.");
    say!();
    say!("  pg1 (default)  {}      pg2  {}", pg1.addr(), pg2.addr());
    say!("  proxy          {addr}   (trust auth, loopback only)");
    say!();
    say!("Connect through pgbaton:");
    say!("  psql \"host={host} port={port} user=postgres dbname=demo\"");
    say!("Open the admin console (SHOW SESSIONS, SHOW MIGRATIONS, MIGRATE SESSION ...):");
    say!("  psql \"host={host} port={port} user=postgres dbname=pgbaton\"");
    say!("Move your session to pg2, inside psql (the port it answers from changes):");
    say!(
        "  SELECT inet_server_port();  /* pgbaton: migrate to=pg2 */;  SELECT inet_server_port();"
    );
    say!();
    say!("Press Ctrl-C to stop; everything the demo created is removed.");

    let handle = proxy.handle();
    let running = tokio::spawn(proxy.run());
    stop.recv().await;
    say!("\nstopping: closing sessions and removing the demo servers...");
    handle.shutdown();
    let _ = running.await;
    // Dropping the servers stops them and removes their directories.
    tokio::task::spawn_blocking(move || drop((pg1, pg2))).await?;
    say!("done.");
    Ok(())
}

/// `--replicas N`: N pgbaton processes on consecutive ports, sharing a
/// Postgres coordination store in pg1's `postgres` database, so a user can
/// watch `SHOW CLUSTER` and kill -9 the leader.
async fn fleet(
    listen: &str,
    replicas: u16,
    pg1: &LocalPostgres,
    pg2: &LocalPostgres,
    stop: &mut Signals,
) -> Result<(), DemoError> {
    let first: std::net::SocketAddr = listen
        .parse()
        .map_err(|e| DemoError::Fleet(format!("--listen {listen:?}: {e}")))?;
    let exe = std::env::current_exe()
        .map_err(|e| DemoError::Fleet(format!("cannot find the pgbaton binary: {e}")))?;
    let dir = std::env::temp_dir().join(format!("pgbaton-demo-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| DemoError::Fleet(format!("cannot create {}: {e}", dir.display())))?;
    let store = format!("postgres://postgres@{}/postgres", pg1.addr());
    let mut children = Vec::new();
    for k in 0..replicas {
        let port = first.port() + k;
        let id = format!("r{}", k + 1);
        let config = format!(
            "listen = \"{}:{port}\"\nauth = \"trust\"\nadmin_users = [\"postgres\"]\n\
             shutdown_timeout = \"2s\"\n\
             [cluster]\nstore = \"{store}\"\nnode_id = \"{id}\"\nlease_ttl = \"3s\"\n\
             [[backends]]\nname = \"pg1\"\nhost = \"{}\"\nport = {}\ntls = \"disable\"\n\
             [[backends]]\nname = \"pg2\"\nhost = \"{}\"\nport = {}\ntls = \"disable\"\n",
            first.ip(),
            pg1.host(),
            pg1.port(),
            pg2.host(),
            pg2.port()
        );
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, config)
            .map_err(|e| DemoError::Fleet(format!("cannot write {}: {e}", path.display())))?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DemoError::Fleet(format!("cannot start replica {id}: {e}")))?;
        children.push((id, port, child));
    }
    let host = first.ip();
    say!(
        "pgbaton demo is running: {replicas} replicas in front of two throwaway Postgres servers."
    );
    say!();
    say!("  pg1 (default)  {}      pg2  {}", pg1.addr(), pg2.addr());
    for (id, port, child) in &children {
        say!(
            "  replica {id}     {host}:{port}   pid {}",
            child.id().unwrap_or(0)
        );
    }
    say!("  store          {store} (tables in schema pgbaton)");
    say!();
    say!("See the fleet, its leader and each node's failures, at any replica:");
    let p0 = first.port();
    say!("  psql \"host={host} port={p0} user=postgres dbname=pgbaton\" -c 'SHOW CLUSTER'");
    say!("Kill the leader (its pid is above) and watch another take over within a few seconds:");
    say!("  kill -9 <pid of the leader>");
    say!("Connect through any replica:");
    say!("  psql \"host={host} port={p0} user=postgres dbname=demo\"");
    say!();
    say!("Press Ctrl-C to stop; everything the demo created is removed.");
    stop.recv().await;
    say!("\nstopping: the replicas resign and close their sessions...");
    for (_, _, child) in &children {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for (_, _, mut child) in children {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Ctrl-C and SIGTERM, registered when created.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.int) => {}
            _ = one(&mut self.term) => {}
        }
    }
}
