//! Tokens and statement boundaries: every quoting form of manual 4.1.

use super::{lossy, stmts};
use crate::sql::{offset_in, statements, Lexer, StrKind, Syntax, TokenKind};

fn kinds(sql: &str) -> Vec<(TokenKind, String)> {
    Lexer::new(sql).map(|t| (t.kind, lossy(t.text))).collect()
}

#[test]
fn splits_on_top_level_semicolons_only() {
    let rows: &[(&str, &[&str])] = &[
        ("SELECT 1; SELECT 2", &["SELECT 1", "SELECT 2"]),
        ("SELECT 1;", &["SELECT 1"]),
        (";; SELECT 1 ;;; ", &["SELECT 1"]),
        ("", &[]),
        ("  ;  -- nothing\n ; /* x */", &[]),
        ("SELECT 'a;b'; SELECT 2", &["SELECT 'a;b'", "SELECT 2"]),
        ("SELECT 'it''s;'; SELECT 2", &["SELECT 'it''s;'", "SELECT 2"]),
        ("SELECT \"a;b\" FROM t; SELECT 2", &["SELECT \"a;b\" FROM t", "SELECT 2"]),
        ("SELECT \"a\"\";b\"; SELECT 2", &["SELECT \"a\"\";b\"", "SELECT 2"]),
        ("SELECT E'\\';'; SELECT 2", &["SELECT E'\\';'", "SELECT 2"]),
        ("SELECT e'\\\\'; SELECT 2", &["SELECT e'\\\\'", "SELECT 2"]),
        // Without E, a backslash is an ordinary character (standard_conforming_strings).
        ("SELECT 'a\\'; SELECT 2", &["SELECT 'a\\'", "SELECT 2"]),
        ("SELECT U&'\\0041;'; SELECT 2", &["SELECT U&'\\0041;'", "SELECT 2"]),
        ("SELECT U&\"a;b\"; SELECT 2", &["SELECT U&\"a;b\"", "SELECT 2"]),
        ("SELECT B'10;'; SELECT X'F;'", &["SELECT B'10;'", "SELECT X'F;'"]),
        ("SELECT N'x;y'; SELECT 2", &["SELECT N'x;y'", "SELECT 2"]),
        ("SELECT $$a;b$$; SELECT 2", &["SELECT $$a;b$$", "SELECT 2"]),
        (
            "CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN; RETURN 1; END $fn$ LANGUAGE plpgsql; SELECT f()",
            &[
                "CREATE FUNCTION f() RETURNS int AS $fn$ BEGIN; RETURN 1; END $fn$ LANGUAGE plpgsql",
                "SELECT f()",
            ],
        ),
        ("SELECT $a$ $b$ ; $b$ $a$; SELECT 2", &["SELECT $a$ $b$ ; $b$ $a$", "SELECT 2"]),
        ("SELECT $a$ x$ba$a$; SELECT 2", &["SELECT $a$ x$ba$a$", "SELECT 2"]),
        // Tags are case-sensitive.
        ("SELECT $A$ ; $a$ ; $A$; SELECT 2", &["SELECT $A$ ; $a$ ; $A$", "SELECT 2"]),
        // $1 is a parameter, not a dollar quote.
        ("SELECT $1; SELECT $2", &["SELECT $1", "SELECT $2"]),
        ("SELECT $1::int;SELECT $12", &["SELECT $1::int", "SELECT $12"]),
        // $ inside an identifier opens nothing.
        ("SELECT a$b$; SELECT 2", &["SELECT a$b$", "SELECT 2"]),
        ("SELECT $ab; SELECT 2", &["SELECT $ab", "SELECT 2"]),
        ("SELECT 1 -- c; c\n; SELECT 2", &["SELECT 1", "SELECT 2"]),
        ("SELECT 1 /* a /* ; */ ; */ ; SELECT 2", &["SELECT 1", "SELECT 2"]),
        ("SELECT 1 /* a /* ; */ ; */ + 1", &["SELECT 1 /* a /* ; */ ; */ + 1"]),
        // An operator stops before -- and /*.
        ("SELECT 1 +-- c;\n 2; SELECT 3", &["SELECT 1 +-- c;\n 2", "SELECT 3"]),
        ("SELECT 2 */* c; */ 3; SELECT 4", &["SELECT 2 */* c; */ 3", "SELECT 4"]),
        // String continuation across a newline (and a comment line).
        ("SELECT 'a'\n';b'; SELECT 2", &["SELECT 'a'\n';b'", "SELECT 2"]),
        ("SELECT 'a' -- c\n  ';b'; SELECT 2", &["SELECT 'a' -- c\n  ';b'", "SELECT 2"]),
        // Parentheses: CREATE RULE with several actions.
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b); SELECT 1",
            &["CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b)", "SELECT 1"],
        ),
        // A stray ')' does not go negative.
        ("SELECT 1); SELECT 2", &["SELECT 1)", "SELECT 2"]),
    ];
    for (sql, want) in rows {
        assert_eq!(stmts(sql), *want, "statements({sql:?})");
    }
}

#[test]
fn sql_standard_function_bodies_keep_their_semicolons() {
    let sql = "CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql \
               BEGIN ATOMIC SELECT CASE WHEN x > 0 THEN 1 ELSE 2 END; SELECT x; END; SELECT 3";
    let got = stmts(sql);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].ends_with("SELECT x; END"), "{got:?}");
    assert_eq!(got[1], "SELECT 3");
    let proc = "create procedure p() begin atomic insert into t values (1); end; select 1";
    assert_eq!(
        stmts(proc),
        [
            "create procedure p() begin atomic insert into t values (1); end",
            "select 1"
        ]
    );
    // Outside CREATE FUNCTION, BEGIN is a transaction.
    assert_eq!(stmts("BEGIN; SELECT 1; END"), ["BEGIN", "SELECT 1", "END"]);
}

