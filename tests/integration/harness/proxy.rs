//! pgbaton started in-process on 127.0.0.1:0 in front of test servers.

use super::TestServer;
use pgbaton::config::{Config, Overrides, ServerTls};
use pgbaton::proxy::{Proxy, ProxyHandle, Shared};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct TestProxy {
    pub addr: SocketAddr,
    pub handle: ProxyHandle,
    pub shared: Arc<Shared>,
    pub task: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    /// A config with trust auth, backends pg1, pg2, ... for `servers`, TLS
    /// to servers off, and `extra` TOML (users, limits) merged in.
    pub fn config(servers: &[&TestServer], extra: &str) -> Config {
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            backends: servers
                .iter()
                .enumerate()
                .map(|(i, s)| format!("pg{}={}", i + 1, s.addr()))
                .collect(),
            ..Default::default()
        };
        let text = if extra.contains("auth") {
            extra.to_string()
        } else {
            format!("auth = \"trust\"\n{extra}")
        };
        let mut config = Config::from_toml(&text, &overrides).expect("test config is valid");
        for b in &mut config.backends {
            b.tls = ServerTls::Disable;
        }
        config
    }

    pub async fn start(config: Config) -> TestProxy {
        super::init_tracing();
        let proxy = Proxy::bind(
            config,
            pgbaton::admin::console,
            pgbaton::net::busy_poll::BusyPoll::off(),
        )
        .await
        .expect("proxy binds");
        let addr = proxy.local_addr();
        let handle = proxy.handle();
        let shared = proxy.shared();
        let task = tokio::spawn(proxy.run());
        TestProxy {
            addr,
            handle,
            shared,
            task,
        }
    }

    /// Shortcut: trust auth in front of `servers`.
    pub async fn trust(servers: &[&TestServer]) -> TestProxy {
        TestProxy::start(TestProxy::config(servers, "")).await
    }

    pub fn conn_str(&self, user: &str, db: &str) -> String {
        format!(
            "host={} port={} user={user} dbname={db}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub async fn connect(&self, user: &str, db: &str) -> tokio_postgres::Client {
        self.try_connect(&self.conn_str(user, db))
            .await
            .unwrap_or_else(|e| panic!("connecting through pgbaton: {e:?}"))
    }

    /// A client named `app` (its `application_name`), so a test can find
    /// its session in the registry or in pg_stat_activity.
    pub async fn connect_app(&self, user: &str, db: &str, app: &str) -> tokio_postgres::Client {
        self.try_connect(&self.conn_str_app(user, db, app))
            .await
            .unwrap_or_else(|e| panic!("connecting {app} through pgbaton: {e:?}"))
    }

    pub fn conn_str_app(&self, user: &str, db: &str, app: &str) -> String {
        format!("{} application_name={app}", self.conn_str(user, db))
    }

    pub async fn try_connect(
        &self,
        conn_str: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
