//! The state check a move runs at the safe point. Its light form compares
//! the current values of every settable setting on source and target; these
//! tests cover what it must not miss: a change the wire never showed (a
//! function calling `set_config`), servers configured differently (where the
//! values differ though the session changed nothing), and a session of an
//! ordinary role, which may not read superuser-only settings; and what the
//! wire saw between pre-staging and the safe point, which neither state
//! shows (a statement prepared again under its old name and types).

use crate::harness::raw::Msg;
use crate::harness::{foreign_proxy, on_all, one, request, tag_count, where_is};
use crate::harness::{start_servers, start_servers_with, Raw};
use crate::migrate_failures::prestaged_on;
use crate::migrate_turns::identity_of;
use pgbaton::localpg::LocalPgOptions;
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_prepared_again_while_the_move_waits_arrives_as_it_is_now() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let client = proxy
        .connect_app("postgres", "postgres", "reprepared")
        .await;
    client
        .batch_execute("PREPARE s1(int) AS SELECT $1 + 1; BEGIN")
        .await
        .unwrap();
    // The move pre-stages s1 as it is now, then waits for the transaction.
    let entry = crate::harness::entry(&proxy, "reprepared").await;
    let mover = tokio::spawn(async move { entry.migrate(request("pg2")).await });
    let direct2 = s2.connect_direct("postgres").await;
    prestaged_on(&direct2, "reprepared").await;
    // Same name, same parameter types, another query: the servers' lists
    // of statements look the same before and after.
    client
        .batch_execute("DEALLOCATE s1; PREPARE s1(int) AS SELECT $1 * 100; COMMIT")
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(30), mover)
        .await
        .expect("the move ends")
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(where_is(&client).await.1, s2.port());
    assert_eq!(one(&client, "EXECUTE s1(2)").await, "200");
}

/// The names of every settable setting, superuser-only ones included: the
/// list a move would learn if a superuser's session had moved there first.
const EVERY_SETTABLE: &str = "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings \
     WHERE context IN ('user', 'superuser') AND name NOT LIKE 'transaction\\_%'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_the_role_may_not_read_sends_the_move_to_the_full_check() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(&[s1, s2], "CREATE ROLE app LOGIN");
    let proxy = foreign_proxy(&[s1, s2], "").await;
    for (server, name) in [(s1, "pg1"), (s2, "pg2")] {
        let identity = identity_of(server, EVERY_SETTABLE).await;
        assert!(identity
            .settable
            .iter()
            .any(|n| n == "dynamic_library_path"));
        proxy.shared.env.moves.remember_identity(name, identity);
    }
    // `current_setting('dynamic_library_path', true)` raises 42501 for
    // this role: both light checks fail, and the full ones decide.
    let client = proxy.connect("app", "postgres").await;
    client.batch_execute("SET work_mem = '6MB'").await.unwrap();
    assert_eq!(
        tag_count(&client, "/* pgbaton: migrate to=pg2 */;").await,
        1
    );
    assert_eq!(where_is(&client).await.1, s2.port());
    assert_eq!(one(&client, "SHOW work_mem").await, "6MB");
    // No statement of pgbaton's is left behind on the client's connection.
    assert_eq!(
        one(&client, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_resets_the_target_never_reports_its_defaults() {
    let servers = start_servers(2).await;
    let (s1, s2) = (&servers[0], &servers[1]);
    on_all(
        &[s1, s2],
        "CREATE FUNCTION quietly_tune() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('work_mem', '7MB', false); END $$;",
    );
    let proxy = foreign_proxy(&[s1, s2], "").await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("database", "postgres")],
    )
    .await;
    raw.query("SET TimeZone = 'Asia/Tokyo'").await;
    // Unseen by the wire: the target is reset (DISCARD ALL) and the truth
    // replayed, which sends TimeZone twice on the target's side.
    raw.query("SELECT quietly_tune()").await;
    let msgs = raw.query("/* pgbaton: migrate to=pg2 */;").await;
    assert!(
        msgs.iter().all(|m| m.tag != b'E'),
        "{:?}",
        msgs.iter().map(Msg::message).collect::<Vec<_>>()
    );
    let told: Vec<(String, String)> = msgs.iter().filter_map(Msg::parameter).collect();
    assert!(
        told.iter()
            .all(|(n, v)| n != "TimeZone" || v == "Asia/Tokyo"),
        "the client was told {told:?}"
    );
    let msgs = raw.query("SHOW work_mem").await;
    let row = msgs.iter().find(|m| m.tag == b'D').expect("a row");
    assert!(row.body.ends_with(b"7MB"), "{row:?}");
}
