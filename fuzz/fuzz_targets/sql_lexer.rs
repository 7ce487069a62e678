//! Fuzzes `pgbaton::sql` on arbitrary bytes (the body of a client's Query):
//! `cargo +nightly fuzz run sql_lexer`. Nothing may panic, the splitter and
//! the classifier must agree on the number of statements, and every name
//! must decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgbaton::sql::{self, Effect, Syntax};

fuzz_target!(|data: &[u8]| {
    for syntax in [
        Syntax::STANDARD,
        Syntax {
            standard_conforming_strings: false,
        },
    ] {
        let statements = syntax.statements(data).count();
        let mut effects = 0;
        for effect in syntax.classify_all(data) {
            effects += 1;
            match effect {
                Effect::Set { name, .. } | Effect::Reset { name } => {
                    let _ = name.to_name();
                }
                Effect::Prepare { name, body, .. } => {
                    let _ = name.to_name();
                    let _ = syntax.classify(body);
                }
                Effect::Calls(calls) => {
                    for call in calls.set_configs() {
                        let _ = call.name.map(|n| n.to_name());
                    }
                }
                _ => {}
            }
        }
        assert_eq!(statements, effects);
        let _ = syntax.changes_session_state(data);
    }
    if let Some(Err(e)) = sql::parse_command(data) {
        let _ = e.to_string();
    }
});
