//! How long a fleet is without a leader when its leader dies, per store.
//!
//! Three pgbaton replicas (the release binary) share a store: a Postgres
//! control database (a throwaway local server) or a single etcd member.
//! Each round kills the leader with SIGKILL, reads from the replicas'
//! histories when a new leader took its term, restarts the killed replica,
//! and waits for it to rejoin. Meanwhile a client of a surviving replica
//! runs `SELECT 1` every 5 ms: a leader change must never reach it.
//!
//! ```sh
//! cargo build --release && cargo run --release --example leader_failover -- [ROUNDS] [STORES]
//! cargo run --release --example leader_failover -- 20 "postgres etcd"
//! ```
//! Prints p50, p99 and max of the time to a new leader per store, and the
//! goal: p99 under 1.5 lease TTLs (TTL 2 s).

use anyhow::{bail, Context};
use pgbaton::cluster::history::{self, mono_us};
use pgbaton::localpg::{LocalPgOptions, LocalPostgres};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

const TTL: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn pgbaton_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("PGBATON_BIN") {
        return Ok(p.into());
    }
    // target/release/examples/leader_failover -> target/release/pgbaton
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("pgbaton"))
        .context("no parent directory")?;
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --release` first",
            bin.display()
        );
    }
    Ok(bin)
}

struct Replica {
    id: String,
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

async fn spawn(bin: &Path, r: &mut Replica, dir: &Path) -> anyhow::Result<()> {
    let log = std::fs::File::create(dir.join(format!("{}.log", r.id)))?;
    r.child = Some(
        Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&r.config)
            .env("RUST_LOG", "pgbaton=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?,
    );
    Ok(())
}

async fn client(port: u16, db: &str) -> Option<tokio_postgres::Client> {
    let conn = format!("host=127.0.0.1 port={port} user=postgres dbname={db} connect_timeout=1");
    let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(c)
}

/// The leader and the node count replica `port` shows.
async fn cluster(port: u16) -> Option<(Option<String>, usize)> {
    let c = client(port, "pgbaton").await?;
    let msgs = tokio::time::timeout(Duration::from_secs(1), c.simple_query("SHOW CLUSTER"))
        .await
        .ok()?
        .ok()?;
    let mut leader = None;
    let mut n = 0;
    for m in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            n += 1;
            if r.get("role") == Some("leader") {
                leader = r.get("node").map(str::to_string);
            }
        }
    }
    Some((leader, n))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run_store(
    bin: &Path,
    kind: &str,
    rounds: usize,
    pg: &LocalPostgres,
) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("pgbaton-failover-{kind}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut etcd: Option<Child> = None;
    let store = match kind {
        "postgres" => {
            // A fresh control schema for each run.
            pg.psql("postgres", "DROP SCHEMA IF EXISTS pgbaton CASCADE")?;
            format!("postgres://postgres@{}/postgres", pg.addr())
        }
        "etcd" => {
            let (c, p) = (free_port(), free_port());
            let client_url = format!("http://127.0.0.1:{c}");
            let peer_url = format!("http://127.0.0.1:{p}");
            etcd = Some(
                Command::new("etcd")
                    .args(["--name", "m0", "--data-dir"])
                    .arg(dir.join("etcd"))
                    .args([
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer_url,
                        "--initial-advertise-peer-urls",
                        &peer_url,
                    ])
                    .args(["--initial-cluster", &format!("m0={peer_url}")])
                    .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting etcd (apt-get install etcd-server)")?,
            );
            format!("etcd://127.0.0.1:{c}")
        }
        other => bail!("unknown store {other:?}: use postgres or etcd"),
    };
    let history_path = dir.join("history.jsonl");
    let mut replicas = Vec::new();
    for id in ["a", "b", "c"] {
        let port = free_port();
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nauth = \"trust\"\nadmin_users = [\"postgres\"]\n\
                 [cluster]\nstore = \"{store}\"\nnode_id = \"{id}\"\nlease_ttl = \"{}ms\"\nhistory = \"{}\"\n\
                 [[backends]]\nname = \"pg1\"\nhost = \"{}\"\nport = {}\ntls = \"disable\"\n",
                TTL.as_millis(),
                history_path.display(),
                pg.host(),
                pg.port()
            ),
        )?;
        let mut r = Replica {
            id: id.into(),
            port,
            config,
            child: None,
        };
        // etcd may still be starting: a replica that exits is started again.
        spawn(bin, &mut r, &dir).await?;
        replicas.push(r);
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    let mut times = Vec::new();
    let mut errors = 0u64;
    for round in 0..rounds {
        // All three in the fleet, one leader agreed.
        let leader = loop {
            for r in &mut replicas {
                if let Some(c) = r.child.as_mut() {
                    if c.try_wait()?.is_some() {
                        r.child = None;
                    }
                }
                if r.child.is_none() {
                    spawn(bin, r, &dir).await?;
                }
            }
            let mut views = Vec::new();
            for &p in &ports {
                views.push(cluster(p).await);
            }
            let first = views[0].clone();
            if let Some((Some(l), 3)) = &first {
                if views.iter().all(|v| v == &first) {
                    break l.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let li = replicas.iter().position(|r| r.id == leader).unwrap();
        let follower = replicas[(li + 1) % 3].port;
        let c = client(follower, "postgres")
            .await
            .context("a client of a follower")?;
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pinger = {
            let (failed, stop) = (failed.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if c.simple_query("SELECT 1").await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        let term_before = history::read(&[&history_path])?
            .iter()
            .filter(|e| e.event == "elected")
            .map(|e| e.term)
            .max()
            .unwrap_or(0);
        let killed = mono_us();
        if let Some(mut child) = replicas[li].child.take() {
            child.kill().await?;
        }
        let elected = loop {
            let events = history::read(&[&history_path])?;
            if let Some(e) = events
                .iter()
                .find(|e| e.event == "elected" && e.term > term_before)
            {
                break e.mono_us;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        stop.store(true, Ordering::Relaxed);
        pinger.await?;
        errors += failed.load(Ordering::Relaxed);
        let ms = (elected.saturating_sub(killed)) as f64 / 1000.0;
        times.push(ms);
        eprintln!(
            "{kind} round {:2}: killed {leader}, new leader after {ms:.0} ms",
            round + 1
        );
    }
    let verdict = history::check(&history::read(&[&history_path])?, false);
    drop(replicas);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = percentile(&times, 0.99);
    let goal = TTL.as_secs_f64() * 1000.0 * 1.5;
    println!(
        "{kind:9} rounds {rounds:3}  p50 {:6.0} ms  p99 {p99:6.0} ms  max {:6.0} ms  client errors {errors}  history {}  goal p99 < {goal:.0} ms: {}",
        percentile(&times, 0.5),
        times.last().copied().unwrap_or(0.0),
        if verdict.is_empty() { "ok".to_string() } else { format!("{verdict:?}") },
        if p99 < goal && errors == 0 { "PASS" } else { "MISS" }
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let stores = args.next().unwrap_or_else(|| "postgres etcd".into());
    let bin = pgbaton_bin()?;
    let pg =
        tokio::task::spawn_blocking(|| LocalPostgres::start(&LocalPgOptions::default())).await??;
    for kind in stores.split_whitespace() {
        run_store(&bin, kind, rounds, &pg).await?;
    }
    Ok(())
}
