//! The classifier's promise: a statement that changes nothing allocates
//! nothing. Checked with a counting global allocator, which is why this is a
//! test binary of its own (`cargo test --test no_alloc`). Counts are per
//! thread, so the test harness's own threads do not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use pgbaton::sql::{self, Effect};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // try_with: the allocator may run while this thread's locals are torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

const PGBENCH: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = 42;";

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

fn assert_no_alloc(sql: &[u8]) {
    let n = allocations(|| {
        let e = sql::classify(black_box(sql));
        assert_eq!(black_box(e), Effect::Other);
        assert_eq!(sql::classify_all(black_box(sql)).count(), 1);
        assert!(!sql::changes_session_state(black_box(sql)));
        assert_eq!(sql::statements(black_box(sql)).count(), 1);
        assert!(sql::parse_command(black_box(sql)).is_none());
    });
    assert_eq!(n, 0, "allocations for {:?}", String::from_utf8_lossy(sql));
}

#[test]
fn pgbench_select_allocates_nothing() {
    assert_no_alloc(PGBENCH);
}

#[test]
fn long_select_allocates_nothing() {
    let sql = long_select();
    assert!(sql.len() >= 4000);
    assert_no_alloc(&sql);
}

#[test]
fn classifying_state_changes_borrows_until_names_are_decoded() {
    let sql = b"SET MyApp.\"tenant\" = \"$user\", public; PREPARE pm(int) AS SELECT $1; \
                SELECT set_config('myapp.tenant', '42', false), pg_advisory_lock(7)";
    let mut effects = Vec::with_capacity(3);
    let n = allocations(|| {
        effects.extend(sql::classify_all(black_box(&sql[..])));
        for e in &effects {
            if let Effect::Calls(calls) = e {
                let call = calls.set_configs().next().unwrap();
                assert_eq!(call.is_local, Some(false));
                assert!(call.name.unwrap().eq_name("myapp.tenant"));
            }
            if let Effect::Set { name, .. } = e {
                assert!(name.eq_name("myapp.tenant"));
            }
        }
    });
    assert_eq!(n, 0);
    assert_eq!(effects.len(), 3);
    // The counter works: decoding a name allocates.
    let Effect::Set { name, .. } = effects[0] else {
        panic!("{:?}", effects[0])
    };
    assert!(allocations(|| assert_eq!(name.to_name(), "myapp.tenant")) > 0);
}
