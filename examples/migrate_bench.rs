//! Benchmark (not a test): moves N idle sessions, each with state (settings,
//! a custom setting, a SQL prepared statement, a protocol statement, LISTEN),
//! from one throwaway server to another, and prints the total time, sessions
//! per second, and the per-session pause (p50, p99, max) from SHOW
//! MIGRATIONS' records.
//!
//!     cargo run --release --example migrate_bench -- 100 1000
//!
//! The servers are two independent local clusters marked `foreign = true`,
//! with max_connections raised to fit the sessions and the moves in flight.

use anyhow::{Context, Result};
use pgbaton::config::{Config, Overrides, ServerTls};
use pgbaton::localpg::{LocalPgOptions, LocalPostgres};
use pgbaton::migration::history::Status;
use pgbaton::migration::Origin;
use pgbaton::proxy::Proxy;
use pgbaton::session::fleet;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run(n: usize) -> Result<()> {
    // Each server holds at most the n sessions plus the few being moved
    // (pre-staging is limited): size for that, as a deployment would.
    let max = (n + 60).to_string();
    let (pg1, pg2) = tokio::task::spawn_blocking(move || -> Result<_> {
        let opts = LocalPgOptions {
            extra_conf: vec![("max_connections".into(), max)],
            ..Default::default()
        };
        Ok((LocalPostgres::start(&opts)?, LocalPostgres::start(&opts)?))
    })
    .await??;
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        backends: vec![format!("pg1={}", pg1.addr()), format!("pg2={}", pg2.addr())],
        auth: Some("trust".into()),
        ..Default::default()
    };
    let mut config = Config::from_toml(&format!("max_clients = {}", n + 10), &overrides)?;
    for b in &mut config.backends {
        b.tls = ServerTls::Disable;
        b.foreign = true;
    }
    config.migration_wait = Duration::from_secs(120);
    let proxy = Proxy::bind(
        config,
        pgbaton::admin::console,
        pgbaton::net::busy_poll::BusyPoll::off(),
    )
    .await?;
    let addr = proxy.local_addr();
    let shared = proxy.shared();
    tokio::spawn(proxy.run());

    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let conn = format!(
            "host={} port={} user=postgres dbname=postgres application_name=bench{i}",
            addr.ip(),
            addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("session {i}"))?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET TimeZone = 'Asia/Tokyo'; SET work_mem = '8MB'; SET myapp.tenant = 't{i}'; \
                 PREPARE q(int) AS SELECT $1 * 2; LISTEN jobs"
            ))
            .await?;
        let stmt = client.prepare("SELECT $1::int + 1").await?;
        clients.push((client, stmt));
    }
    let before = shared.env.moves.history.list().len();
    let started = Instant::now();
    // A fleet-wide plan of one replica: proposed, decided by this replica
    // as the leader of its in-memory store, carried out on its sessions.
    let (draft, moving) = fleet::move_draft(&shared.env, Some("pg1"), "pg2", Origin::Admin)?;
    fleet::propose(&shared.env, draft)
        .await
        .map_err(|(code, m)| anyhow::anyhow!("{}: {m}", code.code()))?;
    // Wait for every record to finish (the moves run on the sessions' tasks).
    loop {
        let records = shared.env.moves.history.list();
        let done = records[before.min(records.len())..]
            .iter()
            .filter(|r| r.status != Status::Waiting)
            .count();
        if done >= moving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    let records = shared.env.moves.history.list();
    let mine = &records[before..];
    let aborted: Vec<_> = mine
        .iter()
        .filter(|r| r.status == Status::Aborted)
        .collect();
    let mut pauses: Vec<Duration> = mine.iter().filter_map(|r| r.pause).collect();
    pauses.sort();
    // Every session still works, on pg2, with its statement.
    for (client, stmt) in &clients {
        let v: i32 = client.query_one(stmt, &[&41i32]).await?.get(0);
        anyhow::ensure!(v == 42, "a moved session answers wrong");
    }
    println!(
        "{n:>5} sessions: moved {} ({} aborted) in {:.3} s = {:.0} sessions/s; pause p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        pauses.len(),
        aborted.len(),
        total.as_secs_f64(),
        pauses.len() as f64 / total.as_secs_f64(),
        percentile(&pauses, 0.50).as_secs_f64() * 1e3,
        percentile(&pauses, 0.99).as_secs_f64() * 1e3,
        pauses.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if let Some(r) = aborted.first() {
        println!("      first abort: {:?}", r.reason);
    }
    drop(clients);
    tokio::task::spawn_blocking(move || drop((pg1, pg2))).await?;
    Ok(())
}

fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("sizes are numbers"))
        .collect::<Result<_>>()?;
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("pgbaton move benchmark: idle sessions with state, 2 cores shared by Postgres x2, clients and proxy");
    for n in sizes {
        rt.block_on(run(n))?;
    }
    Ok(())
}
