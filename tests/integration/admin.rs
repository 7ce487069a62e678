//! The admin console (DESIGN "Admin console"): database `pgbaton`, admin
//! users only, ordinary result sets that drivers and psql print.

use crate::harness::{must_fail, sqlstate, start_servers, TestProxy, TestServer};
use tokio_postgres::{Client, SimpleQueryMessage};

const ADMIN: &str = "admin_users = [\"postgres\"]";

const SESSIONS_COLUMNS: [&str; 15] = [
    "id",
    "user",
    "database",
    "application_name",
    "client_addr",
    "backend",
    "backend_pid",
    "state",
    "tx_status",
    "settings",
    "prepared",
    "listening",
    "pinned",
    "migrations",
    "move",
];

/// One result set of a simple query, values as text.
#[derive(Debug)]
struct Set {
    columns: Vec<String>,
    rows: Vec<Vec<Option<String>>>,
}

impl Set {
    fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    /// The row whose `key` column is `value`.
    fn row(&self, key: &str, value: &str) -> &[Option<String>] {
        let k = self.col(key);
        self.rows
            .iter()
            .find(|r| r[k].as_deref() == Some(value))
            .unwrap_or_else(|| panic!("no row with {key} = {value}: {self:?}"))
    }

    fn get<'a>(&self, row: &'a [Option<String>], name: &str) -> Option<&'a str> {
        row[self.col(name)].as_deref()
    }
}

fn sets(msgs: Vec<SimpleQueryMessage>) -> Vec<Set> {
    let mut out = Vec::new();
    let mut cur: Option<Set> = None;
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                cur = Some(Set {
                    columns: cols.iter().map(|c| c.name().to_string()).collect(),
                    rows: Vec::new(),
                })
            }
            SimpleQueryMessage::Row(r) => {
                let set = cur.as_mut().expect("a RowDescription before rows");
                set.rows
                    .push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
            }
            SimpleQueryMessage::CommandComplete(_) => {
                if let Some(s) = cur.take() {
                    out.push(s);
                }
            }
            _ => {}
        }
    }
    out
}

async fn show(admin: &Client, sql: &str) -> Set {
    let mut all = sets(
        admin
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    );
    assert_eq!(all.len(), 1, "{sql}: one result set");
    all.remove(0)
}

async fn admin_proxy(servers: &[&TestServer]) -> TestProxy {
    TestProxy::start(TestProxy::config(servers, ADMIN)).await
}

async fn console(proxy: &TestProxy) -> Client {
    proxy
        .try_connect(&proxy.conn_str("postgres", "pgbaton"))
        .await
        .unwrap_or_else(|e| panic!("admin console: {e:?}"))
}

/// A proxied client named `app`; answers a query before returning, so its
/// session is registered.
async fn client(proxy: &TestProxy, app: &str) -> Client {
    let c = proxy
        .try_connect(&proxy.conn_str_app("postgres", "postgres", app))
        .await
        .unwrap_or_else(|e| panic!("{app}: {e:?}"));
    c.simple_query("SELECT 1").await.unwrap();
    c
}

