//! Every statement form the classifier recognises, one row each.

use super::{check, class, show};
use crate::sql::{
    changes_session_state, classify, classify_all, offset_in, Effect, Ident, SetValue, Syntax,
};

#[test]
fn set_forms() {
    check(&[
        ("SET work_mem = '5MB'", "set session work_mem = '5MB'"),
        ("set WORK_MEM to 64000", "set session work_mem = 64000"),
        ("SET SESSION work_mem TO '1GB'", "set session work_mem = '1GB'"),
        ("SET LOCAL statement_timeout = 0", "set local statement_timeout = 0"),
        ("SET search_path TO \"$user\", public", "set session search_path = \"$user\", public"),
        ("SET search_path = '$user',public -- trailing", "set session search_path = '$user',public"),
        ("SET myapp.tenant = '42'", "set session myapp.tenant = '42'"),
        ("SET MyApp . \"Tenant\" = 42", "set session myapp.Tenant = 42"),
        ("SET \"Odd\"\"Name\" = on", "set session Odd\"Name = on"),
        ("SET x TO DEFAULT", "set session x default"),
        ("SET x = 'default'", "set session x = 'default'"),
        ("SET x = -1", "set session x = -1"),
        ("SET x=-1", "set session x = -1"),
        ("SET datestyle = iso, mdy", "set session datestyle = iso, mdy"),
        ("SET search_path FROM CURRENT", "set session search_path from current"),
        ("SET TIME ZONE 'Europe/Rome'", "set session timezone = 'Europe/Rome'"),
        ("set time zone local", "set session timezone default"),
        ("SET TIME ZONE DEFAULT", "set session timezone default"),
        ("SET LOCAL TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE", "set local timezone = INTERVAL '+00:00' HOUR TO MINUTE"),
        ("SET TimeZone = 'UTC'", "set session timezone = 'UTC'"),
        ("SET SCHEMA 'app'", "set session search_path = 'app'"),
        ("SET NAMES 'UTF8'", "set session client_encoding = 'UTF8'"),
        ("SET NAMES", "set session client_encoding default"),
        ("SET NAMES DEFAULT", "set session client_encoding default"),
        ("SET XML OPTION DOCUMENT", "set session xmloption = DOCUMENT"),
        ("/* lead */ SET /* mid */ a.b -- x\n = 1", "set session a.b = 1"),
        // A long identifier is truncated to 63 bytes, like the server does.
        (
            "SET a.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb = 1",
            "set session a.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb = 1",
        ),
        // Malformed SETs change nothing (the server rejects them).
        ("SET", "other"),
        ("SET x", "other"),
        ("SET x =", "other"),
        ("SET 'x' = 1", "other"),
    ]);
}

#[test]
fn reset_forms() {
    check(&[
        ("RESET work_mem", "reset work_mem"),
        ("reset MyApp.Tenant", "reset myapp.tenant"),
        ("RESET ALL", "reset all"),
        ("RESET TIME ZONE", "reset timezone"),
        ("RESET TRANSACTION ISOLATION LEVEL", "set transaction"),
        ("RESET ROLE", "reset role"),
        ("RESET SESSION AUTHORIZATION", "reset session authorization"),
        ("RESET session_authorization", "reset session authorization"),
        ("RESET", "other"),
    ]);
}

