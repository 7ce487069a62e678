//! Busy polling on the runtime `pgbaton serve` builds: pgbench runs through it
//! with no failed transaction, and the console's counters show spins that
//! ended on a reply (so the hooks are installed and the sessions' sockets
//! watched).
//!
//! A test binary of its own (`cargo test --test busy_poll`): the spins share
//! the machine's cores, and the other tests' load would end them early.

// Not every helper is used here.
#[allow(unused_imports)]
#[path = "integration/harness/mod.rs"]
mod harness;

use crate::harness::programs::{pgbench, run, show, stdout};
use crate::harness::{start_servers, TestProxy};
use pgbaton::proxy::Proxy;
use std::time::Duration;
use tokio::sync::oneshot;

/// The `busy_poll_*` counters of `SHOW STATS`, read with psql.
async fn counters(port: &str) -> (u64, u64, u64) {
    let args = [
        "-X",
        "-A",
        "-t",
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-U",
        "postgres",
        "-d",
        "pgbaton",
        "-c",
        "SHOW STATS",
    ];
    let o = run("psql", &args, &[], None).await;
    assert!(o.status.success(), "SHOW STATS: {}", show(&o));
    let out = stdout(&o);
    let value = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('|'))
            .unwrap_or_else(|| panic!("SHOW STATS has no {name}: {out}"))
            .parse()
            .unwrap()
    };
    (
        value("busy_poll_ready"),
        value("busy_poll_timeouts"),
        value("busy_poll_contended"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_proxy_relays_pgbench_and_its_spins_find_replies() {
    let servers = start_servers(1).await;
    let config = TestProxy::config(
        &[&servers[0]],
        "busy_poll = \"200us\"\nadmin_users = [\"postgres\"]",
    );
    assert_eq!(config.busy_poll, Duration::from_micros(200));

    // The proxy on a thread and runtime of its own, built as `serve` builds
    // them (the test's own runtime has no park hooks).
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let proxy_thread = std::thread::spawn(move || {
        let (runtime, poll) =
            pgbaton::proxy::runtime::build(1, config.busy_poll).expect("runtime builds");
        runtime.block_on(async move {
            let proxy = Proxy::bind(config, pgbaton::admin::console, poll)
                .await
                .expect("proxy binds");
            addr_tx.send(proxy.local_addr()).unwrap();
            tokio::select! {
                _ = proxy.run() => {},
                _ = stop_rx => {},
            }
        });
    });
    let port = addr_rx.await.expect("proxy started").port().to_string();
    let o = pgbench(&port, &["-i", "-s", "1"]).await;
    assert!(o.status.success(), "pgbench -i: {}", show(&o));

    let (ready_before, _, _) = counters(&port).await;
    // One client, back to back: each reply comes within microseconds of
    // the request, which is what the spin waits for.
    let o = pgbench(
        &port,
        &["-n", "-S", "-M", "prepared", "-c", "1", "-t", "3000"],
    )
    .await;
    assert!(o.status.success(), "pgbench -S: {}", show(&o));
    let out = stdout(&o);
    assert!(
        out.contains("number of transactions actually processed: 3000/3000"),
        "{}",
        show(&o)
    );
    assert!(
        out.contains("number of failed transactions: 0 "),
        "{}",
        show(&o)
    );

    // About two parks per transaction. The listener alone would give one
    // (pgbench connecting), so a tenth of the transactions says that the
    // sessions' own sockets end spins: several thousand do, even with the
    // machine busy.
    let (ready, timeouts, contended) = counters(&port).await;
    assert!(
        ready - ready_before >= 300,
        "too few spins ended on a reply: ready {ready_before} -> {ready}, timeouts {timeouts}, contended {contended}"
    );

    let _ = stop_tx.send(());
    proxy_thread.join().expect("proxy thread ends cleanly");
}
