//! Authentication: clients to pgbaton (trust, SCRAM with a password or a
//! pg_authid secret), and pgbaton to servers on its own (trust, password,
//! md5, SCRAM).

use crate::harness::{sqlstate, start_servers, start_servers_with, Raw, TestProxy};
use pgbaton::auth::scram::StoredSecret;
use pgbaton::localpg::{HostAuth, LocalPgOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients_right_wrong_and_unknown() {
    let servers = start_servers(1).await;
    let secret =
        StoredSecret::from_password(b"from-secret", b"0123456789abcdef", 4096).to_pg_string();
    let extra = format!(
        r#"
        auth = "scram-sha-256"
        [[users]]
        name = "postgres"
        password = "right-password"
        [[users]]
        name = "viasecret"
        scram_secret = "{secret}"
        "#
    );
    servers[0].psql("postgres", "CREATE ROLE viasecret LOGIN");
    let proxy = TestProxy::start(TestProxy::config(&[&servers[0]], &extra)).await;

    let ok = proxy
        .try_connect(&format!(
            "{} password=right-password",
            proxy.conn_str("postgres", "postgres")
        ))
        .await
        .expect("right password");
    ok.simple_query("SELECT 1").await.unwrap();

    let e = crate::harness::must_fail(
        proxy
            .try_connect(&format!(
                "{} password=wrong",
                proxy.conn_str("postgres", "postgres")
            ))
            .await,
        "wrong password refused",
    );
    assert_eq!(sqlstate(&e), "28P01");

    let e = crate::harness::must_fail(
        proxy
            .try_connect(&format!(
                "{} password=x",
                proxy.conn_str("nobody", "postgres")
            ))
            .await,
        "unknown user refused",
    );
    // Told exactly what a wrong password is told, after a whole exchange,
    // so a stranger cannot learn which user names exist.
    assert_eq!(sqlstate(&e), "28P01");
    assert_eq!(
        e.as_db_error().unwrap().message(),
        "password authentication failed for user \"nobody\""
    );
    // The exchange itself looks the same: a SASL offer, then a salt that is
    // stable for the name (as a stored secret's is), for known and unknown.
    let nobody = server_first(&proxy, "nobody").await;
    assert_eq!(salt(&nobody), salt(&server_first(&proxy, "nobody").await));
    assert_ne!(salt(&nobody), salt(&server_first(&proxy, "other").await));
    let known = server_first(&proxy, "postgres").await;
    assert!(nobody.contains(",i=4096") && known.contains(",i=4096"));

    let c = proxy
        .try_connect(&format!(
            "{} password=from-secret",
            proxy.conn_str("viasecret", "postgres")
        ))
        .await
        .expect("SCRAM secret from pg_authid format");
    let who: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "viasecret");
}

/// The server-first SCRAM message pgbaton sends `user`.
async fn server_first(proxy: &TestProxy, user: &str) -> String {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    let mut raw = Raw::connect(proxy.addr).await;
    raw.send_startup(&[("user", user)]).await;
    let offer = raw.recv().await.expect("an authentication request");
    assert_eq!(offer.tag, b'R');
    assert_eq!(&offer.body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    let scram = ScramSha256::new(b"x", ChannelBinding::unsupported());
    let mut out = bytes::BytesMut::new();
    postgres_protocol::message::frontend::sasl_initial_response(
        "SCRAM-SHA-256",
        scram.message(),
        &mut out,
    )
    .unwrap();
    raw.send(&out).await;
    let first = raw.recv().await.expect("server-first message");
    assert_eq!(
        &first.body[..4],
        &11i32.to_be_bytes(),
        "AuthenticationSASLContinue"
    );
    String::from_utf8_lossy(&first.body[4..]).into_owned()
}

fn salt(server_first: &str) -> &str {
    server_first
        .split(',')
        .find_map(|f| f.strip_prefix("s="))
        .expect("a salt")
}

async fn logs_in_to_a_server_with(method: HostAuth) {
    let servers = start_servers_with(
        1,
        LocalPgOptions {
            host_auth: method,
            ..Default::default()
        },
    )
    .await;
    servers[0].psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'server-pw'");
    let extra = r#"
        [[users]]
        name = "app"
        password = "server-pw"
    "#;
    let proxy = TestProxy::start(TestProxy::config(&[&servers[0]], extra)).await;
    // The client uses trust towards pgbaton; pgbaton answers the server's
    // challenge with its own credentials.
    let client = proxy.connect("app", "postgres").await;
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app");

    // Without a configured password the login fails with a clear error.
    servers[0].psql("postgres", "CREATE ROLE nopw LOGIN PASSWORD 'x'");
    let e = crate::harness::must_fail(
        proxy.try_connect(&proxy.conn_str("nopw", "postgres")).await,
        "no password configured",
    );
    if method == HostAuth::Trust {
        unreachable!("trust needs no password");
    }
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "28000");
    assert!(
        db.message().contains("pg1"),
        "names the backend: {}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_with_scram() {
    logs_in_to_a_server_with(HostAuth::ScramSha256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_with_md5() {
    logs_in_to_a_server_with(HostAuth::Md5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_with_cleartext_password() {
    logs_in_to_a_server_with(HostAuth::Password).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_our_password_is_forwarded() {
    let servers = start_servers_with(
        1,
        LocalPgOptions {
            host_auth: HostAuth::ScramSha256,
            ..Default::default()
        },
    )
    .await;
    servers[0].psql("postgres", "CREATE ROLE app LOGIN PASSWORD 'real'");
    let extra = "[[users]]\nname = \"app\"\npassword = \"stale\"\n";
    let proxy = TestProxy::start(TestProxy::config(&[&servers[0]], extra)).await;
    let e = proxy
        .try_connect(&proxy.conn_str("app", "postgres"))
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&e), "28P01");
    // The database name is checked by the server too, and its error reaches
    // the client unchanged.
    let e = proxy
        .try_connect(&proxy.conn_str("postgres", "no_such_db"))
        .await
        .err()
        .unwrap();
    assert!(e.code().is_some());
}