#[test]
fn roles_and_authorization() {
    check(&[
        ("SET ROLE admin", "set role session admin"),
        ("SET ROLE \"Admin\"", "set role session Admin"),
        ("SET ROLE 'it''s'", "set role session it's"),
        ("SET ROLE NONE", "set role session <none>"),
        ("SET ROLE 'none'", "set role session <none>"),
        ("SET ROLE \"NONE\"", "set role session NONE"),
        ("SET LOCAL ROLE admin", "set role local admin"),
        ("SET SESSION ROLE admin", "set role session admin"),
        ("SET role = 'admin'", "set role session admin"),
        ("SET role TO none", "set role session <none>"),
        (
            "SET SESSION AUTHORIZATION bob",
            "set session authorization session bob",
        ),
        (
            "SET SESSION AUTHORIZATION 'Bob'",
            "set session authorization session Bob",
        ),
        (
            "SET SESSION AUTHORIZATION DEFAULT",
            "set session authorization session <default>",
        ),
        (
            "SET SESSION AUTHORIZATION \"DEFAULT\"",
            "set session authorization session DEFAULT",
        ),
        (
            "SET LOCAL SESSION AUTHORIZATION bob",
            "set session authorization local bob",
        ),
        (
            "SET SESSION SESSION AUTHORIZATION bob",
            "set session authorization session bob",
        ),
        (
            "SET session_authorization = bob",
            "set session authorization session bob",
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
            "characteristics ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        ),
        (
            "SET SESSION characteristics = 1",
            "set session characteristics = 1",
        ),
        (
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "set transaction",
        ),
        (
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            "set transaction",
        ),
        ("SET LOCAL TRANSACTION READ ONLY", "set transaction"),
        ("SET CONSTRAINTS ALL DEFERRED", "set transaction"),
    ]);
}

#[test]
fn prepared_statements() {
    check(&[
        ("PREPARE pm(int) AS SELECT $1", "prepare pm (int) SELECT $1"),
        (
            "PREPARE q (int, text[]) AS SELECT $1, $2 -- c",
            "prepare q (int, text[]) SELECT $1, $2",
        ),
        (
            "PREPARE q(numeric(10, 2)) AS SELECT $1",
            "prepare q (numeric(10, 2)) SELECT $1",
        ),
        (
            "prepare \"Q\" as insert into t values (1)",
            "prepare Q (-) insert into t values (1)",
        ),
        (
            "PREPARE transaction AS SELECT 1",
            "prepare transaction (-) SELECT 1",
        ),
        ("PREPARE q AS", "other"),
        ("PREPARE q(int SELECT 1", "other"),
        ("EXECUTE pm(42)", "execute pm"),
        ("EXECUTE \"Q\"", "execute Q"),
        ("DEALLOCATE pm", "deallocate pm"),
        ("DEALLOCATE PREPARE pm", "deallocate pm"),
        ("DEALLOCATE ALL", "deallocate ALL"),
        ("DEALLOCATE PREPARE ALL", "deallocate ALL"),
        ("DEALLOCATE prepare", "deallocate prepare"),
    ]);
    // The body is a slice of the input, so its byte range is known.
    let sql = "SET work_mem='5MB'; PREPARE pm(int) AS SELECT $1; SELECT 42";
    let body = classify_all(sql)
        .find_map(|e| match e {
            Effect::Prepare { body, .. } => Some(body),
            _ => None,
        })
        .unwrap();
    assert_eq!(offset_in(sql.as_bytes(), body), Some(39..48));
    assert_eq!(&sql[39..48], "SELECT $1");
}

#[test]
fn listen_notify_discard() {
    check(&[
        ("LISTEN ch", "listen ch"),
        ("LISTEN \"Ch\"", "listen Ch"),
        ("UNLISTEN ch", "unlisten ch"),
        ("UNLISTEN *", "unlisten ALL"),
        ("NOTIFY ch, 'payload'", "notify ch"),
        ("DISCARD ALL", "discard All"),
        ("DISCARD PLANS", "discard Plans"),
        ("DISCARD TEMP", "discard Temp"),
        ("DISCARD TEMPORARY", "discard Temp"),
        ("DISCARD SEQUENCES", "discard Sequences"),
        ("DISCARD EVERYTHING", "other"),
        ("LOAD 'auto_explain'", "load auto_explain"),
        ("LOAD '$libdir/plugins/x'", "load $libdir/plugins/x"),
        ("LOAD foo", "other"),
    ]);
}

#[test]
fn transaction_control() {
    check(&[
        ("BEGIN", "begin"),
        ("begin work", "begin"),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "begin"),
        ("START TRANSACTION READ ONLY", "begin"),
        ("START", "other"),
        ("COMMIT", "commit"),
        ("COMMIT WORK", "commit"),
        ("END TRANSACTION", "commit"),
        ("COMMIT AND CHAIN", "commit and chain"),
        ("COMMIT AND NO CHAIN", "commit"),
        ("END AND CHAIN", "commit and chain"),
        ("ROLLBACK", "rollback"),
        ("ABORT", "rollback"),
        ("ROLLBACK TRANSACTION AND CHAIN", "rollback and chain"),
        ("ABORT AND CHAIN", "rollback and chain"),
        ("SAVEPOINT s1", "savepoint s1"),
        ("RELEASE s1", "release s1"),
        ("RELEASE SAVEPOINT \"S1\"", "release S1"),
        ("ROLLBACK TO s1", "rollback to s1"),
        ("ROLLBACK TO SAVEPOINT s1", "rollback to s1"),
        ("ROLLBACK WORK TO SAVEPOINT s1", "rollback to s1"),
        ("ROLLBACK TRANSACTION TO s1", "rollback to s1"),
        ("PREPARE TRANSACTION 'gid-1'", "prepare transaction gid-1"),
        ("COMMIT PREPARED 'gid-1'", "commit prepared gid-1"),
        ("ROLLBACK PREPARED 'gid-1'", "rollback prepared gid-1"),
    ]);
}

