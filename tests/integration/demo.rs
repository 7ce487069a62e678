//! The `pgbaton demo` binary end to end: it starts two servers with the demo
//! schema and a proxy, serves psql, runs the move and the console command
//! its banner prints, and on SIGTERM stops everything and removes what it
//! created.

use crate::harness::programs::run;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A failure bound for the demo's start (two servers, one initdb) and stop.
const LIMIT: Duration = Duration::from_secs(180);

const PSQL: [&str; 5] = ["-X", "-w", "-At", "-v", "ON_ERROR_STOP=1"];

async fn psql(conninfo: &str, sql: &str) -> std::process::Output {
    let args = [&PSQL[..], &[conninfo, "-c", sql]].concat();
    run("psql", &args, &[], None).await
}

/// psql reading `script` from stdin, as from a terminal: one statement at a
/// time.
async fn psql_script(conninfo: &str, script: &str) -> std::process::Output {
    let args = [&PSQL[..], &[conninfo, "-f", "-"]].concat();
    run("psql", &args, &[], Some(script)).await
}

fn query_ok(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `pgbaton demo` whose banner has been read.
struct Demo {
    child: tokio::process::Child,
    pid: u32,
    listen: String,
    banner: Vec<String>,
    pg1: std::net::SocketAddr,
    pg2: std::net::SocketAddr,
    /// The demo's stdout and the task reading its stderr; `None` once
    /// closed.
    out: Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
    log: Arc<Mutex<String>>,
    log_reader: Option<tokio::task::JoinHandle<()>>,
}

impl Demo {
    /// Starts the demo on a free port and reads its banner.
    async fn start() -> Demo {
        Demo::start_with(&[]).await
    }

    /// As [`Demo::start`], with more arguments.
    async fn start_with(args: &[&str]) -> Demo {
        let listen = format!("127.0.0.1:{}", free_port());
        // kill_on_drop: a panicking test SIGKILLs the demo when `child` drops.
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgbaton"))
            .args(["demo", "--listen", &listen])
            .args(args)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("pgbaton demo starts");
        let pid = child.id().expect("a running child has a pid");

        // The demo's log (stderr), kept to explain a failure.
        let log = Arc::new(Mutex::new(String::new()));
        let log_reader = {
            let log = log.clone();
            let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
            tokio::spawn(async move {
                while let Ok(Some(l)) = err.next_line().await {
                    let mut log = log.lock().unwrap();
                    log.push_str(&l);
                    log.push('\n');
                }
            })
        };

        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let ready = tokio::time::timeout(LIMIT, async {
            while let Ok(Some(line)) = out.next_line().await {
                let done = line.starts_with("Press Ctrl-C");
                banner.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await
        .expect("the demo printed its banner in time");
        assert!(
            ready,
            "the demo ended before it was ready:\n{}\n--- log\n{}",
            banner.join("\n"),
            log.lock().unwrap()
        );
        // "  pg1 (default)  127.0.0.1:P1      pg2  127.0.0.1:P2"
        let servers_line = banner
            .iter()
            .find(|l| l.contains("pg1 (default)"))
            .unwrap_or_else(|| panic!("no server line in:\n{}", banner.join("\n")))
            .clone();
        let words: Vec<&str> = servers_line.split_whitespace().collect();
        let after = |w: &str| {
            let i = words
                .iter()
                .position(|x| *x == w)
                .unwrap_or_else(|| panic!("no {w} in {servers_line:?}"));
            words[i + 1]
        };
        let pg1: std::net::SocketAddr = after("(default)").parse().expect("pg1 address");
        let pg2: std::net::SocketAddr = after("pg2").parse().expect("pg2 address");
        assert_ne!(pg1, pg2);
        Demo {
            child,
            pid,
            listen,
            banner,
            pg1,
            pg2,
            out: Some(out),
            log,
            log_reader: Some(log_reader),
        }
    }

    /// Stops reading the demo's stdout and stderr: their pipes close.
    async fn close_pipes(&mut self) {
        self.out = None;
        if let Some(reader) = self.log_reader.take() {
            reader.abort();
            let _ = reader.await;
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill with a pid of our own live child (not yet reaped).
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// Nothing the demo made is left listening or on disk.
    async fn assert_nothing_left(&self) {
        for addr in [self.pg1, self.pg2, self.listen.parse().unwrap()] {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) => assert_eq!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{addr}: {e}"
                ),
                Ok(_) => panic!("{addr} still accepts connections after the demo exited"),
            }
        }
        let mine = format!("pgbaton-{}-", self.pid);
        let template = format!("pgbaton-template-{}", self.pid);
        let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&mine) || *n == template)
            .collect();
        assert!(left.is_empty(), "the demo left {left:?} behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_psql_and_cleans_up_on_sigterm() {
    let mut demo = Demo::start().await;
    let (pg1, pg2) = (demo.pg1, demo.pg2);
    let banner = demo.banner.clone();
    let banner_text = banner.join("\n");

    // '  psql "host=127.0.0.1 port=P user=postgres dbname=demo"'
    let connect = banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("psql \""))
        .filter_map(|l| l.strip_suffix('"'))
        .find(|c| c.contains("dbname=demo"))
        .unwrap_or_else(|| panic!("no psql command for dbname=demo in:\n{banner_text}"))
        .to_string();
    let port = demo.listen.rsplit(':').next().unwrap();
    assert!(
        connect.contains(&format!("port={port}")),
        "{connect} is not on {}",
        demo.listen
    );
    let o = psql(&connect, "select count(*) from accounts").await;
    assert_eq!(query_ok(&o, "through the demo proxy"), "10");
    for pg in [pg1, pg2] {
        let direct = format!(
            "host={} port={} user=postgres dbname=demo",
            pg.ip(),
            pg.port()
        );
        let o = psql(
            &direct,
            "select count(*), to_regclass('events') IS NOT NULL from accounts",
        )
        .await;
        assert_eq!(query_ok(&o, &format!("directly on {pg}")), "10|t");
    }

    // The banner's move, typed into psql: the session answers from pg1's
    // port, the comment answers MIGRATE 1, then pg2's port.
    let move_line = banner
        .iter()
        .skip_while(|l| !l.starts_with("Move your session to pg2"))
        .nth(1)
        .unwrap_or_else(|| panic!("no move command in:\n{banner_text}"))
        .trim()
        .to_string();
    let o = psql_script(&connect, &format!("{move_line}\n")).await;
    let ports = query_ok(&o, &format!("the banner's move: {move_line}"));
    assert_eq!(
        ports,
        format!("{}\nMIGRATE 1\n{}", pg1.port(), pg2.port()),
        "{move_line}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("moved from pg1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The banner's console command, and the move recorded there.
    let console = banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("psql \""))
        .filter_map(|l| l.strip_suffix('"'))
        .find(|c| c.contains("dbname=pgbaton"))
        .unwrap_or_else(|| panic!("no console command in:\n{banner_text}"))
        .to_string();
    let o = psql(&console, "SHOW MIGRATIONS").await;
    let migrations = query_ok(&o, "SHOW MIGRATIONS in the demo's console");
    assert!(
        migrations.contains("|pg1|pg2|done|"),
        "SHOW MIGRATIONS: {migrations}"
    );

    demo.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    let status = tokio::time::timeout(LIMIT, async {
        let out = demo.out.as_mut().unwrap();
        while let Ok(Some(line)) = out.next_line().await {
            rest.push(line);
        }
        demo.child.wait().await
    })
    .await
    .expect("the demo exits in time after SIGTERM")
    .expect("waiting for the demo");
    demo.log_reader.take().unwrap().await.unwrap();
    assert!(
        status.success(),
        "the demo exited with {status}:\n{}\n--- log\n{}",
        rest.join("\n"),
        demo.log_text()
    );
    assert!(
        rest.iter().any(|l| l == "done."),
        "{}\n--- log\n{}",
        rest.join("\n"),
        demo.log_text()
    );

    demo.assert_nothing_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_piped_and_interrupted_still_cleans_up() {
    // `pgbaton demo | tee log`, then Ctrl-C: the terminal's SIGINT reaches
    // tee too, so the demo's stdout and stderr have no reader while it
    // stops. Writing to them must not abort it.
    let mut demo = Demo::start().await;
    demo.close_pipes().await;
    demo.signal(libc::SIGINT);
    let status = tokio::time::timeout(LIMIT, demo.child.wait())
        .await
        .expect("the demo exits in time after SIGINT")
        .expect("waiting for the demo");
    assert!(status.success(), "the demo exited with {status}");
    demo.assert_nothing_left().await;
}

/// `pgbaton demo --replicas 3`: three replica processes on consecutive ports
/// that form one fleet; kill -9 of the leader's pid (as the banner says) and
/// another takes over; SIGTERM removes everything, replicas included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_three_replicas_elects_a_leader_and_survives_its_kill() {
    let mut demo = Demo::start_with(&["--replicas", "3"]).await;
    // "  replica r1     127.0.0.1:P   pid X"
    let replicas: Vec<(String, String, i32)> = demo
        .banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("replica "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let port = w[1].rsplit(':').next().unwrap().to_string();
            (w[0].to_string(), port, w[3].parse().unwrap())
        })
        .collect();
    assert_eq!(replicas.len(), 3, "{}", demo.banner.join("\n"));
    let leader_at = |port: String| async move {
        let conn = format!("host=127.0.0.1 port={port} user=postgres dbname=pgbaton");
        let out = psql(&conn, "SHOW CLUSTER").await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rows: Vec<&str> = text.lines().collect();
        let leader = rows
            .iter()
            .find(|r| r.split('|').nth(3) == Some("leader"))
            .map(|r| r.split('|').next().unwrap().to_string());
        (rows.len(), leader)
    };
    let first = crate::harness::wait_for_value("three replicas and a leader", || {
        let port = replicas[0].1.clone();
        async move {
            match leader_at(port).await {
                (3, Some(l)) => Some(l),
                _ => None,
            }
        }
    })
    .await;
    let (_, _, pid) = replicas.iter().find(|(id, _, _)| *id == first).unwrap();
    // SAFETY: kill(2) on a replica the demo started.
    unsafe { libc::kill(*pid, libc::SIGKILL) };
    let survivor = replicas.iter().find(|(id, _, _)| *id != first).unwrap();
    let second = crate::harness::wait_for_value("another leader", || {
        let port = survivor.1.clone();
        let first = first.clone();
        async move {
            match leader_at(port).await {
                (_, Some(l)) if l != first => Some(l),
                _ => None,
            }
        }
    })
    .await;
    assert_ne!(second, first);

    demo.signal(libc::SIGTERM);
    let status = tokio::time::timeout(LIMIT, async {
        let out = demo.out.as_mut().unwrap();
        while let Ok(Some(_)) = out.next_line().await {}
        demo.child.wait().await
    })
    .await
    .expect("the demo exits in time after SIGTERM")
    .expect("waiting for the demo");
    assert!(status.success(), "{status}\n{}", demo.log_text());
    for (id, port, _) in &replicas {
        let addr = format!("127.0.0.1:{port}");
        assert!(
            tokio::net::TcpStream::connect(&addr).await.is_err(),
            "replica {id} still listens on {addr}"
        );
    }
    let dir = std::env::temp_dir().join(format!("pgbaton-demo-fleet-{}", demo.pid));
    assert!(!dir.exists(), "{} is left", dir.display());
    demo.assert_nothing_left().await;
}
