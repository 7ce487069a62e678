//! The state check a move runs at the safe point. Its light form compares
//! the current values of every settable setting on source and target; these
//! tests cover what it must not miss: a change the wire never showed (a
//! function calling `set_config`), servers configured differently (where the
//! values differ though the session changed nothing), and a session of an
//! ordinary role, which may not read superuser-only settings.

use crate::harness::{start_servers, start_servers_with};
use crate::migrate::{foreign_proxy, on_all, one, tag_count, where_is};
use pgbaton::localpg::LocalPgOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_changed_inside_a_function_moves_too() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE ROLE app LOGIN;
         CREATE FUNCTION quietly_tune() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
           PERFORM set_config('work_mem', '7MB', false);
           PERFORM set_config('DateStyle', 'SQL, DMY', false);
         END $$;",
    );
    let proxy = foreign_proxy(&[s1, s2], "").await;
    // An ordinary role: the check must read nothing it may not.
    let client = proxy.connect("app", "postgres").await;
    client
        .batch_execute("SET TimeZone = 'Asia/Tokyo'; SELECT quietly_tune()")
        .await
        .unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s2.port());
    assert_eq!(one(&client, "SHOW work_mem").await, "7MB");
    assert_eq!(one(&client, "SHOW DateStyle").await, "SQL, DMY");
    assert_eq!(one(&client, "SHOW TimeZone").await, "Asia/Tokyo");
    // Back, with nothing hidden this time.
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg1 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s1.port());
    assert_eq!(one(&client, "SHOW work_mem").await, "7MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_configured_differently_keep_their_own_defaults() {
    let mut servers = start_servers(1).await;
    let opts = LocalPgOptions {
        extra_conf: vec![
            ("work_mem".into(), "8MB".into()),
            ("lock_timeout".into(), "3s".into()),
        ],
        ..LocalPgOptions::default()
    };
    servers.extend(start_servers_with(1, opts).await);
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], "").await;

    // A session that changed nothing the servers configure differently.
    let plain = proxy.connect("postgres", "postgres").await;
    plain
        .batch_execute("SET search_path = pg_catalog, public")
        .await
        .unwrap();
    assert_eq!(one(&plain, "SHOW work_mem").await, "4MB");
    assert_eq!(tag_count(&plain, "/* pgbaton: migrate to=pg2 */;").await, 1);
    assert_eq!(where_is(&plain).await.1, s2.port());
    // pg2's own configuration applies: the session never set these.
    assert_eq!(one(&plain, "SHOW work_mem").await, "8MB");
    assert_eq!(one(&plain, "SHOW lock_timeout").await, "3s");
    assert_eq!(one(&plain, "SHOW search_path").await, "pg_catalog, public");

    // A session that set one of them carries its value both ways.
    let tuned = proxy.connect("postgres", "postgres").await;
    tuned.batch_execute("SET work_mem = '5MB'").await.unwrap();
    assert_eq!(tag_count(&tuned, "/* pgbaton: migrate to=pg2 */;").await, 1);
    assert_eq!(one(&tuned, "SHOW work_mem").await, "5MB");
    assert_eq!(one(&tuned, "SHOW lock_timeout").await, "3s");
    assert_eq!(tag_count(&tuned, "/* pgbaton: migrate to=pg1 */;").await, 1);
    assert_eq!(where_is(&tuned).await.1, s1.port());
    assert_eq!(one(&tuned, "SHOW work_mem").await, "5MB");
    assert_eq!(one(&tuned, "SHOW lock_timeout").await, "0");
    // RESET goes to the default of the server the session is on.
    tuned.batch_execute("RESET work_mem").await.unwrap();
    assert_eq!(one(&tuned, "SHOW work_mem").await, "4MB");
}