#[test]
fn cursors_and_temp_objects() {
    check(&[
        (
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "declare c with hold",
        ),
        (
            "DECLARE c BINARY INSENSITIVE NO SCROLL CURSOR WITH HOLD FOR SELECT 1",
            "declare c with hold",
        ),
        ("DECLARE c CURSOR FOR SELECT 1", "declare c"),
        ("DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", "declare c"),
        ("CLOSE c", "close c"),
        ("CLOSE ALL", "close ALL"),
        ("CREATE TEMP TABLE t (a int)", "temp TABLE"),
        ("create temporary sequence s", "temp sequence"),
        ("CREATE GLOBAL TEMPORARY TABLE t (a int)", "temp TABLE"),
        ("CREATE LOCAL TEMP VIEW v AS SELECT 1", "temp VIEW"),
        ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "temp VIEW"),
        (
            "CREATE TEMP RECURSIVE VIEW v(n) AS SELECT 1",
            "temp RECURSIVE",
        ),
        ("CREATE TABLE pg_temp.t (a int)", "temp TABLE"),
        (
            "CREATE TABLE IF NOT EXISTS \"pg_temp\".t AS SELECT 1",
            "temp TABLE",
        ),
        ("CREATE UNLOGGED TABLE pg_temp_3.t (a int)", "temp TABLE"),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
            "temp FUNCTION",
        ),
        (
            "CREATE OR REPLACE FUNCTION pg_temp.f() RETURNS int AS 'SELECT 1' LANGUAGE sql",
            "temp FUNCTION",
        ),
        ("CREATE TYPE pg_temp.ty AS (a int)", "temp TYPE"),
        ("SELECT * INTO TEMP t FROM x", "temp TABLE"),
        ("SELECT 1 AS a INTO TEMPORARY TABLE t", "temp TABLE"),
        (
            "WITH w AS (SELECT 1) SELECT * INTO LOCAL TEMP t FROM w",
            "temp TABLE",
        ),
        ("SELECT 1 INTO pg_temp.t", "temp TABLE"),
        // Not temp objects.
        ("CREATE TABLE t (a int)", "other"),
        ("CREATE TABLE t AS SELECT * FROM pg_temp.x", "other"),
        ("CREATE TABLE pg_tempx.t (a int)", "other"),
        ("CREATE TABLE \"PG_TEMP\".t (a int)", "other"),
        ("INSERT INTO temp VALUES (1)", "other"),
        (
            "WITH w AS (SELECT 1) INSERT INTO temp SELECT * FROM w",
            "other",
        ),
        (
            "MERGE INTO temp USING s ON true WHEN MATCHED THEN DELETE",
            "other",
        ),
        ("SELECT 1 INTO t", "other"),
        ("CREATE INDEX ON t (a)", "other"),
    ]);
}

