//! Routing apart from the configuration: a RELOAD after SCALE OUT keeps the
//! backend and the default SCALE OUT set, and a session that logs in while
//! a SCALE OUT changes the default is labelled with the server it is on.

use crate::harness::faulty::FaultyRelay;
use crate::harness::{admin, col, wait_for, where_is, ADMIN};
use crate::harness::{start_servers, TestProxy, TestServer};
use pgbaton::config::{Config, Overrides};

fn backend_toml(name: &str, host: &str, port: u16) -> String {
    format!(
        "[[backends]]\nname = \"{name}\"\nhost = \"{host}\"\nport = {port}\ntls = \"disable\"\n"
    )
}

/// The default backend as SHOW BACKENDS says, and every backend it lists.
async fn backends(console: &tokio_postgres::Client) -> (String, Vec<String>) {
    let rows = admin(console, "SHOW BACKENDS").await.unwrap();
    let default = rows
        .iter()
        .find(|r| col(r, "default") == Some("yes"))
        .and_then(|r| col(r, "name"))
        .expect("a default backend")
        .to_string();
    let names = rows
        .iter()
        .map(|r| col(r, "name").unwrap().to_string())
        .collect();
    (default, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_after_scale_out_keeps_the_new_backend_and_default() {
    let servers = start_servers(2).await;
    let (s1, s2): (&TestServer, &TestServer) = (&servers[0], &servers[1]);
    let dir = std::env::temp_dir().join(format!("pgbaton-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pgbaton.toml");
    // The file names pg1 only; the hook brings pg2.
    let text = format!(
        "auth = \"trust\"\n{ADMIN}\nscale_out_hook = \"echo pg2 127.0.0.1:{}\"\n{}",
        s2.port(),
        backend_toml("pg1", &s1.host(), s1.port())
    );
    std::fs::write(&path, &text).unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let proxy = TestProxy::start(Config::load(Some(&path), &overrides).unwrap()).await;
    proxy.shared.set_source(path.clone(), overrides);

    let a = proxy.connect("postgres", "postgres").await;
    let console = proxy.connect("postgres", "pgbaton").await;
    admin(&console, "SCALE OUT").await.expect("scale out");
    wait_for("the session on the hook's server", || async {
        where_is(&a).await.1 == s2.port()
    })
    .await;
    assert_eq!(backends(&console).await.0, "pg2");

    // The file still names pg1 only: a RELOAD must not drop what SCALE OUT
    // added while a session runs on it, nor its default.
    admin(&console, "RELOAD").await.expect("reload");
    let (default, names) = backends(&console).await;
    assert_eq!(
        default, "pg2",
        "the default SCALE OUT chose survives RELOAD"
    );
    assert_eq!(names, vec!["pg1".to_string(), "pg2".to_string()]);
    let fresh = proxy.connect("postgres", "postgres").await;
    assert_eq!(
        where_is(&fresh).await.1,
        s2.port(),
        "new sessions go to pg2"
    );
    // pg2 is still a backend moves can name.
    let moved = admin(&console, "MIGRATE ALL FROM pg2 TO pg1")
        .await
        .unwrap();
    assert_eq!(col(&moved[0], "sessions"), Some("2"));
    wait_for("both sessions back on pg1", || async {
        where_is(&a).await.1 == s1.port() && where_is(&fresh).await.1 == s1.port()
    })
    .await;

    // A file that now drains pg2 takes the default away from it.
    let drained = format!(
        "{text}{}draining = true\n",
        backend_toml("pg2", "127.0.0.1", s2.port())
    );
    std::fs::write(&path, drained).unwrap();
    admin(&console, "RELOAD").await.expect("reload");
    assert_eq!(backends(&console).await.0, "pg1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_scale_out_is_labelled_with_its_real_backend() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    // pg1 is reached through a relay that can hold a login half-way.
    let relay = FaultyRelay::start(&format!("{}:{}", s1.host(), s1.port())).await;
    let mut config = TestProxy::config(&[s1, s2], ADMIN);
    config.backends[0].host = relay.addr.ip().to_string();
    config.backends[0].port = relay.addr.port();
    let proxy = TestProxy::start(config).await;
    let console = proxy.connect("postgres", "pgbaton").await;

    relay.hold();
    let conn_str = proxy.conn_str_app("postgres", "postgres", "late-login");
    let login = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
            .await
            .expect("login through pgbaton");
        tokio::spawn(conn);
        client
    });
    wait_for("pgbaton logging in to pg1", || async {
        relay.connections() == 1
    })
    .await;
    // The default changes while the login to pg1 is under way.
    admin(&console, "SCALE OUT TO pg2")
        .await
        .expect("scale out");
    relay.release();
    let client = login.await.unwrap();
    // The plan, still executing while the login finished, finds the
    // session on pg1, where it really is, and moves it: labelled pg2, it
    // would have been skipped and left on pg1.
    wait_for("the session moved by the scale-out plan", || async {
        where_is(&client).await.1 == s2.port()
    })
    .await;
    let sessions = admin(&console, "SHOW SESSIONS").await.unwrap();
    let row = sessions
        .iter()
        .find(|r| col(r, "application_name") == Some("late-login"))
        .expect("the session is listed");
    assert_eq!(col(row, "backend"), Some("pg2"));
    let moves = admin(&console, "SHOW MIGRATIONS").await.unwrap();
    assert!(
        moves
            .iter()
            .any(|r| col(r, "from") == Some("pg1") && col(r, "to") == Some("pg2")),
        "the session moved from its real server, pg1"
    );
}
