//! Benchmark (not a test): a fleet-wide move of N idle sessions with state
//! (settings, a custom setting, a SQL prepared statement, a protocol
//! statement, LISTEN), spread over three replicas on one etcd, against the
//! same N on one replica alone. Prints the total time (from the proposal to
//! the plan done at every replica) and the pause p50/p99/max per replica.
//!
//!     cargo run --release --example fleet_move_bench -- 300 [rounds]
//!
//! The replicas run in this process (each a full proxy with its own cluster
//! agent and plans task) on a single-member etcd started here; the two
//! servers are throwaway local clusters marked `foreign = true`. Goal of
//! the issue: under 5 s in total, pause p99 under 5 ms, and the fleet no
//! more than 1.5 times the single replica's time.

use anyhow::{bail, Context, Result};
use pgbaton::cluster::records::PlanState;
use pgbaton::config::{Config, Overrides, ServerTls, StoreUrl};
use pgbaton::localpg::{LocalPgOptions, LocalPostgres};
use pgbaton::migration::Origin;
use pgbaton::proxy::{Proxy, Shared};
use pgbaton::session::fleet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn start_etcd(dir: &std::path::Path) -> Result<(Child, String)> {
    let (c, p) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{c}");
    let peer_url = format!("http://127.0.0.1:{p}");
    let child = Command::new("etcd")
        .args(["--name", "m0", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("m0={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")?;
    let url = format!("etcd://127.0.0.1:{c}");
    let parsed = StoreUrl::parse(&url).map_err(anyhow::Error::msg)?;
    for _ in 0..100 {
        if pgbaton::cluster::store::open(&parsed, Duration::from_secs(1))
            .await
            .is_ok()
        {
            return Ok((child, url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("etcd did not answer within 10 s")
}

async fn replica(
    n: usize,
    pg: (&LocalPostgres, &LocalPostgres),
    store: Option<(&str, &str)>,
) -> Result<(Arc<Shared>, std::net::SocketAddr)> {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        backends: vec![
            format!("pg1={}", pg.0.addr()),
            format!("pg2={}", pg.1.addr()),
        ],
        auth: Some("trust".into()),
        ..Default::default()
    };
    let cluster = match store {
        Some((url, id)) => {
            format!("[cluster]\nstore = \"{url}\"\nnode_id = \"{id}\"\nlease_ttl = \"2s\"\n")
        }
        None => String::new(),
    };
    let mut config = Config::from_toml(
        &format!(
            "max_clients = {}\nmigration_wait = \"120s\"\n{cluster}",
            n + 10
        ),
        &overrides,
    )?;
    for b in &mut config.backends {
        b.tls = ServerTls::Disable;
        b.foreign = true;
    }
    let proxy = Proxy::bind(
        config,
        pgbaton::admin::console,
        pgbaton::net::busy_poll::BusyPoll::off(),
    )
    .await?;
    let shared = proxy.shared();
    let addr = proxy.local_addr();
    tokio::spawn(proxy.run());
    Ok((shared, addr))
}

/// Opens `n` sessions with state at `shared`'s listener.
async fn sessions(
    addr: std::net::SocketAddr,
    n: usize,
    tag: &str,
) -> Result<Vec<tokio_postgres::Client>> {
    let (host, port) = (addr.ip(), addr.port());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let conn = format!(
            "host={host} port={port} user=postgres dbname=postgres application_name={tag}{i}"
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("session {tag}{i}"))?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET TimeZone = 'Asia/Tokyo'; SET work_mem = '8MB'; SET myapp.tenant = '{tag}{i}'; \
                 PREPARE q(int) AS SELECT $1 * 2; LISTEN jobs"
            ))
            .await?;
        client.prepare("SELECT $1::int + 1").await?;
        out.push(client);
    }
    Ok(out)
}

/// Proposes MIGRATE ALL FROM pg1 TO pg2 at `replicas[0]` and waits for the
/// plan done at every replica. Returns the total time and each replica's
/// pauses.
async fn move_all(replicas: &[Arc<Shared>]) -> Result<(Duration, Vec<Vec<Duration>>)> {
    let before: Vec<usize> = replicas
        .iter()
        .map(|r| r.env.moves.history.list().len())
        .collect();
    let started = Instant::now();
    let (draft, _) = fleet::move_draft(&replicas[0].env, Some("pg1"), "pg2", Origin::Admin)?;
    let id = draft.id.clone();
    fleet::propose(&replicas[0].env, draft)
        .await
        .map_err(|(code, m)| anyhow::anyhow!("{}: {m}", code.code()))?;
    for r in replicas {
        let mut state = r.cluster.plans.watch();
        loop {
            let done = state
                .borrow_and_update()
                .plan
                .as_ref()
                .is_some_and(|(_, p)| p.proposal.id == id && p.state == PlanState::Done);
            if done {
                break;
            }
            tokio::time::timeout(Duration::from_secs(60), state.changed())
                .await
                .context("the plan done within 60 s")??;
        }
    }
    let total = started.elapsed();
    let pauses = replicas
        .iter()
        .zip(before)
        .map(|(r, b)| {
            let mut p: Vec<Duration> = r.env.moves.history.list()[b..]
                .iter()
                .filter_map(|m| m.pause)
                .collect();
            p.sort();
            p
        })
        .collect();
    Ok((total, pauses))
}

fn report(label: &str, total: Duration, pauses: &[Vec<Duration>], names: &[&str]) {
    let moved: usize = pauses.iter().map(Vec::len).sum();
    println!("{label}: {moved} sessions moved in {:.0} ms", ms(total));
    for (p, name) in pauses.iter().zip(names) {
        println!(
            "    replica {name}: {:>4} moved, pause p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            p.len(),
            ms(percentile(p, 0.50)),
            ms(percentile(p, 0.99)),
            ms(p.last().copied().unwrap_or_default())
        );
    }
}

async fn run(n: usize, rounds: usize) -> Result<()> {
    let max = (n + 120).to_string();
    let (pg1, pg2) = tokio::task::spawn_blocking(move || -> Result<_> {
        let opts = LocalPgOptions {
            extra_conf: vec![("max_connections".into(), max)],
            ..Default::default()
        };
        Ok((LocalPostgres::start(&opts)?, LocalPostgres::start(&opts)?))
    })
    .await??;
    let dir = std::env::temp_dir().join(format!("pgbaton-fleet-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (etcd, url) = start_etcd(&dir).await?;

    let (single, single_addr) = replica(n, (&pg1, &pg2), None).await?;
    let ids = ["a", "b", "c"];
    let mut fleet = Vec::new();
    let mut addrs = Vec::new();
    for id in ids {
        let (r, a) = replica(n, (&pg1, &pg2), Some((&url, id))).await?;
        fleet.push(r);
        addrs.push(a);
    }
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let one = sessions(single_addr, n, "solo").await?;
        let (t1, p1) = move_all(std::slice::from_ref(&single)).await?;
        report(&format!("round {round}, one replica"), t1, &p1, &["solo"]);
        drop(one);
        let mut three = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            let share = n / 3 + usize::from(i < n % 3);
            three.push(sessions(*a, share, ids[i]).await?);
        }
        let (t3, p3) = move_all(&fleet).await?;
        report(&format!("round {round}, three replicas"), t3, &p3, &ids);
        let ratio = t3.as_secs_f64() / t1.as_secs_f64();
        println!("    fleet / single: {ratio:.2}");
        ratios.push(ratio);
        drop(three);
        // Back to pg1 for the next round: new sessions go there, and the
        // proxies forget the closed ones.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "fleet / single over {rounds} rounds: median {:.2}",
        ratios[ratios.len() / 2]
    );
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    tokio::task::spawn_blocking(move || drop((pg1, pg2))).await?;
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(Ok(300), |a| a.parse())
        .context("N is a number")?;
    let rounds: usize = args
        .next()
        .map_or(Ok(3), |a| a.parse())
        .context("rounds is a number")?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!("pgbaton fleet move benchmark: {n} idle sessions with state; 2 cores shared by Postgres x2, etcd, the clients and the proxies");
    rt.block_on(run(n, rounds))
}
