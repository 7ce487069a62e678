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
}

/// The schema loaded into both servers, so a moved session finds its tables.
const SCHEMA: &str = "
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL);
INSERT INTO accounts SELECT g, 'owner ' || g, 100 * g FROM generate_series(1, 10) AS g;
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), note text);
";

pub async fn run(listen: &str) -> Result<(), DemoError> {
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
