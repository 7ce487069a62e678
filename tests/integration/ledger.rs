//! The ledger against the server's own answer (what a transaction undoes,
//! what an error skips, what the server reports): random statement sequences through both protocols
//! must leave the wire-kept ledger agreeing with the server check; the check
//! must see what the wire cannot, leave the client's unnamed statement alone,
//! and wait for a safe point.

use crate::harness::raw::build;
use crate::harness::{start_servers, Raw, TestProxy, TestServer};
use bytes::BytesMut;
use pgbaton::server::check::CheckError;
use pgbaton::session::registry::{CheckReport, SessionEntry};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Longest a check may wait for its safe point in these tests. Only bounds a
/// broken test: at an idle session the check runs at once.
const CHECK_WAIT: Duration = Duration::from_secs(30);

/// The session whose client connected with `application_name=app`. Call it
/// after the client got an answer to a query: a session registers before its
/// relay forwards anything, but after the client's first ReadyForQuery.
fn session(proxy: &TestProxy, app: &str) -> Arc<SessionEntry> {
    let all = proxy.shared.env.sessions.list();
    let names: Vec<String> = all.iter().map(|e| e.application_name()).collect();
    all.into_iter()
        .find(|e| e.application_name() == app)
        .unwrap_or_else(|| panic!("no session with application_name {app}; have {names:?}"))
}

/// A tokio-postgres client through pgbaton named `app`, and its session.
async fn connect(proxy: &TestProxy, app: &str) -> (Client, Arc<SessionEntry>) {
    let client = proxy
        .try_connect(&proxy.conn_str_app("postgres", "postgres", app))
        .await
        .unwrap_or_else(|e| panic!("connecting {app} through pgbaton: {e:?}"));
    client.simple_query("SELECT 1").await.unwrap();
    let entry = session(proxy, app);
    (client, entry)
}

async fn check(entry: &SessionEntry) -> CheckReport {
    entry
        .check(CHECK_WAIT)
        .await
        .unwrap_or_else(|e| panic!("server check of session {}: {e}", entry.id))
}

/// A server check that finds the ledger right.
async fn agreed(entry: &SessionEntry) -> CheckReport {
    let report = check(entry).await;
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    report
}

pub(crate) async fn ledger_rows(entry: &SessionEntry) -> Vec<(String, String, String)> {
    entry
        .ledger()
        .await
        .expect("the session answers")
        .rows
        .into_iter()
        .map(|r| (r.kind.to_string(), r.name, r.value))
        .collect()
}

fn has_row(rows: &[(String, String, String)], kind_prefix: &str, name: &str) -> bool {
    rows.iter()
        .any(|(k, n, _)| k.starts_with(kind_prefix) && n == name)
}

fn server_prepared(report: &CheckReport) -> Vec<&str> {
    report
        .server
        .prepared
        .iter()
        .map(|p| p.name.as_str())
        .collect()
}

fn first_value(msgs: &[SimpleQueryMessage]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    })
}

