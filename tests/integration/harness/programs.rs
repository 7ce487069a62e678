//! Running the real client programs (psql, pgbench) the way a user would,
//! but with a clean environment: no PG* variables from ours, no psqlrc
//! (callers pass `-X`), English messages.

use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A failure bound for one run (these take milliseconds to seconds).
const LIMIT: Duration = Duration::from_secs(180);

/// Runs `program` with `args` and `env`, feeding it `input` on stdin.
pub async fn run(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&str>,
) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd.env("LC_ALL", "C")
        .envs(env.iter().copied())
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    let feeder = input.map(|text| {
        let mut stdin = child.stdin.take().unwrap();
        let text = text.to_string();
        tokio::spawn(async move {
            stdin.write_all(text.as_bytes()).await?;
            stdin.shutdown().await
        })
    });
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} finished in time"))
        .unwrap();
    if let Some(f) = feeder {
        f.await.unwrap().expect("stdin written");
    }
    out
}

/// pgbench with `args`, as `postgres` on database `postgres` at
/// 127.0.0.1:`port`.
pub async fn pgbench(port: &str, args: &[&str]) -> Output {
    let mut all = args.to_vec();
    all.extend(["-h", "127.0.0.1", "-p", port, "-U", "postgres", "postgres"]);
    run("pgbench", &all, &[], None).await
}

/// Everything a run said, for a failure message.
pub fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