#[test]
fn unterminated_everything_runs_to_the_end() {
    let rows: &[(&str, &[&str])] = &[
        ("SELECT 'abc; SET x = 1", &["SELECT 'abc; SET x = 1"]),
        (
            "SELECT E'abc\\'; SET x = 1",
            &["SELECT E'abc\\'; SET x = 1"],
        ),
        ("SELECT E'\\", &["SELECT E'\\"]),
        ("SELECT \"abc; SET x = 1", &["SELECT \"abc; SET x = 1"]),
        ("SELECT $$abc; SET x = 1", &["SELECT $$abc; SET x = 1"]),
        (
            "SELECT $t$abc $t; SET x = 1",
            &["SELECT $t$abc $t; SET x = 1"],
        ),
        ("SELECT 1 /* abc; SET x = 1", &["SELECT 1"]),
        ("SELECT 1 /* a /* b */ ; SET x = 1", &["SELECT 1"]),
        ("SELECT 1 -- abc; SET x = 1", &["SELECT 1"]),
        ("SELECT (1; SELECT 2", &["SELECT (1; SELECT 2"]),
        ("SELECT U&'", &["SELECT U&'"]),
        ("'", &["'"]),
        ("$", &["$"]),
        ("/*", &[]),
    ];
    for (sql, want) in rows {
        assert_eq!(stmts(sql), *want, "statements({sql:?})");
    }
    let t = Lexer::new("'abc").next().unwrap();
    assert!(!t.terminated);
    assert!(Lexer::new("'abc'").next().unwrap().terminated);
}

#[test]
fn standard_conforming_strings_off_makes_backslash_an_escape() {
    let sql = b"SELECT 'a\\'; SET x = 1'; SELECT 2";
    let off = Syntax {
        standard_conforming_strings: false,
    };
    let got: Vec<String> = off.statements(sql).map(lossy).collect();
    assert_eq!(got, ["SELECT 'a\\'; SET x = 1'", "SELECT 2"]);
    let on: Vec<String> = statements(sql).map(lossy).collect();
    assert_eq!(on, ["SELECT 'a\\'", "SET x = 1'; SELECT 2"]);
    let t = Lexer::with_syntax(b"'x'", off).next().unwrap();
    assert_eq!(t.kind, TokenKind::String(StrKind::Escape));
    let t = Lexer::with_syntax(b"U&'x'", off).next().unwrap();
    assert_eq!(t.kind, TokenKind::String(StrKind::Unicode));
}

#[test]
fn token_kinds() {
    use TokenKind::*;
    let got = kinds("SET x=-1; SELECT a.b::int[1], $1, $q$x$q$ FROM \"T\" WHERE y<>2.5e-3 -- c");
    let want = [
        (Ident, "SET"),
        (Ident, "x"),
        (Operator, "="),
        (Operator, "-"),
        (Number, "1"),
        (Semicolon, ";"),
        (Ident, "SELECT"),
        (Ident, "a"),
        (Dot, "."),
        (Ident, "b"),
        (Punct, "::"),
        (Ident, "int"),
        (Punct, "["),
        (Number, "1"),
        (Punct, "]"),
        (Comma, ","),
        (Param, "$1"),
        (Comma, ","),
        (DollarString, "$q$x$q$"),
        (Ident, "FROM"),
        (QuotedIdent, "\"T\""),
        (Ident, "WHERE"),
        (Ident, "y"),
        (Operator, "<>"),
        (Number, "2.5e-3"),
    ];
    let want: Vec<(TokenKind, std::string::String)> =
        want.iter().map(|(k, s)| (*k, s.to_string())).collect();
    assert_eq!(got, want);
    // Operators with one of ~!@#%^&|`? may end in + or -.
    assert_eq!(kinds("a @- b")[1], (Operator, "@-".into()));
    assert_eq!(kinds("a *- b")[1], (Operator, "*".into()));
    let strs = kinds("E'a' e'b' N'c' B'1' x'f' U&'d' 'e'");
    let k: Vec<TokenKind> = strs.iter().map(|(k, _)| *k).collect();
    use StrKind::*;
    assert_eq!(
        k,
        [
            String(Escape),
            String(Escape),
            String(Standard),
            String(Bit),
            String(Bit),
            String(Unicode),
            String(Standard)
        ]
    );
    // A prefix letter glued to a longer word is just an identifier.
    assert_eq!(kinds("xe'a'")[0], (Ident, "xe".into()));
    assert_eq!(kinds("u&v")[0], (Ident, "u".into()));
    assert_eq!(kinds("0x1F 1_000 .5")[0], (Number, "0x1F".into()));
    assert_eq!(kinds("\\ {")[0].0, Other);
}

#[test]
fn non_utf8_and_multibyte_text() {
    let sql = b"SELECT \xff\xfe; SELECT '\xc3(' ; SELECT caf\xc3\xa9";
    let got: Vec<&[u8]> = statements(sql).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2], b"SELECT caf\xc3\xa9");
    let t: Vec<_> = Lexer::new(b"caf\xc3\xa9 \xff").collect();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].kind, TokenKind::Ident);
}

#[test]
fn offsets_of_statements() {
    let sql = b"  SET a = 1 ; /* c */ SELECT 2";
    let ranges: Vec<_> = statements(sql)
        .map(|s| offset_in(sql, s).unwrap())
        .collect();
    assert_eq!(ranges, [2..11, 22..30]);
    assert_eq!(offset_in(sql, b"elsewhere"), None);
    let t = Lexer::new(&sql[..]).nth(1).unwrap();
    assert_eq!((t.start, t.end()), (6, 7));
}