#[test]
fn function_calls_anywhere() {
    check(&[
        ("SELECT set_config('myapp.tenant', '42', false)", "calls set_config[myapp.tenant:false]"),
        ("select SET_CONFIG('a.b', 'x', TRUE)", "calls set_config[a.b:true]"),
        ("SELECT pg_catalog.set_config('a.b'::text, $1, 'off')", "calls set_config[a.b:false]"),
        ("SELECT set_config($1, $2, $3)", "calls set_config[?:?]"),
        ("SELECT set_config('a'||'b', 'x', is_local)", "calls set_config[?:?]"),
        ("SELECT set_config(E'it\\'s', 'x', 't')", "calls set_config[it's:true]"),
        (
            "SELECT set_config('a.x', '1', false), set_config('a.y', set_config('a.z', '3', true), false)",
            "calls set_config[a.x:false, a.y:false, a.z:true]",
        ),
        ("SELECT \"set_config\" ('a.b', 'c', false)", "calls set_config[a.b:false]"),
        ("SELECT pg_advisory_lock(42)", "calls lock"),
        ("SELECT pg_advisory_lock_shared(1, 2)", "calls lock"),
        ("SELECT pg_try_advisory_lock(42)", "calls lock"),
        ("SELECT PG_TRY_ADVISORY_LOCK_SHARED(42)", "calls lock"),
        ("SELECT pg_advisory_unlock(42)", "calls unlock"),
        ("SELECT pg_advisory_unlock_shared(42)", "calls unlock"),
        ("SELECT pg_advisory_unlock_all()", "calls unlock_all"),
        ("SELECT pg_advisory_xact_lock(42)", "calls xact"),
        ("SELECT pg_try_advisory_xact_lock_shared(42)", "calls xact"),
        ("SELECT dblink_connect('c', 'dbname=x')", "calls dblink"),
        ("SELECT dblink_connect_u('dbname=x')", "calls dblink"),
        ("SELECT dblink_disconnect('c')", "calls dblink_disconnect"),
        ("WITH l AS (SELECT pg_advisory_lock(1)) SELECT * FROM l", "calls lock"),
        ("EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", "calls lock"),
        ("CREATE TABLE t AS SELECT pg_advisory_lock(1)", "calls lock"),
        ("UPDATE t SET a = 1 WHERE pg_try_advisory_lock(id)", "calls lock"),
        ("SELECT pg_advisory_lock(1), pg_advisory_unlock(2)", "calls lock unlock"),
        // Not calls: no parenthesis, quoted in a string or dollar quote, other names.
        ("SELECT set_config FROM t", "other"),
        ("SELECT 'set_config(''a'', ''b'', false)'", "other"),
        ("DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$", "other"),
        ("SELECT \"SET_CONFIG\"('a', 'b', false)", "other"),
        ("SELECT my_set_config('a', 'b', false)", "other"),
        // Routine bodies run later, not now.
        (
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC SELECT pg_advisory_lock(1); END",
            "other",
        ),
        // The prepared body does not run at PREPARE.
        ("PREPARE p AS SELECT pg_advisory_lock(1)", "prepare p (-) SELECT pg_advisory_lock(1)"),
    ]);
}

#[test]
fn everything_else_is_other() {
    check(&[
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "other",
        ),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1",
            "other",
        ),
        ("INSERT INTO t (set, reset) VALUES (1, 2)", "other"),
        ("SHOW search_path", "other"),
        ("VACUUM", "other"),
        ("(SELECT 1)", "other"),
        ("ALTER ROLE bob SET work_mem = '1MB'", "other"),
        ("ALTER SYSTEM SET work_mem = '1MB'", "other"),
        ("", "other"),
        ("-- only a comment", "other"),
        ("'", "other"),
    ]);
}

#[test]
fn the_multi_statement_example() {
    let sql = "SET work_mem='5MB'; PREPARE pm(int) AS SELECT $1; SELECT 42";
    let got: Vec<String> = classify_all(sql).map(|e| show(&e)).collect();
    assert_eq!(
        got,
        [
            "set session work_mem = '5MB'",
            "prepare pm (int) SELECT $1",
            "other"
        ]
    );
    let sql =
        "BEGIN; SET LOCAL x.y = 1;; LISTEN ch; SELECT pg_advisory_lock(777); SELECT 1/0; COMMIT";
    let got: Vec<String> = classify_all(sql).map(|e| show(&e)).collect();
    assert_eq!(
        got,
        [
            "begin",
            "set local x.y = 1",
            "listen ch",
            "calls lock",
            "other",
            "commit"
        ]
    );
    // A leading command comment is just a comment to the classifier.
    assert_eq!(
        class("/* pgbaton: migrate to=pg2 */ SET a = 1"),
        "set session a = 1"
    );
    // classify() takes the first statement.
    assert_eq!(class(";; LISTEN a; LISTEN b"), "listen a");
}

