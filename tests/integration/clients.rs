//! Real clients through pgbaton: pgbench in every query mode, a psql script
//! with meta-commands and \copy, and libpq's environment settings.

use crate::harness::programs::{pgbench, run, show, stdout};
use crate::harness::{start_servers, TestProxy};

/// The value after `prefix` on the line starting with it.
fn summary<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_simple_extended_and_prepared_mode() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let port = proxy.port().to_string();

    let o = pgbench(&port, &["-i", "-s", "1"]).await;
    assert!(o.status.success(), "pgbench -i: {}", show(&o));

    for mode in ["simple", "extended", "prepared"] {
        let o = pgbench(&port, &["-M", mode, "-c", "8", "-j", "2", "-T", "10"]).await;
        assert!(o.status.success(), "pgbench -M {mode}: {}", show(&o));
        let out = stdout(&o);
        assert_eq!(
            summary(&out, "query mode:"),
            Some(mode),
            "pgbench -M {mode}: {}",
            show(&o)
        );
        let failed = summary(&out, "number of failed transactions:")
            .unwrap_or_else(|| panic!("pgbench -M {mode} printed no failure count: {}", show(&o)));
        assert_eq!(
            failed.split_whitespace().next(),
            Some("0"),
            "pgbench -M {mode}: {}",
            show(&o)
        );
        let processed: u64 = summary(&out, "number of transactions actually processed:")
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("pgbench -M {mode} printed no count: {}", show(&o)));
        assert!(processed > 0, "pgbench -M {mode}: {}", show(&o));
    }
}

const SCRIPT: &str = r#"\set ON_ERROR_STOP on
CREATE TABLE fruit (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO fruit VALUES (1, 'apple'), (2, 'banana');
\x
SELECT id, name FROM fruit WHERE id = 2;
\x
\dt
BEGIN;
INSERT INTO fruit VALUES (3, 'cherry');
SELECT count(*) AS inside FROM fruit;
ROLLBACK;
\copy fruit from stdin
4	durian
5	elderberry
\.
SELECT count(*) AS n, string_agg(name, ',' ORDER BY id) AS names FROM fruit;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_meta_commands_and_copy() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let conninfo = proxy.conn_str("postgres", "postgres");
    let o = run("psql", &["-X", "-w", &conninfo], &[], Some(SCRIPT)).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(o.stderr.is_empty(), "{}", show(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    let has = |l: &str| lines.contains(&l);
    for expected in [
        "CREATE TABLE",
        "INSERT 0 2",
        "Expanded display is on.",
        "-[ RECORD 1 ]",
        "id   | 2",
        "name | banana",
        "Expanded display is off.",
        " public | fruit | table | postgres",
        "BEGIN",
        "INSERT 0 1",
        "      3",
        "ROLLBACK",
        "COPY 2",
        " 4 | apple,banana,durian,elderberry",
    ] {
        assert!(has(expected), "missing line {expected:?} in:\n{}", show(&o));
    }
    // And the server agrees.
    assert_eq!(
        servers[0].psql("postgres", "SELECT count(*) FROM fruit"),
        "4"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgappname_and_pgoptions_reach_the_server() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let conninfo = proxy.conn_str("postgres", "postgres");
    let o = run(
        "psql",
        &[
            "-X",
            "-w",
            "-At",
            &conninfo,
            "-c",
            "select 1",
            "-c",
            "SHOW work_mem",
            "-c",
            "SHOW application_name",
        ],
        &[
            ("PGAPPNAME", "pgbaton-env-test"),
            ("PGOPTIONS", "-c work_mem=9MB"),
        ],
        None,
    )
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        ["1", "9MB", "pgbaton-env-test"],
        "{}",
        show(&o)
    );
}
