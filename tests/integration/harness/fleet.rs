//! A fleet of real pgbaton processes (the built binary) on loopback, sharing
//! one coordination store, each writing its cluster history to a file of
//! the fleet's temp dir. Replicas can be killed (-9), paused (SIGSTOP),
//! resumed and stopped with SIGTERM; all are killed on drop.

use super::certs::TempDir;
use super::etcd::free_port;
use pgbaton::cluster::history::{self, Recorded};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The fleet tests' lease: short, so a failover takes seconds.
pub const TTL: Duration = Duration::from_secs(2);

pub struct Replica {
    pub id: String,
    pub port: u16,
    pub pid: u32,
    child: Option<tokio::process::Child>,
}

pub struct Fleet {
    dir: TempDir,
    store: String,
    /// (name, host:port), in the order the configurations list them.
    backends: Vec<(String, String)>,
    /// Lines added at the top of every replica's configuration.
    pub top: String,
    pub replicas: Vec<Replica>,
}

type Row = HashMap<String, Option<String>>;

impl Fleet {
    /// A fleet on store `store` (a URL), relaying to the Postgres at
    /// `backend` (`host:port`).
    pub fn new(store: &str, backend: &str) -> Fleet {
        Fleet::with_backends(store, &[("pg1", backend), ("pg2", backend)])
    }

    /// A fleet whose replicas all configure `backends` (name, host:port).
    pub fn with_backends(store: &str, backends: &[(&str, &str)]) -> Fleet {
        super::init_tracing();
        Fleet {
            dir: TempDir::new(),
            store: store.to_string(),
            backends: backends
                .iter()
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .collect(),
            top: String::new(),
            replicas: Vec::new(),
        }
    }

    pub fn history_path(&self) -> PathBuf {
        self.dir.join("history.jsonl")
    }

    fn config(&self, id: &str, port: u16, store: &str, extra: &str) -> PathBuf {
        self.config_with(id, port, store, extra, &self.backends)
    }

