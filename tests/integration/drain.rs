//! Drains and the scale-out hook: a backend marked `draining = true` in the
//! reloaded configuration gives its sessions away; `SCALE OUT` without a
//! target runs the configured hook and moves everyone to the server it names.

use crate::harness::{must_fail, sqlstate, start_servers, TestProxy, TestServer};
use crate::harness::{wait_for, where_is};
use pgbaton::config::{Config, Overrides};

fn config_text(servers: &[&TestServer], draining: Option<usize>, extra: &str) -> String {
    let mut text = format!("auth = \"trust\"\nadmin_users = [\"postgres\"]\n{extra}\n");
    for (i, s) in servers.iter().enumerate() {
        text.push_str(&format!(
            "[[backends]]\nname = \"pg{}\"\nhost = \"{}\"\nport = {}\ntls = \"disable\"\ndraining = {}\n",
            i + 1,
            s.host(),
            s.port(),
            draining == Some(i)
        ));
    }
    text
}

/// Polls (bounded) until every listed session is on `backend`.
async fn wait_all_on(proxy: &TestProxy, apps: &[&str], backend: &str) {
    let what = format!("sessions {apps:?} all on {backend}");
    wait_for(&what, || async {
        let on: Vec<String> = proxy
            .shared
            .env
            .sessions
            .list()
            .into_iter()
            .filter(|e| apps.contains(&e.application_name().as_str()))
            .map(|e| e.live().backend)
            .collect();
        on.len() == apps.len() && on.iter().all(|b| b == backend)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_drains_a_backend_and_disconnects_the_pinned_when_told() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let dir = std::env::temp_dir().join(format!("pgbaton-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgbaton.toml");
    let extra = "migration_wait = \"1s\"\ndrain_on_timeout = \"disconnect\"";
    std::fs::write(&path, config_text(&[s1, s2], None, extra)).unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let config = Config::load(Some(&path), &overrides).unwrap();
    let proxy = TestProxy::start(config).await;
    proxy.shared.set_source(path.clone(), overrides);

    let mut movers = Vec::new();
    for app in ["drain-a", "drain-b"] {
        let c = proxy
            .try_connect(&proxy.conn_str_app("postgres", "postgres", app))
            .await
            .unwrap();
        c.batch_execute("SET TimeZone = 'Asia/Tokyo'; PREPARE q(int) AS SELECT $1 + 1")
            .await
            .unwrap();
        movers.push(c);
    }
    let stuck = proxy
        .try_connect(&proxy.conn_str_app("postgres", "postgres", "drain-stuck"))
        .await
        .unwrap();
    stuck.batch_execute("BEGIN; SELECT 1").await.unwrap();

    std::fs::write(&path, config_text(&[s1, s2], Some(0), extra)).unwrap();
    let done = proxy.shared.reload().await.expect("reload");
    assert_eq!(done.drained, vec![("pg1".to_string(), 3)]);
    assert!(done.plan.is_some() && done.notice.is_none(), "{done:?}");

    wait_all_on(&proxy, &["drain-a", "drain-b"], "pg2").await;
    for c in &movers {
        assert_eq!(where_is(c).await.1, s2.port());
        let tz: String = c.query_one("SHOW TimeZone", &[]).await.unwrap().get(0);
        assert_eq!(tz, "Asia/Tokyo");
        let v: i32 = c.query_one("EXECUTE q(41)", &[]).await.unwrap().get(0);
        assert_eq!(v, 42);
    }
    // The session that stayed in its transaction is closed with 57P01 once
    // migration_wait is over (drain_on_timeout = "disconnect").
    wait_for("the pinned session to be disconnected", || async {
        stuck.is_closed()
    })
    .await;
    let e = must_fail(
        stuck.simple_query("SELECT 1").await,
        "the drained session is closed",
    );
    assert!(
        e.is_closed() || e.code().map(|c| c.code()) == Some("57P01"),
        "{e:?}"
    );

    // New sessions avoid the draining backend.
    let fresh = proxy.connect("postgres", "postgres").await;
    assert_eq!(where_is(&fresh).await.1, s2.port());
    let aborted = proxy
        .shared
        .env
        .moves
        .history
        .list()
        .iter()
        .filter(|r| r.status == pgbaton::migration::history::Status::Aborted)
        .count();
    assert_eq!(
        aborted, 1,
        "only the session in a transaction failed to move"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_a_file_is_an_error() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let admin_conf = TestProxy::config(&[&servers[0]], "admin_users = [\"postgres\"]");
    let admin = TestProxy::start(admin_conf).await;
    let console = admin.connect("postgres", "pgbaton").await;
    let e = must_fail(console.simple_query("RELOAD").await, "no file to reload");
    assert_eq!(sqlstate(&e), "F0000");
    assert!(proxy.shared.reload().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_runs_the_hook_and_moves_everyone() {
    let servers = start_servers(3).await;
    let (s1, s2, s3) = (&servers[0], &servers[1], &servers[2]);
    // The hook "starts" a server (the test already did) and names it last.
    let extra = format!(
        "admin_users = [\"postgres\"]\nscale_out_hook = \"echo starting a server >&2; echo; echo pg3 127.0.0.1:{}\"",
        s3.port()
    );
    let proxy = TestProxy::start(TestProxy::config(&[s1, s2], &extra)).await;
    let a = proxy.connect("postgres", "postgres").await;
    a.batch_execute("SET myapp.tenant = 'acme'").await.unwrap();
    let console = proxy.connect("postgres", "pgbaton").await;
    console.simple_query("SCALE OUT").await.expect("scale out");
    wait_for("sessions moved to the hook's server", || async {
        proxy
            .shared
            .env
            .sessions
            .list()
            .iter()
            .all(|e| e.live().backend == "pg3")
    })
    .await;
    assert_eq!(where_is(&a).await.1, s3.port());
    let t: String = a
        .query_one("SELECT current_setting('myapp.tenant')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, "acme");
    let rows = console.simple_query("SHOW BACKENDS").await.unwrap();
    let default: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) if r.get(3) == Some("yes") => {
                r.get(0).map(String::from)
            }
            _ => None,
        })
        .collect();
    assert_eq!(default, vec!["pg3".to_string()]);
    let fresh = proxy.connect("postgres", "postgres").await;
    assert_eq!(where_is(&fresh).await.1, s3.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_prints_nonsense_is_an_error_and_moves_nothing() {
    let servers = start_servers(1).await;
    let extra = "admin_users = [\"postgres\"]\nscale_out_hook = \"echo no address here\"";
    let proxy = TestProxy::start(TestProxy::config(&[&servers[0]], extra)).await;
    let a = proxy.connect("postgres", "postgres").await;
    let console = proxy.connect("postgres", "pgbaton").await;
    let e = must_fail(console.simple_query("SCALE OUT").await, "bad hook output");
    assert_eq!(sqlstate(&e), "58000");
    assert!(e
        .as_db_error()
        .unwrap()
        .message()
        .contains("NAME HOST:PORT"));
    let e = must_fail(
        console.simple_query("SCALE OUT TO nowhere").await,
        "unknown backend",
    );
    assert_eq!(sqlstate(&e), "42704");
    a.simple_query("SELECT 1").await.unwrap();
    assert!(proxy
        .shared
        .env
        .sessions
        .list()
        .iter()
        .all(|e| e.live().backend == "pg1"));
}