/// `ledger_role` exists (SET ROLE to it works for the superuser).
fn create_role(server: &TestServer) {
    server.psql(
        "postgres",
        "DO $$ BEGIN CREATE ROLE ledger_role; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
}

// ---------------------------------------------------------------------------
// Property test: random sequences, ledger == server after each.

/// xorshift64*: deterministic and dependency-free. The multiply matters:
/// plain xorshift64's low bits are correlated from one draw to the next
/// (taken modulo a small menu, BEGIN was nearly always followed by the same
/// statement), and a generator that never produces a pattern cannot find a
/// bug in it.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point.
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const DEFAULT_SEED: u64 = 0x5EED_1ED6_E200_0001;

/// `PGBATON_LEDGER_SEED` (decimal or 0x hex), else a fixed default.
fn seed() -> u64 {
    match std::env::var("PGBATON_LEDGER_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("PGBATON_LEDGER_SEED={s:?} is not a u64"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

/// `PGBATON_LEDGER_SEQUENCES` overrides how many sequences a test runs.
fn sequences(default: usize) -> usize {
    std::env::var("PGBATON_LEDGER_SEQUENCES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// The generator's guess of the session's transaction (errors aside): it
/// only steers the choice, so that transactions hold several changes and
/// savepoints that exist are rolled back to and released.
#[derive(Default)]
struct Shadow {
    in_tx: bool,
    savepoints: Vec<u64>,
}

/// One statement of the menu. Errors are part of the game: duplicate
/// PREPAREs, savepoints outside a transaction or unknown, DISCARD ALL in a
/// transaction, anything in a failed transaction.
fn statement(rng: &mut XorShift, shadow: &mut Shadow) -> String {
    let mut n = rng.below(3);
    let m = rng.below(10);
    let mut weights = if shadow.in_tx { IN_TX } else { OUTSIDE_TX };
    if shadow.in_tx && shadow.savepoints.is_empty() {
        // Mostly a savepoint first, then something to roll back to it.
        weights[12] = 6;
        weights[13] = 1;
        weights[14] = 1;
    }
    let i = pick(rng, &weights);
    if (i == 13 || i == 14) && !shadow.savepoints.is_empty() && rng.below(5) != 0 {
        let k = rng.below(shadow.savepoints.len() as u64) as usize;
        n = shadow.savepoints[k];
    }
    match i {
        9 => shadow.in_tx = true,
        10 | 11 => *shadow = Shadow::default(),
        12 if shadow.in_tx => shadow.savepoints.push(n),
        14 => {
            if let Some(k) = shadow.savepoints.iter().rposition(|s| *s == n) {
                shadow.savepoints.truncate(k);
            }
        }
        _ => {}
    }
    match i {
        0 => format!("SET work_mem = '{}MB'", 1 + rng.below(64)),
        // Long enough never to fire: a timeout would be a flaky error.
        1 => format!("SET statement_timeout = {}", 10_000 + rng.below(50_000)),
        2 => "SET search_path = public, pg_catalog".into(),
        3 => "SET TimeZone = 'Asia/Tokyo'".into(),
        4 => format!("SET myapp.k{n} = 'v{m}'"),
        5 => "RESET work_mem".into(),
        6 => format!("RESET myapp.k{n}"),
        7 => "RESET ALL".into(),
        8 => "SET work_mem TO DEFAULT".into(),
        9 => "BEGIN".into(),
        10 => "COMMIT".into(),
        11 => "ROLLBACK".into(),
        12 => format!("SAVEPOINT s{n}"),
        13 => format!("ROLLBACK TO SAVEPOINT s{n}"),
        14 => format!("RELEASE SAVEPOINT s{n}"),
        15 => format!("PREPARE p{n} AS SELECT {n}"),
        16 => format!("DEALLOCATE p{n}"),
        17 => "DEALLOCATE ALL".into(),
        18 => format!("LISTEN ch{n}"),
        19 => format!("UNLISTEN ch{n}"),
        20 => "UNLISTEN *".into(),
        21 => "DISCARD ALL".into(),
        22 => "SELECT 1/0".into(),
        23 => "SET ROLE ledger_role".into(),
        24 => "RESET ROLE".into(),
        25 => "SET work_mem = '3MB'; SELECT 1/0".into(),
        _ => format!("SELECT set_config('myapp.k{n}', 'f{m}', false)"),
    }
}

/// How often each menu item of [`statement`] comes up outside a
/// transaction: BEGIN often, so that transactions are common.
const OUTSIDE_TX: [u64; 27] = [
    3, 2, 2, 2, 3, 1, 1, 1, 1, // settings
    6, 1, 1, // BEGIN, COMMIT, ROLLBACK
    1, 1, 1, // savepoints
    3, 1, 1, // PREPARE, DEALLOCATE
    3, 2, 1, // LISTEN, UNLISTEN
    1, 1, // DISCARD ALL, SELECT 1/0
    2, 1, // role
    1, 2, // SET then error, set_config
];

/// Inside a transaction: ending it seldom, savepoints often, so that a
/// transaction holds several changes and savepoints are rolled back to.
const IN_TX: [u64; 27] = [
    3, 2, 2, 2, 3, 1, 1, 1, 1, // settings
    1, 2, 1, // BEGIN, COMMIT, ROLLBACK
    4, 4, 2, // savepoints
    3, 1, 1, // PREPARE, DEALLOCATE
    3, 2, 1, // LISTEN, UNLISTEN
    1, 1, // DISCARD ALL, SELECT 1/0
    2, 1, // role
    1, 2, // SET then error, set_config
];

/// An index into `weights`, chosen with those weights.
fn pick(rng: &mut XorShift, weights: &[u64]) -> usize {
    let mut r = rng.below(weights.iter().sum());
    for (i, w) in weights.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= w;
    }
    unreachable!("r is below the sum of the weights")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// A simple Query.
    Simple,
    /// tokio-postgres `execute`: Parse of a named statement, Describe, Sync;
    /// Bind, Execute, Sync; Close, Sync when the statement is dropped.
    Named,
    /// tokio-postgres `query_typed`: unnamed Parse, Bind, Describe, Execute,
    /// Sync in one batch; the unnamed statement stays.
    Unnamed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Simple,
    Extended,
}

/// Sends one statement; `Ok` or the SQLSTATE. A connection error fails the
/// test at once with the log so far.
async fn send(client: &Client, via: Via, sql: &str, log: &str) -> Result<(), String> {
    let r = match via {
        Via::Simple => client.simple_query(sql).await.map(drop),
        Via::Named => client.execute(sql, &[]).await.map(drop),
        Via::Unnamed => client.query_typed(sql, &[]).await.map(drop),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) => match e.as_db_error() {
            Some(db) => Err(db.code().code().to_string()),
            None => panic!("connection error on {sql:?} via {via:?}: {e:?}\n{log}"),
        },
    }
}

/// Runs `count` random sequences through `protocol`, a fresh session every
/// 25, and checks the ledger against the server after each.
async fn property(protocol: Protocol, count: usize, seed: u64) {
    let servers = start_servers(1).await;
    create_role(&servers[0]);
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    println!(
        "ledger property test ({protocol:?}): PGBATON_LEDGER_SEED={seed:#x}, {count} sequences"
    );
    let mut rng = XorShift::new(seed);
    let mut current: Option<(Client, Arc<SessionEntry>)> = None;
    // Everything sent on the current session, for the failure report: a
    // difference can come from an earlier sequence on the same session.
    let mut log = String::new();
    let mut coverage = Coverage::default();

    for seq in 0..count {
        if seq % 25 == 0 {
            let app = format!("ledger_prop_{protocol:?}_{seq}").to_lowercase();
            current = Some(connect(&proxy, &app).await);
            log.clear();
            let _ = writeln!(log, "session {app}:");
        }
        let (client, entry) = current.as_ref().expect("a session");
        let len = 5 + rng.below(16) as usize;
        let mut shadow = Shadow::default();
        let _ = writeln!(log, "-- sequence {seq}");
        for _ in 0..len {
            let sql = statement(&mut rng, &mut shadow);
            let via = match protocol {
                Protocol::Simple => Via::Simple,
                Protocol::Extended if rng.below(2) == 0 => Via::Named,
                Protocol::Extended => Via::Unnamed,
            };
            let outcome = send(client, via, &sql, &log).await;
            coverage.statements += 1;
            coverage.errors += usize::from(outcome.is_err());
            coverage.rolled_back_to +=
                usize::from(outcome.is_ok() && sql.starts_with("ROLLBACK TO"));
            let _ = writeln!(
                log,
                "  [{via:?}] {sql}  -> {}",
                outcome.as_ref().err().map_or("ok", String::as_str)
            );
        }
        // End any transaction so the session is idle (a WARNING if none).
        // Half the time try COMMIT first, so that what the sequence did in
        // a transaction is kept as often as it is undone.
        let via = match protocol {
            Protocol::Simple => Via::Simple,
            Protocol::Extended => Via::Unnamed,
        };
        let ends: &[&str] = if rng.below(2) == 0 {
            &["COMMIT", "ROLLBACK"]
        } else {
            &["ROLLBACK"]
        };
        for end in ends {
            if let Err(code) = send(client, via, end, &log).await {
                panic!("{end} failed with {code}\n{log}");
            }
            let _ = writeln!(log, "  [{via:?}] {end}");
        }
        let report = match entry.check(CHECK_WAIT).await {
            Ok(r) => r,
            Err(e) => panic!(
                "seed {seed:#x}, sequence {seq}: server check failed: {e}\nstatements:\n{log}"
            ),
        };
        assert!(
            report.differences.is_empty(),
            "seed {seed:#x} (PGBATON_LEDGER_SEED={seed:#x}), sequence {seq} ({protocol:?}): \
             ledger and server disagree:\n  {}\nstatements:\n{log}\nserver: {:#?}\nledger: {:#?}",
            report.differences.join("\n  "),
            report.server,
            entry.ledger().await.map(|l| l.rows),
        );
        coverage.note(&report);
    }
    println!("{coverage:?}");
    coverage.assert_varied(count);
}

/// What the checks saw, so a generator that degenerated (every statement
/// failing, say) fails the test instead of passing vacuously.
#[derive(Debug, Default)]
struct Coverage {
    statements: usize,
    errors: usize,
    /// Savepoints rolled back to without an error.
    rolled_back_to: usize,
    with_settings: usize,
    with_custom: usize,
    with_prepared: usize,
    with_listen: usize,
    with_role: usize,
}

impl Coverage {
    fn note(&mut self, r: &CheckReport) {
        let s = &r.server;
        self.with_settings += usize::from(!s.settings.is_empty());
        self.with_custom += usize::from(
            s.custom
                .values()
                .any(|v| v.as_deref().is_some_and(|v| !v.is_empty())),
        );
        self.with_prepared += usize::from(s.prepared.iter().any(|p| p.from_sql));
        self.with_listen += usize::from(!s.listen.is_empty());
        self.with_role += usize::from(s.role != "none");
    }

    fn assert_varied(&self, sequences: usize) {
        if sequences < 50 {
            return;
        }
        let tenth = sequences / 10;
        assert!(self.errors * 10 < self.statements * 9, "{self:?}");
        assert!(self.rolled_back_to >= sequences / 50, "{self:?}");
        for (what, n) in [
            ("settings", self.with_settings),
            ("custom settings", self.with_custom),
            ("SQL prepared statements", self.with_prepared),
            ("channels", self.with_listen),
            ("a role", self.with_role),
        ] {
            assert!(n >= tenth, "too few checks saw {what}: {self:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_simple_protocol_ledger_agrees_with_server() {
    property(Protocol::Simple, sequences(300), seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_extended_protocol_ledger_agrees_with_server() {
    // A different stream of statements than the simple-protocol test.
    property(Protocol::Extended, sequences(200), seed() ^ 0xE7E7_E7E7).await;
}

// ---------------------------------------------------------------------------
// What only the server check sees.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_config_inside_a_function_is_found_by_the_server_check() {
    let servers = start_servers(1).await;
    servers[0].psql(
        "postgres",
        "CREATE OR REPLACE FUNCTION f_set() RETURNS void LANGUAGE plpgsql AS $$ BEGIN \
         PERFORM set_config('statement_timeout', '4321', false); \
         PERFORM set_config('myapp.hidden', 'x', false); END $$",
    );
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (client, entry) = connect(&proxy, "ledger_hidden").await;

    let before = check(&entry).await;
    assert!(before.differences.is_empty(), "{:?}", before.differences);

    client.simple_query("SELECT f_set()").await.unwrap();
    let report = check(&entry).await;
    assert_eq!(
        report
            .server
            .settings
            .get("statement_timeout")
            .map(String::as_str),
        Some("4321"),
        "the server check reads pg_settings: {:?}",
        report.server.settings
    );
    assert!(
        report
            .differences
            .iter()
            .any(|d| d.contains("statement_timeout")),
        "the wire never saw statement_timeout change, so the check must report it: {:?}",
        report.differences
    );
    // myapp.hidden is invisible to both: pg_settings hides placeholder
    // settings (pg_settings hides them) and the check asks for custom settings by name, names
    // that come only from the wire. Its name never
    // crossed the wire.
    assert!(
        !report.server.custom.contains_key("myapp.hidden"),
        "{:?}",
        report.server.custom
    );
    let rows = ledger_rows(&entry).await;
    assert!(
        !rows.iter().any(|(_, n, _)| n == "myapp.hidden"),
        "{rows:?}"
    );
    // Yet it is set on the server: the limit is real, not a test artefact.
    let v = client
        .simple_query("SELECT current_setting('myapp.hidden')")
        .await
        .unwrap();
    assert_eq!(first_value(&v).as_deref(), Some("x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_keeps_the_unnamed_statement_and_believes_only_parse_complete() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[
            ("user", "postgres"),
            ("database", "postgres"),
            ("application_name", "ledger_unnamed"),
        ],
    )
    .await;
    // Before the unnamed statement exists: a simple query would destroy it.
    raw.query("SELECT 1").await;
    let entry = session(&proxy, "ledger_unnamed");

    let mut out = BytesMut::new();
    build::parse("", "SELECT 42", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(tags, b"1Z");

    agreed(&entry).await;
    let rows = ledger_rows(&entry).await;
    assert!(
        rows.iter()
            .any(|(k, _, v)| k == "unnamed statement" && v == "SELECT 42"),
        "{rows:?}"
    );

    // A simple query would destroy the unnamed statement: the check ran on this very connection, and the unnamed statement
    // is still there.
    out.clear();
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let msgs = raw.until_rfq().await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(
        tags,
        b"2DCZ",
        "the unnamed statement survived the check: {:?}",
        msgs.iter().find_map(|m| m.message())
    );
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap();
    assert!(row.body.ends_with(b"42"), "{:?}", row.body);

    // A named protocol statement: in the server's list and in the ledger.
    out.clear();
    build::parse("s1", "SELECT 1", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(tags, b"1Z");
    let report = agreed(&entry).await;
    assert!(
        server_prepared(&report).contains(&"s1"),
        "{:?}",
        report.server.prepared
    );
    let rows = ledger_rows(&entry).await;
    assert!(has_row(&rows, "prepared (protocol)", "s1"), "{rows:?}");

    // A Parse after an error in the same batch is skipped by the server,
    // and so by the ledger.
    out.clear();
    build::parse("", "SELECT 1 / (0 * random())::int", &mut out);
    build::bind("", "", &mut out);
    build::execute("", &mut out);
    build::parse("s_after", "SELECT 2", &mut out);
    build::sync(&mut out);
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(tags, b"12EZ");
    let report = agreed(&entry).await;
    let names = server_prepared(&report);
    assert!(
        names.contains(&"s1") && !names.contains(&"s_after"),
        "{names:?}"
    );
    let rows = ledger_rows(&entry).await;
    assert!(has_row(&rows, "prepared", "s1"), "{rows:?}");
    assert!(!has_row(&rows, "prepared", "s_after"), "{rows:?}");
}

/// One unnamed Parse, Bind, Execute per statement, then one Sync.
fn batch(stmts: &[&str], out: &mut BytesMut) {
    for sql in stmts {
        build::parse("", sql, out);
        build::bind("", "", out);
        build::execute("", out);
    }
    build::sync(out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_batch_is_one_implicit_transaction() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (mut raw, _) = Raw::login(
        proxy.addr,
        &[("user", "postgres"), ("application_name", "ledger_batch")],
    )
    .await;
    raw.query("SELECT 1").await;
    let entry = session(&proxy, "ledger_batch");

    // SET and LISTEN in a batch that fails before its Sync are undone;
    // PREPARE is not transactional and stays.
    let mut out = BytesMut::new();
    batch(
        &[
            "SET work_mem = '9MB'",
            "LISTEN ledger_batch_ch",
            "PREPARE ledger_batch_p AS SELECT 1",
            "SELECT 1 / (0 * random())::int",
        ],
        &mut out,
    );
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(tags, b"12C12C12C12EZ");
    let report = agreed(&entry).await;
    assert!(
        !report.server.settings.contains_key("work_mem"),
        "{:?}",
        report.server.settings
    );
    assert!(
        report.server.listen.is_empty(),
        "{:?}",
        report.server.listen
    );
    assert_eq!(server_prepared(&report), ["ledger_batch_p"]);

    // The same batch without the error keeps everything.
    out.clear();
    batch(
        &[
            "SET work_mem = '9MB'",
            "LISTEN ledger_batch_ch",
            "DEALLOCATE ledger_batch_p",
        ],
        &mut out,
    );
    raw.send(&out).await;
    let tags = raw.tags_until_rfq().await;
    assert_eq!(tags, b"12C12C12CZ");
    let report = agreed(&entry).await;
    assert_eq!(
        report.server.settings.get("work_mem").map(String::as_str),
        Some("9216")
    );
    assert_eq!(report.server.listen, ["ledger_batch_ch"]);
    assert!(server_prepared(&report).is_empty());
}

/// Less common ways to change session state, each on a fresh session: the
/// ledger must agree with the server after each, as after the menu above.
/// All failures are collected, so one run shows every form that disagrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_statement_forms_keep_ledger_and_server_in_agreement() {
    let servers = start_servers(1).await;
    create_role(&servers[0]);
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let cases: &[&[&str]] = &[
        &["SET TIME ZONE 'UTC'"],
        &["SET TIME ZONE LOCAL"],
        &["SET NAMES 'UTF8'"],
        &["SET SCHEMA 'public'"],
        &["set WORK_MEM = '2MB'"],
        &["/* comment */ SET work_mem = '2MB'"],
        &["SET statement_timeout = '5s'"],
        &["SET work_mem FROM CURRENT"],
        &["SET search_path TO DEFAULT"],
        &["SET \"MyApp.Tenant\" = 'x'"],
        &["SELECT set_config('MyApp.Up', 'x', false)"],
        &["SELECT pg_catalog.set_config('myapp.qual', 'x', false)"],
        &["SET myapp.e = ''"],
        &["PREPARE \"P2\" AS SELECT 1"],
        &["PREPARE \"P1\" AS SELECT 1", "DEALLOCATE \"P1\""],
        &["LISTEN \"Mixed Case\""],
        &["SET SESSION ROLE ledger_role"],
        &["SET ROLE ledger_role", "SET ROLE NONE"],
        &["SET SESSION AUTHORIZATION ledger_role"],
        &["SET ROLE ledger_role", "SET SESSION AUTHORIZATION DEFAULT"],
        &["BEGIN", "SET LOCAL work_mem = '2MB'", "COMMIT"],
        &["BEGIN", "SELECT set_config('myapp.l', 'x', true)", "COMMIT"],
        &[
            "BEGIN ISOLATION LEVEL REPEATABLE READ",
            "SELECT 1",
            "COMMIT",
        ],
        &["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
        // The ledger records default_transaction_isolation for any SET
        // SESSION CHARACTERISTICS; this one sets default_transaction_read_only.
        &["SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"],
        // set_config('role', ...) is SET ROLE.
        &["SELECT set_config('role', 'ledger_role', false)"],
        // The PREPARE text crossed the wire; EXECUTE runs it.
        &[
            "PREPARE py AS SELECT set_config('work_mem', '5MB', false)",
            "EXECUTE py",
        ],
        // PG 15 leaves transaction_isolation with source 'session' in
        // pg_settings after SET TRANSACTION in a committed transaction
        // (verified on a direct connection). It is not session state: a
        // replay would be refused ("must be called before any query").
        &[
            "BEGIN",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "COMMIT",
        ],
        &["BEGIN", "SET TRANSACTION READ ONLY", "COMMIT"],
    ];
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let (client, entry) = connect(&proxy, &format!("ledger_forms_{i}")).await;
        for sql in case.iter() {
            if let Err(e) = client.simple_query(sql).await {
                failures.push(format!("{case:?}: {sql} failed: {e}"));
            }
        }
        let report = check(&entry).await;
        if !report.differences.is_empty() {
            failures.push(format!("{case:?}: {:?}", report.differences));
        }
    }
    assert!(
        failures.is_empty(),
        "ledger and server disagree after:\n  {}",
        failures.join("\n  ")
    );
}

/// A custom setting name that crossed the wire inside a PREPARE is one the
/// client touched: the check must ask for it (pg_settings hides it), or
/// a move silently loses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_names_inside_prepare_are_asked_for() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (client, entry) = connect(&proxy, "ledger_prepared_custom").await;
    for q in [
        "PREPARE px AS SELECT set_config('myapp.tenant', '42', false)",
        "EXECUTE px",
    ] {
        client.simple_query(q).await.unwrap();
    }
    let v = client
        .simple_query("SELECT current_setting('myapp.tenant')")
        .await
        .unwrap();
    assert_eq!(first_value(&v).as_deref(), Some("42"));
    let report = check(&entry).await;
    assert_eq!(
        report.server.custom.get("myapp.tenant"),
        Some(&Some("42".to_string())),
        "the check did not ask for myapp.tenant: {:?}",
        report.server.custom
    );
    assert!(report.differences.is_empty(), "{:?}", report.differences);
}

// ---------------------------------------------------------------------------
// Blockers.

fn pinned(entry: &SessionEntry) -> String {
    entry.live().summary.pinned.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blockers_seen_on_the_wire_and_by_the_server() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (client, entry) = connect(&proxy, "ledger_blockers").await;
    let report = check(&entry).await;
    assert_eq!(report.server.pin_reason(), None);
    assert_eq!(entry.live().summary.pinned, None);

    // The check runs on the session task, after it published what the last
    // reply changed; so `live()` is current once the check returned.
    client
        .simple_query("CREATE TEMP TABLE ledger_tmp (x int)")
        .await
        .unwrap();
    let report = check(&entry).await;
    assert!(report.server.temp_objects > 0, "{:?}", report.server);
    assert!(
        pinned(&entry).contains("temp objects"),
        "{}",
        pinned(&entry)
    );

    client
        .simple_query("SELECT pg_advisory_lock(42)")
        .await
        .unwrap();
    let report = check(&entry).await;
    assert_eq!(report.server.advisory_locks, 1);
    assert!(pinned(&entry).contains("advisory"), "{}", pinned(&entry));

    for q in ["BEGIN", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "COMMIT"] {
        client.simple_query(q).await.unwrap();
    }
    let report = check(&entry).await;
    assert_eq!(report.server.holdable_cursors, 1);
    assert!(pinned(&entry).contains("WITH HOLD"), "{}", pinned(&entry));
    assert!(report.differences.is_empty(), "{:?}", report.differences);

    // Undone one at a time. The wire cannot see a temp table dropped (DROP
    // TABLE names no temp-ness); the server check can.
    client.simple_query("DROP TABLE ledger_tmp").await.unwrap();
    let report = check(&entry).await;
    assert_eq!(report.server.temp_objects, 0, "{:?}", report.server);
    client.simple_query("CLOSE c").await.unwrap();
    let report = check(&entry).await;
    assert_eq!(report.server.holdable_cursors, 0);
    assert!(!pinned(&entry).contains("WITH HOLD"), "{}", pinned(&entry));
    client
        .simple_query("SELECT pg_advisory_unlock(42)")
        .await
        .unwrap();
    let report = check(&entry).await;
    assert_eq!(report.server.advisory_locks, 0);
    assert!(!pinned(&entry).contains("advisory"), "{}", pinned(&entry));
    assert_eq!(report.server.pin_reason(), None);

    // All three again, then DISCARD ALL clears them on both sides.
    for q in [
        "CREATE TEMP TABLE ledger_tmp2 (x int)",
        "SELECT pg_advisory_lock(7)",
        "BEGIN",
        "DECLARE c2 CURSOR WITH HOLD FOR SELECT 1",
        "COMMIT",
    ] {
        client.simple_query(q).await.unwrap();
    }
    let report = check(&entry).await;
    let reason = report.server.pin_reason().unwrap_or_default();
    assert!(
        reason.contains("temp") && reason.contains("advisory") && reason.contains("WITH HOLD"),
        "{reason}"
    );
    client.simple_query("DISCARD ALL").await.unwrap();
    let report = check(&entry).await;
    assert_eq!(report.server.pin_reason(), None, "{:?}", report.server);
    assert_eq!(entry.live().summary.pinned, None);
    assert!(report.differences.is_empty(), "{:?}", report.differences);
}

// ---------------------------------------------------------------------------
// Transactions: LISTEN rolls back, PREPARE does not.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_rolls_back_and_prepare_survives() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (client, entry) = connect(&proxy, "ledger_tx").await;

    for q in ["BEGIN", "LISTEN ledger_rb", "ROLLBACK"] {
        client.simple_query(q).await.unwrap();
    }
    for q in ["BEGIN", "PREPARE ledger_keep AS SELECT 1", "ROLLBACK"] {
        client.simple_query(q).await.unwrap();
    }
    // The same in one failing implicit transaction.
    let e = client
        .simple_query("PREPARE ledger_keep2 AS SELECT 2; LISTEN ledger_rb2; SELECT 1/0")
        .await;
    assert!(e.is_err());

    let report = agreed(&entry).await;
    assert!(
        report.server.listen.is_empty(),
        "{:?}",
        report.server.listen
    );
    let names = server_prepared(&report);
    assert!(
        names.contains(&"ledger_keep") && names.contains(&"ledger_keep2"),
        "{names:?}"
    );
    let rows = ledger_rows(&entry).await;
    assert!(!rows.iter().any(|(k, _, _)| k == "listen"), "{rows:?}");
    assert!(has_row(&rows, "prepared (SQL)", "ledger_keep"), "{rows:?}");
    assert!(has_row(&rows, "prepared (SQL)", "ledger_keep2"), "{rows:?}");
    assert_eq!(entry.live().summary.listening, 0);
    assert_eq!(entry.live().summary.prepared, 2);
}

// ---------------------------------------------------------------------------
// Safe points.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_wait_for_a_safe_point() {
    let servers = start_servers(1).await;
    let proxy = TestProxy::trust(&[&servers[0]]).await;
    let (client, entry) = connect(&proxy, "ledger_wait").await;

    client.simple_query("BEGIN").await.unwrap();
    client.simple_query("SET work_mem = '7MB'").await.unwrap();
    match entry.check(Duration::from_millis(300)).await {
        Err(CheckError::Timeout(_)) => {}
        other => panic!("a check inside a transaction must wait: {other:?}"),
    }
    // A check waiting does not stop the client.
    let waiting = {
        let entry = entry.clone();
        tokio::spawn(async move { entry.check(CHECK_WAIT).await })
    };
    let v = client.simple_query("SELECT 40 + 2").await.unwrap();
    assert_eq!(first_value(&v).as_deref(), Some("42"));
    // Not yet: 300 ms only observes that it has not completed.
    let mut waiting = waiting;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "the check completed inside a transaction"
    );
    client.simple_query("COMMIT").await.unwrap();
    let report = waiting
        .await
        .unwrap()
        .expect("the waiting check runs at the safe point after COMMIT");
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(
        report.server.settings.get("work_mem").map(String::as_str),
        Some("7168")
    );
    agreed(&entry).await;
    // And the session still works.
    client.simple_query("SELECT 1").await.unwrap();
}