    fn config_with(
        &self,
        id: &str,
        port: u16,
        store: &str,
        extra: &str,
        backends: &[(String, String)],
    ) -> PathBuf {
        let mut text = format!(
            "listen = \"127.0.0.1:{port}\"\nauth = \"trust\"\nadmin_users = [\"postgres\"]\n\
             shutdown_timeout = \"5s\"\n{}\n\
             [cluster]\n{extra}\nstore = \"{store}\"\nnode_id = \"{id}\"\nlease_ttl = \"{}ms\"\nhistory = \"{}\"\n",
            self.top,
            TTL.as_millis(),
            self.history_path().display()
        );
        for (name, addr) in backends {
            let (host, pg_port) = addr.rsplit_once(':').unwrap();
            text.push_str(&format!(
                "[[backends]]\nname = \"{name}\"\nhost = \"{host}\"\nport = {pg_port}\n"
            ));
        }
        let path = self.dir.join(&format!("{id}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Rewrites replica `id`'s configuration with `backends` (for RELOAD).
    pub fn rewrite(&self, id: &str, backends: &[(&str, &str)]) {
        let i = self.index(id);
        let backends: Vec<(String, String)> = backends
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect();
        let store = self.store.clone();
        self.config_with(id, self.replicas[i].port, &store, "", &backends);
    }

    /// Starts replica `id` and waits until its console answers; returns
    /// its index.
    pub async fn start(&mut self, id: &str) -> usize {
        let store = self.store.clone();
        self.start_on(id, &store, "").await
    }

    /// As [`Fleet::start`], reaching the store through `store` (a fault
    /// relay's address, say), with `extra` lines in `[cluster]`.
    pub async fn start_on(&mut self, id: &str, store: &str, extra: &str) -> usize {
        let port = free_port();
        let config = self.config(id, port, store, extra);
        let log = std::fs::File::create(self.dir.join(&format!("{id}.log"))).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgbaton"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "pgbaton=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("pgbaton starts");
        let pid = child.id().unwrap();
        let replica = Replica {
            id: id.to_string(),
            port,
            pid,
            child: Some(child),
        };
        // A restart takes the place of the stopped process of that id.
        let i = match self
            .replicas
            .iter()
            .position(|r| r.id == id && r.child.is_none())
        {
            Some(i) => {
                self.replicas[i] = replica;
                i
            }
            None => {
                self.replicas.push(replica);
                self.replicas.len() - 1
            }
        };
        for _ in 0..200 {
            if self.cluster(i).await.is_some() {
                return i;
            }
            if let Some(status) = self.replicas[i].child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "replica {id} exited with {status}; its log:\n{}",
                    self.log(id)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "replica {id} did not answer within 10 s; its log:\n{}",
            self.log(id)
        );
    }

    /// A client of replica `i` on database `db`.
    pub async fn client(&self, i: usize, db: &str) -> tokio_postgres::Client {
        self.connect(i, &format!("dbname={db}")).await
    }

    /// A client of replica `i` named `app` (its application_name).
    pub async fn client_app(&self, i: usize, app: &str) -> tokio_postgres::Client {
        self.connect(i, &format!("dbname=postgres application_name={app}"))
            .await
    }

    async fn connect(&self, i: usize, extra: &str) -> tokio_postgres::Client {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres {extra}",
            self.replicas[i].port
        );
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to replica {}: {e}", self.replicas[i].id));
        tokio::spawn(connection);
        client
    }

    /// A console command at replica `i`.
    pub async fn admin(&self, i: usize, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
        let console = self.client(i, "pgbaton").await;
        super::admin(&console, sql).await
    }

    /// Runs pgbaton with `args` and a config of this fleet for node `id`
    /// on `store`, as a user would, and returns its exit status and log.
    pub async fn run_once(
        &self,
        id: &str,
        store: &str,
        extra: &str,
    ) -> (std::process::ExitStatus, String) {
        self.run_once_with(id, store, extra, &self.backends).await
    }

    /// As [`Fleet::run_once`], with `backends` in the configuration.
    pub async fn run_once_with(
        &self,
        id: &str,
        store: &str,
        extra: &str,
        backends: &[(String, String)],
    ) -> (std::process::ExitStatus, String) {
        let port = free_port();
        let config = self.config_with(id, port, store, extra, backends);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgbaton"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("pgbaton gives up on a bad store")
            .unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status, text)
    }

    /// The client ports of the running replicas.
    pub fn ports(&self) -> Vec<u16> {
        self.replicas
            .iter()
            .filter(|r| r.child.is_some())
            .map(|r| r.port)
            .collect()
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir.path
    }

    pub fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.join(&format!("{id}.log"))).unwrap_or_default()
    }

    pub fn index(&self, id: &str) -> usize {
        self.replicas.iter().position(|r| r.id == id).unwrap()
    }

    /// `SHOW CLUSTER` at replica `i`, or `None` when it does not answer
    /// within a second (stopped, paused, starting).
    pub async fn cluster(&self, i: usize) -> Option<Vec<Row>> {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=pgbaton connect_timeout=1",
            self.replicas[i].port
        );
        let fut = async {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(connection);
            super::admin(&client, "SHOW CLUSTER").await.ok()
        };
        tokio::time::timeout(Duration::from_secs(1), fut)
            .await
            .ok()
            .flatten()
    }

    /// The leader replica `i` shows.
    pub async fn leader_at(&self, i: usize) -> Option<String> {
        let rows = self.cluster(i).await?;
        rows.iter()
            .find(|r| super::col(r, "role") == Some("leader"))
            .and_then(|r| super::col(r, "node").map(str::to_string))
    }

    /// Waits until every replica in `at` shows the same leader, one of
    /// `among`, and returns it.
    pub async fn agreed_leader(&self, at: &[usize], among: &[&str]) -> String {
        super::wait_for_value("one leader agreed by the fleet", || async {
            let mut seen = None;
            for &i in at {
                let l = self.leader_at(i).await?;
                if seen.get_or_insert(l.clone()) != &l {
                    return None;
                }
            }
            seen.filter(|l| among.contains(&l.as_str()))
        })
        .await
    }

    /// kill -9, and waits until the process is gone.
    pub async fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn signal(&self, i: usize, sig: libc::c_int) {
        // SAFETY: kill(2) on a pid of our own child.
        unsafe { libc::kill(self.replicas[i].pid as libc::pid_t, sig) };
    }

    /// SIGTERM, and waits for the process to exit.
    pub async fn stop(&mut self, i: usize) {
        self.signal(i, libc::SIGTERM);
        if let Some(mut c) = self.replicas[i].child.take() {
            let status = tokio::time::timeout(Duration::from_secs(20), c.wait())
                .await
                .expect("a replica exits after SIGTERM")
                .unwrap();
            assert!(
                status.success(),
                "replica {} exited with {status}",
                self.replicas[i].id
            );
        }
    }

    pub fn events(&self) -> Vec<Recorded> {
        let path = self.history_path();
        if !path.exists() {
            return Vec::new();
        }
        history::read(&[&path]).unwrap()
    }

    /// The history checker's verdict: empty when the invariants hold.
    pub fn verdict(&self, strict_rank: bool) -> Vec<String> {
        history::check(&self.events(), strict_rank)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for r in &mut self.replicas {
            if let Some(c) = r.child.as_mut() {
                let _ = c.start_kill();
            }
        }
    }
}

/// A TCP load balancer in front of a fleet, as users run one: each new
/// connection goes to the next replica that accepts it (a replica that is
/// stopping refuses, so the next one gets it).
pub struct Balancer {
    pub addr: std::net::SocketAddr,
    ports: std::sync::Arc<std::sync::Mutex<Vec<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(ports: Vec<u16>) -> Balancer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ports = std::sync::Arc::new(std::sync::Mutex::new(ports));
        let shared = ports.clone();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                let candidates = shared.lock().unwrap().clone();
                next = next.wrapping_add(1);
                tokio::spawn(async move {
                    for k in 0..candidates.len() {
                        let port = candidates[(next + k) % candidates.len()];
                        if let Ok(mut server) =
                            tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { addr, ports, task }
    }

    /// Replaces the replicas' ports (after a restart on a new port).
    pub fn set_ports(&self, ports: Vec<u16>) {
        *self.ports.lock().unwrap() = ports;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
