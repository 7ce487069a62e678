//! TLS on both sides of pgbaton: real psql clients against pgbaton's
//! certificate, and pgbaton against a Postgres server with `ssl = on` in each
//! backend mode.

use crate::harness::certs::{self, Ca, TempDir, TestCerts};
use crate::harness::programs::{run, show, stderr, stdout};
use crate::harness::{must_fail, sqlstate, start_servers_with, TestProxy, TestServer};
use pgbaton::config::ServerTls;
use pgbaton::localpg::LocalPgOptions;
use std::process::Output;

/// Runs psql against `conninfo`: no psqlrc, never a password prompt.
async fn psql(conninfo: &str, args: &[&str]) -> Output {
    let all = [&["-X", "-w", "-v", "ON_ERROR_STOP=1", conninfo][..], args].concat();
    run("psql", &all, &[], None).await
}

/// What `\conninfo` prints on an encrypted connection.
const SSL_LINE: &str = "SSL connection (protocol: TLS";

// ---------------------------------------------------------------------------
// Client side: psql -> pgbaton.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_gets_tls_from_pgbaton_with_a_certificate() {
    let servers = start_servers_with(1, LocalPgOptions::default()).await;
    let certs = TestCerts::generate();
    let mut config = TestProxy::config(&[&servers[0]], "");
    config.tls = Some(certs.tls_files());
    let proxy = TestProxy::start(config).await;
    let base = proxy.conn_str("postgres", "postgres");

    // require: encrypted, the certificate is not checked.
    let o = psql(
        &format!("{base} sslmode=require"),
        &["-At", "-c", "SELECT 1", "-c", "\\conninfo"],
    )
    .await;
    assert!(o.status.success(), "sslmode=require: {}", show(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().next(), Some("1"), "{}", show(&o));
    assert!(
        out.contains(SSL_LINE),
        "not an SSL connection: {}",
        show(&o)
    );

    // verify-ca and verify-full check the certificate against its CA (and
    // for verify-full the host name: the IP SAN, then the DNS SAN).
    let ca = certs.ca_file.display().to_string();
    let localhost = format!(
        "host=localhost port={} user=postgres dbname=postgres",
        proxy.port()
    );
    for conninfo in [
        format!("{base} sslmode=verify-ca sslrootcert={ca}"),
        format!("{base} sslmode=verify-full sslrootcert={ca}"),
        format!("{localhost} sslmode=verify-full sslrootcert={ca}"),
    ] {
        let o = psql(&conninfo, &["-At", "-c", "SELECT 2", "-c", "\\conninfo"]).await;
        assert!(o.status.success(), "{conninfo}: {}", show(&o));
        assert_eq!(stdout(&o).lines().next(), Some("2"), "{}", show(&o));
        assert!(stdout(&o).contains(SSL_LINE), "{conninfo}: {}", show(&o));
    }

    // A CA that did not issue pgbaton's certificate: verification fails, so
    // the verification above was real.
    let other_dir = TempDir::new();
    let other_ca = other_dir.join("other-ca.crt");
    std::fs::write(&other_ca, Ca::new("unrelated CA").cert_pem()).unwrap();
    let o = psql(
        &format!(
            "{base} sslmode=verify-ca sslrootcert={}",
            other_ca.display()
        ),
        &["-c", "SELECT 1"],
    )
    .await;
    assert!(
        !o.status.success(),
        "verify-ca with a foreign CA: {}",
        show(&o)
    );
    assert!(
        stderr(&o).contains("certificate verify failed"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_sslmode_require_fails_when_pgbaton_has_no_certificate() {
    let servers = start_servers_with(1, LocalPgOptions::default()).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let base = proxy.conn_str("postgres", "postgres");

    let o = psql(&format!("{base} sslmode=require"), &["-c", "SELECT 1"]).await;
    assert!(!o.status.success(), "sslmode=require: {}", show(&o));
    assert!(
        stderr(&o).contains("server does not support SSL"),
        "{}",
        show(&o)
    );

    for mode in ["disable", "prefer"] {
        let o = psql(
            &format!("{base} sslmode={mode}"),
            &["-At", "-c", "SELECT 3", "-c", "\\conninfo"],
        )
        .await;
        assert!(o.status.success(), "sslmode={mode}: {}", show(&o));
        assert_eq!(stdout(&o).lines().next(), Some("3"), "{}", show(&o));
        assert!(!stdout(&o).contains("SSL connection"), "{}", show(&o));
    }
}

// ---------------------------------------------------------------------------
// Server side: pgbaton -> Postgres.

/// A local server with `ssl = on`, serving a certificate for localhost and
/// 127.0.0.1 issued by the CA in the returned [`TestCerts`] (`ca_file`).
async fn tls_server() -> (TestServer, TestCerts) {
    let server = start_servers_with(1, LocalPgOptions::default())
        .await
        .pop()
        .unwrap();
    let certs = TestCerts::generate();
    let (cert, key) = certs::install_in_data_dir(&certs.ca, server.local().data_dir());
    server.psql(
        "postgres",
        &format!(
            "ALTER SYSTEM SET ssl = on;
             ALTER SYSTEM SET ssl_cert_file = '{}';
             ALTER SYSTEM SET ssl_key_file = '{}';
             SELECT pg_reload_conf();",
            cert.display(),
            key.display()
        ),
    );
    // The postmaster applies the reload asynchronously: poll until a direct
    // TCP connection with sslmode=require is encrypted.
    let conninfo = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
        server.port()
    );
    crate::harness::wait_for("the server to accept TLS after pg_reload_conf", || async {
        let o = psql(
            &conninfo,
            &[
                "-At",
                "-c",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ],
        )
        .await;
        o.status.success() && stdout(&o).trim() == "t"
    })
    .await;
    (server, certs)
}

/// Whether pgbaton's connection to the server is encrypted, as the server
/// sees it.
async fn server_sees_ssl(proxy: &TestProxy) -> bool {
    let client = proxy.connect("postgres", "postgres").await;
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backend_tls_mode_against_a_tls_server() {
    let (server, certs) = tls_server().await;
    for (mode, host, encrypted) in [
        (ServerTls::Require, "127.0.0.1", true),
        (ServerTls::Prefer, "127.0.0.1", true),
        // Verified by the IP SAN, then by the DNS SAN.
        (ServerTls::VerifyFull, "127.0.0.1", true),
        (ServerTls::VerifyFull, "localhost", true),
        (ServerTls::Disable, "127.0.0.1", false),
    ] {
        let mut config = TestProxy::config(&[&server], "");
        config.backends[0].tls = mode;
        config.backends[0].host = host.to_string();
        if mode == ServerTls::VerifyFull {
            config.backends[0].ca_file = Some(certs.ca_file.clone());
        }
        let proxy = TestProxy::start(config).await;
        assert_eq!(
            server_sees_ssl(&proxy).await,
            encrypted,
            "backend tls {mode:?} to {host}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_an_unrelated_ca_is_08006_naming_the_backend() {
    let (server, _certs) = tls_server().await;
    let other_dir = TempDir::new();
    let other_ca = other_dir.join("other-ca.crt");
    std::fs::write(&other_ca, Ca::new("unrelated CA").cert_pem()).unwrap();

    let mut config = TestProxy::config(&[&server], "");
    config.backends[0].tls = ServerTls::VerifyFull;
    config.backends[0].ca_file = Some(other_ca);
    let proxy = TestProxy::start(config).await;
    let e = must_fail(
        proxy
            .try_connect(&proxy.conn_str("postgres", "postgres"))
            .await,
        "verify-full against a foreign CA must fail",
    );
    assert_eq!(sqlstate(&e), "08006", "{e:?}");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("\"pg1\""), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_without_ssl_fails_require_and_serves_prefer_in_plaintext() {
    let servers = start_servers_with(1, LocalPgOptions::default()).await;

    let mut config = TestProxy::config(&[&servers[0]], "");
    config.backends[0].tls = ServerTls::Require;
    let proxy = TestProxy::start(config).await;
    let e = must_fail(
        proxy
            .try_connect(&proxy.conn_str("postgres", "postgres"))
            .await,
        "require against a server without ssl must fail",
    );
    assert_eq!(sqlstate(&e), "08006", "{e:?}");
    let msg = e.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("\"pg1\""), "{msg}");

    let mut config = TestProxy::config(&[&servers[0]], "");
    config.backends[0].tls = ServerTls::Prefer;
    let proxy = TestProxy::start(config).await;
    assert!(!server_sees_ssl(&proxy).await);
}
