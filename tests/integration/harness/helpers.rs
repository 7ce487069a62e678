//! Helpers the test modules share: clients' rows and tags, a client whose
//! notices are collected, the registry entry of a named session, a bounded
//! poll ([`wait_for`]), moves from the Rust API, and the admin console's
//! result sets.

use super::{TestProxy, TestServer};
use futures_util::StreamExt;
use pgbaton::migration::{MoveRequest, OnTimeout, Origin};
use pgbaton::session::registry::SessionEntry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, SimpleQueryMessage};

/// Admin users for configs that need the console or `from=`.
pub const ADMIN: &str = "admin_users = [\"postgres\"]";

/// Longest a bounded poll waits for its condition (it normally holds at once
/// or within milliseconds; this only bounds a broken run).
pub const POLL_LIMIT: Duration = Duration::from_secs(30);

/// A config for `servers` with every backend marked foreign, so sessions
/// may move between these independent test clusters in both directions.
pub fn foreign_config(servers: &[&TestServer], extra: &str) -> pgbaton::config::Config {
    let mut config = TestProxy::config(servers, extra);
    for b in &mut config.backends {
        b.foreign = true;
    }
    config
}

/// Starts a proxy in front of `servers` with every backend foreign.
pub async fn foreign_proxy(servers: &[&TestServer], extra: &str) -> TestProxy {
    TestProxy::start(foreign_config(servers, extra)).await
}

/// Runs `sql` on every server as the superuser.
pub fn on_all(servers: &[&TestServer], sql: &str) {
    for s in servers {
        s.psql("postgres", sql);
    }
}

/// The rows of the simple query `sql`, values as text.
pub async fn rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// The single value `sql` returns.
pub async fn one(client: &Client, sql: &str) -> String {
    let r = rows(client, sql).await;
    assert_eq!(r.len(), 1, "{sql}: expected one row, got {r:?}");
    r[0][0].clone().unwrap_or_else(|| panic!("{sql}: NULL"))
}

/// The command tag count of a simple query that must succeed.
pub async fn tag_count(client: &Client, sql: &str) -> u64 {
    let msgs = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .last()
        .unwrap_or_else(|| panic!("{sql}: no command tag in {msgs:?}"))
}

/// A tokio-postgres client whose connection's notices and notifications are
/// collected, named by `application_name` so its registry entry can be found.
pub async fn connect_watched(
    proxy: &TestProxy,
    user: &str,
    db: &str,
    app: &str,
) -> (Client, mpsc::UnboundedReceiver<AsyncMessage>) {
    let conf = proxy.conn_str_app(user, db, app);
    let (client, mut conn) = tokio_postgres::connect(&conf, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting through pgbaton: {e:?}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    (client, rx)
}

/// The next notice's message text (bounded wait: it was sent before the
/// reply the caller already has).
pub async fn next_notice(rx: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> String {
    loop {
        let m = tokio::time::timeout(POLL_LIMIT, rx.recv())
            .await
            .expect("a notice in time")
            .expect("connection open");
        if let AsyncMessage::Notice(n) = m {
            return n.message().to_string();
        }
    }
}

/// Everything queued on `rx` right now.
pub fn drain(rx: &mut mpsc::UnboundedReceiver<AsyncMessage>) -> Vec<AsyncMessage> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

/// The registry entry of the session with `application_name` `app`.
pub async fn entry(proxy: &TestProxy, app: &str) -> Arc<SessionEntry> {
    let find = || {
        proxy
            .shared
            .env
            .sessions
            .list()
            .into_iter()
            .find(|e| e.application_name() == app)
    };
    wait_for(&format!("a session named {app}"), || async {
        find().is_some()
    })
    .await;
    find().expect("it was there a moment ago, and sessions of a test end only with it")
}

/// Polls `cond` until it holds (bounded by [`POLL_LIMIT`]).
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + POLL_LIMIT;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until it gives a value (bounded by [`POLL_LIMIT`]).
pub async fn wait_for_value<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + POLL_LIMIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A move request from the Rust API.
pub fn request(to: &str) -> MoveRequest {
    MoveRequest {
        target: to.into(),
        wait: Duration::from_secs(20),
        dry_run: false,
        on_timeout: OnTimeout::Abort,
        origin: Origin::Admin,
    }
}

/// One result set of the admin console, as rows of column → value.
pub async fn admin(
    admin: &Client,
    sql: &str,
) -> Result<Vec<HashMap<String, Option<String>>>, tokio_postgres::Error> {
    let msgs = admin.simple_query(sql).await?;
    let mut columns: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
            }
            SimpleQueryMessage::Row(r) => out.push(
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), r.get(i).map(str::to_string)))
                    .collect(),
            ),
            _ => {}
        }
    }
    Ok(out)
}

/// The value of `col` in an admin row.
pub fn col<'a>(row: &'a HashMap<String, Option<String>>, col: &str) -> Option<&'a str> {
    row.get(col)
        .unwrap_or_else(|| panic!("no column {col} in {row:?}"))
        .as_deref()
}

/// The server's (or pgbaton's) message of an error, with its detail.
pub fn err_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.message(), db.detail().unwrap_or_default()),
        None => e.to_string(),
    }
}

/// (pid, port) of the server a client is on, asked from the server itself.
pub async fn where_is(client: &Client) -> (i32, u16) {
    let r = rows(client, "SELECT pg_backend_pid(), inet_server_port()").await;
    let pid = r[0][0].as_deref().unwrap().parse().unwrap();
    let port = r[0][1].as_deref().unwrap().parse().unwrap();
    (pid, port)
}
