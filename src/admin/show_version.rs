//! `SHOW VERSION`.

use super::ResultSet;

pub fn run() -> ResultSet {
    let mut rs = ResultSet::new(vec!["version"]);
    rs.push(vec![Some(format!("pgbaton {}", env!("CARGO_PKG_VERSION")))]);
    rs
}
