//! Benchmarks for `pgbaton::sql`: `cargo bench --bench sql_classify`.
//!
//! The proxy classifies every simple Query it relays, so this is hot-path
//! cost: a pgbench-style SELECT, a 4 KB SELECT (both must stay allocation
//! free; `tests/no_alloc.rs` checks that), and a `SET search_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgbaton::sql;

const PGBENCH: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = 42;";
const SET_SEARCH_PATH: &[u8] = b"SET search_path = \"$user\", public, app;";
const COMMAND: &[u8] = b"/* pgbaton: migrate to=pg2 wait=10s */ SELECT 1;";

/// A 4 KB SELECT with strings, quoted names, comments, casts and a dollar quote.
fn long_select() -> Vec<u8> {
    let mut sql = String::from("SELECT /* report */ a.aid, \"Mixed Case\", $q$x;y$q$");
    let mut i = 0;
    while sql.len() < 4000 {
        sql.push_str(&format!(
            ", coalesce(t{i}.col_{i}::text, 'it''s {i};') AS c{i} -- col {i}\n"
        ));
        i += 1;
    }
    sql.push_str(" FROM pgbench_accounts a JOIN t ON t.aid = a.aid WHERE a.aid = $1;");
    sql.into_bytes()
}

fn sql_classify(c: &mut Criterion) {
    let long = long_select();
    let mut g = c.benchmark_group("sql_classify");
    for (name, sql) in [
        ("pgbench_select", PGBENCH),
        ("select_4kb", &long[..]),
        ("set_search_path", SET_SEARCH_PATH),
    ] {
        g.throughput(Throughput::Bytes(sql.len() as u64));
        g.bench_function(format!("classify/{name}"), |b| {
            b.iter(|| sql::classify(black_box(sql)))
        });
        g.bench_function(format!("changes_session_state/{name}"), |b| {
            b.iter(|| sql::changes_session_state(black_box(sql)))
        });
    }
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("statements/select_4kb", |b| {
        b.iter(|| sql::statements(black_box(&long[..])).count())
    });
    g.throughput(Throughput::Bytes(COMMAND.len() as u64));
    g.bench_function("parse_command/migrate", |b| {
        b.iter(|| sql::parse_command(black_box(COMMAND)))
    });
    g.finish();
}

criterion_group!(benches, sql_classify);
criterion_main!(benches);