fn first_value(msgs: &[SimpleQueryMessage]) -> String {
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admin_users_get_the_console() {
    let servers = start_servers(1).await;
    let proxy = admin_proxy(&[&servers[0]]).await;
    let e = must_fail(
        proxy
            .try_connect(&proxy.conn_str("not_an_admin", "pgbaton"))
            .await,
        "a non-admin user is refused",
    );
    assert_eq!(sqlstate(&e), "42501");
    let admin = console(&proxy).await;
    let v = show(&admin, "SHOW VERSION").await;
    assert_eq!(v.rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_sessions_lists_each_session_with_its_ledger_counts() {
    let servers = start_servers(1).await;
    let proxy = admin_proxy(&[&servers[0]]).await;
    let a = client(&proxy, "adm_a").await;
    let b = client(&proxy, "adm_b").await;
    let admin = console(&proxy).await;

    let s = show(&admin, "SHOW SESSIONS").await;
    assert_eq!(s.columns, SESSIONS_COLUMNS);
    assert_eq!(s.rows.len(), 2, "one row per proxied session: {s:?}");

    for q in [
        "SET work_mem = '5MB'",
        "SET myapp.x = '1'",
        "PREPARE p1 AS SELECT 1",
        "PREPARE p2 AS SELECT 2",
        "LISTEN ch1",
    ] {
        a.simple_query(q).await.unwrap();
    }
    let pid_a = first_value(&a.simple_query("SELECT pg_backend_pid()").await.unwrap());
    let pid_b = first_value(&b.simple_query("SELECT pg_backend_pid()").await.unwrap());
    b.simple_query("BEGIN").await.unwrap();

    let s = show(&admin, "SHOW SESSIONS").await;
    assert_eq!(s.rows.len(), 2, "{s:?}");
    let ra = s.row("application_name", "adm_a");
    let rb = s.row("application_name", "adm_b");
    assert_ne!(s.get(ra, "id"), s.get(rb, "id"));
    for r in [ra, rb] {
        assert!(s.get(r, "id").unwrap().parse::<u64>().is_ok(), "{r:?}");
        assert_eq!(s.get(r, "user"), Some("postgres"));
        assert_eq!(s.get(r, "database"), Some("postgres"));
        assert!(
            s.get(r, "client_addr").unwrap().starts_with("127.0.0.1:"),
            "{r:?}"
        );
        assert_eq!(s.get(r, "backend"), Some("pg1"));
        assert_eq!(s.get(r, "state"), Some("idle"));
        assert_eq!(s.get(r, "pinned"), None);
        assert_eq!(s.get(r, "migrations"), Some("0"));
    }
    assert_eq!(s.get(ra, "backend_pid"), Some(pid_a.as_str()));
    assert_eq!(s.get(rb, "backend_pid"), Some(pid_b.as_str()));
    assert_eq!(s.get(ra, "settings"), Some("2"));
    assert_eq!(s.get(ra, "prepared"), Some("2"));
    assert_eq!(s.get(ra, "listening"), Some("1"));
    assert_eq!(s.get(ra, "tx_status"), Some("I"));
    assert_eq!(s.get(rb, "settings"), Some("0"));
    assert_eq!(s.get(rb, "prepared"), Some("0"));
    assert_eq!(s.get(rb, "listening"), Some("0"));
    assert_eq!(s.get(rb, "tx_status"), Some("T"));

    b.simple_query("COMMIT").await.unwrap();
    let s = show(&admin, "SHOW SESSIONS").await;
    assert_eq!(
        s.get(s.row("application_name", "adm_b"), "tx_status"),
        Some("I")
    );

    // A session that ends leaves the list.
    drop(a);
    crate::harness::wait_for("the ended session to leave the list", || async {
        show(&admin, "SHOW SESSIONS").await.rows.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_session_is_the_whole_ledger() {
    let servers = start_servers(1).await;
    let proxy = admin_proxy(&[&servers[0]]).await;
    let a = client(&proxy, "adm_ledger").await;
    let admin = console(&proxy).await;
    for q in [
        "SET work_mem = '5MB'",
        "SET myapp.tenant = '42'",
        "PREPARE p1 AS SELECT 1",
        "LISTEN ch1",
        "CREATE TEMP TABLE t (x int)",
    ] {
        a.simple_query(q).await.unwrap();
    }
    let sessions = show(&admin, "SHOW SESSIONS").await;
    let id = sessions
        .get(sessions.row("application_name", "adm_ledger"), "id")
        .unwrap()
        .to_string();

    let s = show(&admin, &format!("SHOW SESSION {id}")).await;
    assert_eq!(s.columns, ["kind", "name", "value", "on_move"]);
    let has = |kind: &str, name: &str, value: Option<&str>| {
        s.rows.iter().any(|r| {
            r[0].as_deref().is_some_and(|k| k.starts_with(kind))
                && r[1].as_deref() == Some(name)
                && value.map_or(true, |v| r[2].as_deref() == Some(v))
        })
    };
    assert!(has("startup", "user", Some("postgres")), "{s:?}");
    assert!(has("startup", "database", Some("postgres")), "{s:?}");
    assert!(
        has("startup", "application_name", Some("adm_ledger")),
        "{s:?}"
    );
    assert!(has("setting", "work_mem", Some("5MB")), "{s:?}");
    assert!(has("custom setting", "myapp.tenant", Some("42")), "{s:?}");
    assert!(has("prepared (SQL)", "p1", None), "{s:?}");
    assert!(has("listen", "ch1", None), "{s:?}");
    let blocker = s
        .rows
        .iter()
        .find(|r| r[0].as_deref() == Some("blocker"))
        .unwrap_or_else(|| panic!("a blocker row after CREATE TEMP TABLE: {s:?}"));
    assert!(
        blocker[1].as_deref().unwrap().contains("temp"),
        "{blocker:?}"
    );
    assert!(
        blocker[3].as_deref().unwrap().contains("pin"),
        "{blocker:?}"
    );
    for r in &s.rows {
        assert!(r.iter().skip(3).all(|v| v.is_some()), "on_move set: {r:?}");
    }

    let e = admin.simple_query("SHOW SESSION 999999").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
    let e = admin.simple_query("SHOW SESSION abc").await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_backends_stats_and_version() {
    let servers = start_servers(2).await;
    let proxy = admin_proxy(&[&servers[0], &servers[1]]).await;
    let _a = client(&proxy, "adm_b1").await;
    let admin = console(&proxy).await;

    let s = show(&admin, "SHOW BACKENDS").await;
    assert_eq!(
        s.columns,
        [
            "name",
            "host",
            "port",
            "default",
            "sessions",
            "status",
            "draining",
            "fleet_sessions",
            "revision"
        ]
    );
    assert_eq!(s.rows.len(), 2, "{s:?}");
    for (i, server) in servers.iter().enumerate() {
        let r = s.row("name", &format!("pg{}", i + 1));
        assert_eq!(s.get(r, "host"), Some(server.host().as_str()));
        assert_eq!(s.get(r, "port"), Some(server.port().to_string().as_str()));
        assert_eq!(s.get(r, "status"), Some("ok"));
    }
    let pg1 = s.row("name", "pg1");
    let pg2 = s.row("name", "pg2");
    assert_eq!(s.get(pg1, "default"), Some("yes"));
    assert_eq!(s.get(pg2, "default"), Some("no"));
    assert_eq!(s.get(pg1, "sessions"), Some("1"));
    assert_eq!(s.get(pg2, "sessions"), Some("0"));

    let s = show(&admin, "SHOW STATS").await;
    let total: u64 = s
        .get(s.row("name", "sessions_total"), "value")
        .unwrap()
        .parse()
        .unwrap();
    // The proxied client and the console itself.
    assert!(total >= 2, "{s:?}");

    let s = show(&admin, "SHOW VERSION").await;
    let v = s.rows[0][0].as_deref().unwrap();
    assert!(v.starts_with("pgbaton "), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_and_multi_statement_queries() {
    let servers = start_servers(1).await;
    let proxy = admin_proxy(&[&servers[0]]).await;
    let admin = console(&proxy).await;

    let e = admin.simple_query("FROB THE KNOBS").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    let db = e.as_db_error().unwrap();
    assert!(db.message().contains("FROB THE KNOBS"), "{}", db.message());
    let hint = db.hint().expect("a hint listing the commands");
    for c in [
        "SHOW SESSIONS",
        "SHOW SESSION",
        "SHOW BACKENDS",
        "SHOW STATS",
        "SHOW VERSION",
    ] {
        assert!(hint.contains(c), "{hint}");
    }
    // Still usable.
    show(&admin, "SHOW VERSION").await;

    let all = sets(
        admin
            .simple_query("SHOW VERSION; SHOW STATS")
            .await
            .unwrap(),
    );
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0].columns, ["version"]);
    assert_eq!(all[1].columns, ["name", "value"]);
    assert!(all[1]
        .rows
        .iter()
        .any(|r| r[0].as_deref() == Some("sessions_total")));
}

async fn psql(proxy: &TestProxy, args: &[&str]) -> String {
    use crate::harness::programs::{run, show, stdout};
    let conninfo = proxy.conn_str("postgres", "pgbaton");
    let out = run("psql", &[&["-X", &conninfo][..], args].concat(), &[], None).await;
    assert!(out.status.success(), "psql {args:?}: {}", show(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prints_the_console_plain_and_expanded() {
    let servers = start_servers(2).await;
    let proxy = admin_proxy(&[&servers[0], &servers[1]]).await;
    let _a = client(&proxy, "adm_psql").await;

    let out = psql(&proxy, &["-c", "SHOW SESSIONS"]).await;
    let header = out.lines().next().unwrap_or_default();
    for c in SESSIONS_COLUMNS {
        assert!(header.contains(c), "{out}");
    }
    assert!(out.contains("adm_psql"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");

    let out = psql(&proxy, &["-x", "-c", "SHOW BACKENDS"]).await;
    assert!(out.contains("-[ RECORD 1 ]"), "{out}");
    assert!(out.contains("-[ RECORD 2 ]"), "{out}");
    for c in ["name", "host", "port", "default", "sessions", "status"] {
        assert!(
            out.lines().any(|l| l.starts_with(c)),
            "{c} in expanded output: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_sessions_shows_the_application_name_the_session_set() {
    let servers = crate::harness::start_servers(1).await;
    let proxy = crate::harness::TestProxy::start(crate::harness::TestProxy::config(
        &[&servers[0]],
        crate::harness::ADMIN,
    ))
    .await;
    let client = proxy
        .connect_app("postgres", "postgres", "at-startup")
        .await;
    let console = proxy.connect("postgres", "pgbaton").await;
    // The application_name of the one proxied session, as SHOW SESSIONS says.
    let app = || async {
        let rows = crate::harness::admin(&console, "SHOW SESSIONS")
            .await
            .unwrap();
        rows.iter()
            .filter(|r| crate::harness::col(r, "database") == Some("postgres"))
            .map(|r| crate::harness::col(r, "application_name").map(str::to_string))
            .collect::<Vec<_>>()
    };
    assert_eq!(app().await, vec![Some("at-startup".to_string())]);
    client
        .batch_execute("SET application_name = 'set-later'")
        .await
        .unwrap();
    // As pg_stat_activity does: the value now, not the startup packet's.
    assert_eq!(app().await, vec![Some("set-later".to_string())]);
    // A rolled-back SET goes back.
    client
        .batch_execute("BEGIN; SET application_name = 'rolled-back'; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(app().await, vec![Some("set-later".to_string())]);
}
