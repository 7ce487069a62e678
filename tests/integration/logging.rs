//! Logs, from the real binary: `log_format = "json"` gives one JSON object
//! per line, each session's lines carry its span fields, and no password
//! ever appears, not even at debug level or after a failed login.

use crate::harness::{must_fail, sqlstate, start_servers};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "hunter2-very-secret";

/// Kills the proxy if the test fails before it stops it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_session_fields_and_never_a_password() {
    let servers = start_servers(1).await;
    let dir = std::env::temp_dir().join(format!("pgbaton-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgbaton.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &path,
        format!(
            "log_format = \"json\"\n[[backends]]\nname = \"pg1\"\nhost = \"{}\"\nport = {}\ntls = \"disable\"\n\
             [[users]]\nname = \"postgres\"\npassword = \"{SECRET}\"\n",
            servers[0].host(),
            servers[0].port()
        ),
    )
    .unwrap();
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_pgbaton"))
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "pgbaton=debug")
            .stderr(Stdio::piped())
            .spawn()
            .expect("pgbaton starts"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("pgbaton logs that it listens");
        let ready = line.contains("accepting connections");
        lines.push(line);
        if ready {
            break;
        }
    }

    let conn = |pw: &str| {
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres application_name=logtest password={pw}")
    };
    let (client, connection) = tokio_postgres::connect(&conn(SECRET), tokio_postgres::NoTls)
        .await
        .expect("right password");
    tokio::spawn(connection);
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    let e = must_fail(
        tokio_postgres::connect(&conn("wrong-password"), tokio_postgres::NoTls).await,
        "wrong password",
    );
    assert_eq!(sqlstate(&e), "28P01");

    // SIGTERM: the proxy stops; its stderr ends.
    unsafe {
        libc::kill(child.0.id() as i32, libc::SIGTERM);
    }
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        lines.push(line);
    }
    let status = child.0.wait().expect("pgbaton exits");
    assert!(status.success(), "{status:?}");

    let mut session_lines = 0;
    for line in &lines {
        assert!(
            !line.contains(SECRET),
            "a log line holds the password: {line}"
        );
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
        if let Some(span) = v.get("span") {
            if span.get("name").and_then(|n| n.as_str()) == Some("session") {
                session_lines += 1;
                assert!(span.get("session.id").is_some(), "{line}");
                assert!(span.get("client.addr").is_some(), "{line}");
            }
        }
    }
    assert!(
        session_lines > 0,
        "no line carried the session span: {lines:#?}"
    );
    let started = lines
        .iter()
        .find(|l| l.contains("session started"))
        .expect("a session started line");
    let v: serde_json::Value = serde_json::from_str(started).unwrap();
    assert_eq!(v["span"]["user"], "postgres", "{started}");
    assert_eq!(v["span"]["db"], "postgres", "{started}");
    assert_eq!(v["span"]["backend"], "pg1", "{started}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("password authentication failed")),
        "the failed login is logged (without the password)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