#[test]
fn session_state_and_pins() {
    for sql in [
        "SELECT 1",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42; SELECT 2",
        "NOTIFY ch",
        "SET TRANSACTION READ ONLY",
        "SELECT pg_advisory_xact_lock(1)",
        "DECLARE c CURSOR FOR SELECT 1",
        "",
    ] {
        assert!(!changes_session_state(sql), "{sql}");
    }
    for sql in [
        "SELECT 1; SET a = 1",
        "BEGIN",
        "SELECT set_config('a', 'b', false)",
        "PREPARE p AS SELECT 1",
        "DISCARD ALL",
        "LISTEN ch",
        "CLOSE c",
    ] {
        assert!(changes_session_state(sql), "{sql}");
    }
    let pins = |sql: &str| classify(sql).pins();
    assert!(pins("CREATE TEMP TABLE t ()"));
    assert!(pins("DECLARE c CURSOR WITH HOLD FOR SELECT 1"));
    assert!(pins("SELECT pg_advisory_lock(1)"));
    assert!(pins("SELECT dblink_connect('x')"));
    assert!(pins("LOAD 'x'"));
    assert!(!pins("SELECT pg_advisory_xact_lock(1)"));
    assert!(!pins("SELECT pg_advisory_unlock_all()"));
    assert!(!pins("SET a = 1"));
}

#[test]
fn names_decode_lazily_and_exactly() {
    let name = |sql: &'static str| match classify(sql) {
        Effect::Set { name, .. } | Effect::Reset { name } => name,
        e => panic!("{e:?}"),
    };
    let n = name("SET U&\"d\\0061t\\+000061\" = 1");
    assert_eq!(n.to_name(), "data");
    assert_eq!(name("SET \"\" = 1").to_name(), "");
    let n = name("SET Search_Path = x");
    assert_eq!(n.raw(), b"Search_Path");
    assert!(n.eq_name("search_path"));
    assert!(!n.eq_name("Search_Path"));
    assert!(name("SET \"A\" = 1").eq_name("A"));
    let q = name("SET a . \"B\" = 1");
    assert!(q.eq_name("a.B"));
    for other in ["a.b", "A.B", "a.B.c", "a", "a.", "", "a.Bx"] {
        assert!(!q.eq_name(other), "{other}");
    }
    assert!(name("SET \"x\"\"y\" = 1").eq_name("x\"y"));
    assert!(name("SET U&\"\\0061\" = 1").eq_name("a"));
    assert_eq!(name("SET TIME ZONE 'UTC'").raw(), b"timezone");
    assert_eq!(format!("{}", name("RESET \"X\"\"Y\"")), "X\"Y");
    // Truncation keeps whole UTF-8 characters.
    let long = format!("SET \"{}\" = 1", "é".repeat(40));
    let n = name(Box::leak(long.into_boxed_str()));
    assert_eq!(n.to_name(), "é".repeat(31));
    // Invalid UTF-8 decodes lossily.
    let e = classify(b"SET a\xff = 1");
    let Effect::Set { name, value, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(name.to_name(), "a\u{fffd}");
    assert_eq!(value, SetValue::Value(b"1"));
}

#[test]
fn string_decoding() {
    let decode = |sql: &'static [u8], syntax: Syntax| match syntax.classify(sql) {
        Effect::Load { file } => file.to_name(),
        e => panic!("{e:?}"),
    };
    let std = Syntax::STANDARD;
    assert_eq!(decode(b"LOAD 'a''b'", std), "a'b");
    assert_eq!(decode(b"LOAD 'a\\n'", std), "a\\n");
    assert_eq!(
        decode(b"LOAD E'a\\n\\t\\\\\\'\\x41\\101\\u00e9\\U0001F600'", std),
        "a\n\t\\'AA\u{e9}\u{1F600}"
    );
    assert_eq!(decode(b"LOAD E'\\ud83d\\ude00'", std), "\u{1F600}");
    assert_eq!(decode(b"LOAD U&'d\\0061t\\+000061 \\\\'", std), "data \\");
    assert_eq!(decode(b"LOAD U&'\\D83D\\DE00'", std), "\u{1F600}");
    assert_eq!(decode(b"LOAD 'ab'\n  'cd'", std), "abcd");
    assert_eq!(decode(b"LOAD N'x'", std), "x");
    assert_eq!(decode(b"LOAD 'unterminated", std), "unterminated");
    assert_eq!(decode(b"LOAD E'bad\\", std), "bad");
    let off = Syntax {
        standard_conforming_strings: false,
    };
    assert_eq!(decode(b"LOAD 'a\\'b'", off), "a'b");
    let ident = Ident::fixed("x");
    assert_eq!(ident.to_name(), "x");
}
