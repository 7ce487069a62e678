//! The `/* pgbaton: ... */` command comment: every form, every error.

use std::time::Duration;

use crate::sql::{parse_command, Command, CommandError, CommentCommand};

fn ok(sql: &str) -> CommentCommand {
    match parse_command(sql) {
        Some(Ok(c)) => c,
        other => panic!("parse_command({sql:?}) = {other:?}"),
    }
}

fn err(sql: &str) -> CommandError {
    match parse_command(sql) {
        Some(Err(e)) => e,
        other => panic!("parse_command({sql:?}) = {other:?}"),
    }
}

fn migrate(to: &str, from: Option<&str>, dry_run: bool, wait: Option<Duration>) -> Command {
    Command::Migrate {
        to: to.into(),
        from: from.map(Into::into),
        dry_run,
        wait,
    }
}

#[test]
fn forms() {
    let sql = "/* pgbaton: migrate to=pg2 */;";
    let c = ok(sql);
    assert_eq!(c.command, migrate("pg2", None, false, None));
    assert_eq!((c.rest, c.has_statement), (29, false));
    assert_eq!(&sql[c.rest..], ";");

    let sql = "/* pgbaton: migrate to=pg2 */ SELECT 1;";
    let c = ok(sql);
    assert_eq!(c.command, migrate("pg2", None, false, None));
    assert!(c.has_statement);
    assert_eq!(&sql[c.rest..], " SELECT 1;");

    let c = ok("/* pgbaton: migrate to=pg2 dry_run */;");
    assert_eq!(c.command, migrate("pg2", None, true, None));
    let c = ok("/* pgbaton: migrate from=pg1 to=pg2 */;");
    assert_eq!(c.command, migrate("pg2", Some("pg1"), false, None));
    let c = ok("\n\t /*pgbaton:MIGRATE  TO=Pg-2\n wait=10s DRY_RUN*/");
    assert_eq!(
        c.command,
        migrate("Pg-2", None, true, Some(Duration::from_secs(10)))
    );
    assert!(!c.has_statement);
    let c = ok("/* PGBATON: migrate to=pg2 */ ;; -- just a comment\n /* another */ ;");
    assert!(!c.has_statement);
    // A nested comment inside the rest does not confuse the end of ours.
    let c = ok("/* pgbaton: migrate to=pg2 */ SELECT /* x */ 1");
    assert!(c.has_statement);
}

#[test]
fn waits() {
    let wait = |w: &str| match ok(&format!("/* pgbaton: migrate to=b wait={w} */")).command {
        Command::Migrate { wait, .. } => wait.unwrap(),
    };
    assert_eq!(wait("500ms"), Duration::from_millis(500));
    assert_eq!(wait("10s"), Duration::from_secs(10));
    assert_eq!(wait("2m"), Duration::from_secs(120));
    assert_eq!(wait("1h"), Duration::from_secs(3600));
    assert_eq!(wait("7"), Duration::from_secs(7));
    assert_eq!(wait("0"), Duration::ZERO);
}

#[test]
fn not_a_command() {
    for sql in [
        "SELECT 1",
        "",
        "   ",
        "/* just a comment */ SELECT 1",
        "/* pgbaton migrate to=pg2 */",
        "/* pg baton: migrate to=pg2 */",
        "-- pgbaton: migrate to=pg2\nSELECT 1",
        "SELECT 1 /* pgbaton: migrate to=pg2 */",
        "/* unterminated",
        "/*",
        "/*/",
    ] {
        assert_eq!(parse_command(sql), None, "{sql:?}");
    }
}

#[test]
fn every_error_names_its_word() {
    let rows = [
        ("/* pgbaton: */", CommandError::MissingVerb, "pgbaton:"),
        (
            "/* pgbaton: move to=pg2 */",
            CommandError::UnknownVerb("move".into()),
            "move",
        ),
        ("/* pgbaton: migrate */", CommandError::MissingTarget, "to="),
        (
            "/* pgbaton: migrate dry_run */",
            CommandError::MissingTarget,
            "to=",
        ),
        (
            "/* pgbaton: migrate to=pg2 color=red */",
            CommandError::UnknownOption("color=red".into()),
            "color=red",
        ),
        (
            "/* pgbaton: migrate to=pg2 force */",
            CommandError::UnknownFlag("force".into()),
            "force",
        ),
        (
            "/* pgbaton: migrate to=pg2 dry-run */",
            CommandError::UnknownFlag("dry-run".into()),
            "dry-run",
        ),
        (
            "/* pgbaton: migrate to=a to=b */",
            CommandError::Duplicate("to=b".into()),
            "to=b",
        ),
        (
            "/* pgbaton: migrate to=a dry_run dry_run */",
            CommandError::Duplicate("dry_run".into()),
            "dry_run",
        ),
        (
            "/* pgbaton: migrate to=pg2 /* x */ */",
            CommandError::UnknownFlag("/*".into()),
            "/*",
        ),
        (
            "/* pgbaton: migrate to=pg2",
            CommandError::Unterminated,
            "*/",
        ),
    ];
    for (sql, want, word) in rows {
        let e = err(sql);
        assert_eq!(e, want, "{sql:?}");
        assert_eq!(e.word(), word);
        assert!(e.to_string().contains(word), "{e} should name {word}");
    }
    for (sql, word) in [
        ("/* pgbaton: migrate to= */", "to="),
        ("/* pgbaton: migrate to=pg2 from= */", "from="),
        ("/* pgbaton: migrate to=pg2 wait=10x */", "wait=10x"),
        ("/* pgbaton: migrate to=pg2 wait= */", "wait="),
        ("/* pgbaton: migrate to=pg2 wait=-1s */", "wait=-1s"),
        ("/* pgbaton: migrate to=pg2 wait=1.5s */", "wait=1.5s"),
        (
            "/* pgbaton: migrate to=pg2 wait=99999999999999999999 */",
            "wait=99999999999999999999",
        ),
        (
            "/* pgbaton: migrate to=pg2 wait=9999999999999999h */",
            "wait=9999999999999999h",
        ),
    ] {
        let e = err(sql);
        assert!(matches!(e, CommandError::BadValue { .. }), "{sql:?}: {e:?}");
        assert!(e.to_string().contains(word), "{e} should name {word}");
    }
    let e = parse_command(b"/* pgbaton: migrate to=\xff */")
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, CommandError::BadValue { .. }), "{e:?}");
    // Long words are quoted, shortened.
    let long = format!("/* pgbaton: migrate to=pg2 {} */", "x".repeat(1000));
    let e = err(&long);
    assert!(e.to_string().len() < 200, "{e}");
}
