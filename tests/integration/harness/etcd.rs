//! Throwaway etcd members from Debian's `etcd-server` package, on free
//! loopback ports with data in a temp dir: one member, or a cluster of
//! three for tests that take a member away. Killed and removed on drop,
//! also when a test panics.

use super::certs::TempDir;
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port the kernel just reported free, never handed out twice by this
/// process.
pub fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("binding 127.0.0.1:0")
            .port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
}

pub struct TestEtcd {
    pub members: Vec<Member>,
    dir: TempDir,
}

fn etcd_binary() -> &'static str {
    if std::path::Path::new("/usr/bin/etcd").exists() {
        "/usr/bin/etcd"
    } else {
        "etcd"
    }
}

impl TestEtcd {
    /// `n` members in one cluster, each answering before this returns.
    pub async fn start(n: usize) -> TestEtcd {
        super::init_tracing();
        let dir = TempDir::new();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial: Vec<String> = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let initial = initial.join(",");
        for m in &mut members {
            m.child = Some(spawn(m, &dir, &initial));
        }
        let etcd = TestEtcd { members, dir };
        for i in 0..n {
            etcd.wait_ready(i).await;
        }
        etcd
    }

    /// `etcd://` with every member.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// `etcd://` with one member only.
    pub fn member_url(&self, i: usize) -> String {
        format!("etcd://127.0.0.1:{}", self.members[i].client_port)
    }

    /// kill -9 of one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to one member (SIGSTOP: it hangs as if partitioned).
    pub fn signal(&self, i: usize, sig: libc::c_int) {
        if let Some(c) = &self.members[i].child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, sig) };
        }
    }

    async fn wait_ready(&self, i: usize) {
        let url = pgbaton::config::StoreUrl::parse(&self.member_url(i)).unwrap();
        for _ in 0..200 {
            if let Ok(store) = pgbaton::cluster::store::open(&url, Duration::from_secs(1)).await {
                if store.get("/ready").await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "etcd member {} did not answer within 10 s; its log: {}",
            self.members[i].name,
            std::fs::read_to_string(self.dir.join(&format!("{}.log", self.members[i].name)))
                .unwrap_or_default()
        );
    }
}

fn spawn(m: &Member, dir: &TempDir, initial: &str) -> Child {
    let log = std::fs::File::create(dir.join(&format!("{}.log", m.name))).unwrap();
    let client = format!("http://127.0.0.1:{}", m.client_port);
    let peer = format!("http://127.0.0.1:{}", m.peer_port);
    Command::new(etcd_binary())
        .args(["--name", &m.name])
        .arg("--data-dir")
        .arg(dir.join(&m.name))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", initial])
        .args(["--initial-cluster-state", "new"])
        .args([
            "--initial-cluster-token",
            &format!("pgbaton-test-{}", std::process::id()),
        ])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start etcd ({e}): install Debian's etcd-server (scripts/test.sh does)")
        })
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
