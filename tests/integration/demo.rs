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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_psql_and_cleans_up_on_sigterm() {
    let listen = format!("127.0.0.1:{}", free_port());
    // kill_on_drop: a panicking test SIGKILLs the demo when `child` drops.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgbaton"))
        .args(["demo", "--listen", &listen])
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
    let log_text = || log.lock().unwrap().clone();

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
        log_text()
    );
    let banner_text = banner.join("\n");

    // "  pg1 (default)  127.0.0.1:P1      pg2  127.0.0.1:P2"
    let servers_line = banner
        .iter()
        .find(|l| l.contains("pg1 (default)"))
        .unwrap_or_else(|| panic!("no server line in:\n{banner_text}"));
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

    // '  psql "host=127.0.0.1 port=P user=postgres dbname=demo"'
    let connect = banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("psql \""))
        .filter_map(|l| l.strip_suffix('"'))
        .find(|c| c.contains("dbname=demo"))
        .unwrap_or_else(|| panic!("no psql command for dbname=demo in:\n{banner_text}"))
        .to_string();
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        connect.contains(&format!("port={port}")),
        "{connect} is not on {listen}"
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

    // SAFETY: kill with a pid of our own live child (not yet reaped).
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "SIGTERM: {}", std::io::Error::last_os_error());
    let mut rest = Vec::new();
    let status = tokio::time::timeout(LIMIT, async {
        while let Ok(Some(line)) = out.next_line().await {
            rest.push(line);
        }
        child.wait().await
    })
    .await
    .expect("the demo exits in time after SIGTERM")
    .expect("waiting for the demo");
    let _ = log_reader.await;
    assert!(
        status.success(),
        "the demo exited with {status}:\n{}\n--- log\n{}",
        rest.join("\n"),
        log_text()
    );
    assert!(
        rest.iter().any(|l| l == "done."),
        "{}\n--- log\n{}",
        rest.join("\n"),
        log_text()
    );

    // Nothing is left listening...
    for addr in [pg1, pg2, listen.parse().unwrap()] {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{addr}: {e}"
            ),
            Ok(_) => panic!("{addr} still accepts connections after the demo exited"),
        }
    }
    // ...and nothing is left on disk.
    let mine = format!("pgbaton-{pid}-");
    let template = format!("pgbaton-template-{pid}");
    let left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&mine) || *n == template)
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}
