//! The test harness: Postgres servers (local throwaway ones, or servers
//! someone already runs, named by `PGBATON_TEST_SERVERS=host:port,...`), an
//! in-process pgbaton, tokio-postgres clients and a raw protocol client.

#![allow(dead_code)]

pub mod certs;
pub mod etcd;
pub mod faulty;
pub mod fleet;
pub mod helpers;
pub mod programs;
pub mod proxy;
pub mod raw;
pub mod servers;

pub use helpers::*;
pub use proxy::TestProxy;
pub use raw::{Msg, Raw};
pub use servers::{start_servers, start_servers_with, TestServer};

use std::sync::Once;

/// Logs of pgbaton in tests go to the test's captured output (RUST_LOG).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("pgbaton=info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// The SQLSTATE of a tokio-postgres error, or a panic naming the error.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(c) => c.code().to_string(),
        None => panic!("expected an error with a SQLSTATE, got: {e:?}"),
    }
}

/// The error of a result that must have failed (clients are not `Debug`, so
/// `expect_err` is not available).
pub fn must_fail<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> tokio_postgres::Error {
    match r {
        Ok(_) => panic!("expected a failure: {what}"),
        Err(e) => e,
    }
}
