//! Properties: nothing panics on any input, tokens tile the text, and joining
//! statements with `;` splits back into exactly those statements.

use proptest::prelude::*;

use super::show;
use crate::sql::{
    classify, classify_all, parse_command, statements, Effect, Lexer, Role, Syntax, Target,
};

/// Decodes every name and walks every set_config call, to reach all code.
fn touch(e: &Effect<'_>) {
    let _ = show(e);
    match e {
        Effect::Set { name, .. } | Effect::Reset { name } => {
            let _ = name.eq_name("x");
        }
        Effect::SetRole {
            role: Role::Name(n),
            ..
        }
        | Effect::Close(Target::Name(n)) => {
            let _ = n.eq_name("none");
        }
        _ => {}
    }
}

/// Text made mostly of the bytes that matter to the lexer.
fn sqlish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        r#"([a-zA-Z_$;'"()\\/*\-+=&.:, \n0-9EUuB]|\$\$|\$t\$|/\*|\*/|--|E'|U&|''){0,80}"#,
    )
    .unwrap()
}

/// A statement with no whitespace or comments at its edges and no `;`
/// outside quotes, comments and parentheses.
fn safe_statement() -> impl Strategy<Value = String> {
    let head = prop::sample::select(vec![
        "SELECT", "set", "values", "SHOW", "x", "LISTEN", "begin",
    ]);
    let part = prop::sample::select(vec![
        "a",
        "Foo$bar",
        "42",
        "1.5e-3",
        "$1",
        "'a;b'",
        "'it''s;'",
        "E'\\';'",
        "e'\\\\'",
        "U&'\\0041;'",
        "\"x;y\"",
        "\"q\"\";\"",
        "U&\"a;\"",
        "$$;$$",
        "$t$ ; $x$ ; $t$",
        "/* ; /* ; */ ; */",
        "-- ; comment\n",
        "(a; b)",
        "'a'\n';'",
        "=",
        "+",
        "::",
        ",",
        "B'01'",
        "set_config('a', 'b', false)",
        "pg_advisory_lock(1)",
    ]);
    (
        head,
        prop::collection::vec(part, 0..8),
        prop::sample::select(vec!["z", "1", "'end'", ")"]),
    )
        .prop_map(|(head, parts, tail)| {
            let mut s = String::from(head);
            for p in parts {
                s.push(' ');
                s.push_str(p);
            }
            if tail == ")" {
                // Keep parentheses balanced: wrap as a call.
                s.push_str(" f(1)");
            } else {
                s.push(' ');
                s.push_str(tail);
            }
            s
        })
}

fn exercise(bytes: &[u8]) {
    for syntax in [
        Syntax::STANDARD,
        Syntax {
            standard_conforming_strings: false,
        },
    ] {
        let stmts: Vec<&[u8]> = syntax.statements(bytes).collect();
        let effects: Vec<Effect<'_>> = syntax.classify_all(bytes).collect();
        assert_eq!(stmts.len(), effects.len());
        for (stmt, effect) in stmts.iter().zip(&effects) {
            // Classifying the slice alone gives the same answer.
            assert_eq!(syntax.classify(stmt), *effect);
            touch(effect);
        }
        let _ = syntax.changes_session_state(bytes);
    }
    let _ = parse_command(bytes).map(|r| r.map_err(|e| e.to_string()));
    check_tiling(bytes);
}

/// Tokens are in order, inside the text, and the gaps between them hold
/// only whitespace and comments.
fn check_tiling(bytes: &[u8]) {
    let mut at = 0;
    for t in Lexer::new(bytes) {
        assert!(t.start >= at && t.end() <= bytes.len() && !t.text.is_empty());
        assert_eq!(
            Lexer::new(&bytes[at..t.start]).next(),
            None,
            "gap before {t:?}"
        );
        at = t.end();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        exercise(&bytes);
    }

    #[test]
    fn never_panics_on_sqlish_text(s in sqlish()) {
        exercise(s.as_bytes());
    }

    #[test]
    fn splitter_returns_exactly_the_joined_statements(
        parts in prop::collection::vec(safe_statement(), 1..6),
        seps in prop::collection::vec(prop::sample::select(vec![";", "; ", " ;\n", ";;", "; -- c\n", ";/* c */"]), 5),
    ) {
        let mut sql = String::new();
        for (i, p) in parts.iter().enumerate() {
            sql.push_str(p);
            sql.push_str(seps[i % seps.len()]);
        }
        let got: Vec<&[u8]> = statements(&sql).collect();
        let want: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(classify_all(&sql).count(), parts.len());
        for p in &parts {
            let _ = classify(p);
        }
    }
}

proptest! {
    // Each case runs 14 inputs.
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn never_panics_on_statement_prefixes(s in safe_statement(), cut in 0usize..200) {
        for head in ["SET ", "SET LOCAL ", "RESET ", "PREPARE p(", "DECLARE c ", "CREATE TEMP ", "/* pgbaton: migrate "] {
            let text = format!("{head}{s}");
            let cut = cut.min(text.len());
            exercise(&text.as_bytes()[..cut]);
            exercise(text.as_bytes());
        }
    }

}
