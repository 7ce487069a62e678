//! `SHUTDOWN`: the same graceful stop as SIGTERM.

use super::ResultSet;
use crate::proxy::Shared;

pub fn run(shared: &Shared) -> ResultSet {
    shared.request_shutdown();
    let mut rs = ResultSet::new(vec!["shutdown"]);
    rs.push(vec![Some(
        "stopping: sessions finish their transaction, then close".into(),
    )]);
    rs.tag = "SHUTDOWN".into();
    rs
}
