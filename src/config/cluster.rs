//! `[cluster]`: how this replica finds the others. Validated here; the
//! store, membership and election that use it are in `crate::cluster`.

use super::file::RawCluster;
use super::store_url::StoreUrl;
use super::validate::{invalid, parse_duration_key};
use super::ConfigError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// etcd cannot grant less; shorter leases would also leave no room for a
/// renewal's round trip.
const MIN_LEASE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub store: StoreUrl,
    /// This replica's name in the fleet; `None`: hostname-port.
    pub node_id: Option<String>,
    /// Addresses other replicas and operators should use (default: the
    /// listen address; the console is the database `pgbaton` on it).
    pub advertise_client: Option<String>,
    pub advertise_admin: Option<String>,
    /// A registration lives this long without a renewal.
    pub lease_ttl: Duration,
    /// Start even when the store cannot be reached (else: exit non-zero).
    pub start_without_store: bool,
    /// Appends one JSON line per cluster event here (for audits and the
    /// fleet tests' checker).
    pub history: Option<PathBuf>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            store: StoreUrl::Memory,
            node_id: None,
            advertise_client: None,
            advertise_admin: None,
            lease_ttl: Duration::from_secs(10),
            start_without_store: false,
            history: None,
        }
    }
}

impl ClusterSettings {
    /// The node id: as configured, else `hostname-port`.
    pub fn node_id_or_default(&self, listen: SocketAddr) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        format!("{}-{}", hostname(), listen.port())
    }

    /// How long one store call may take: renewals every TTL/3 plus two
    /// timeouts fit in one TTL (Patroni's rule), so a slow store is
    /// noticed before the lease lapses.
    pub fn store_timeout(&self) -> Duration {
        self.lease_ttl / 4
    }
}

/// This machine's (or container's) hostname; `pgbaton` when unknown.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pgbaton".into())
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

pub(super) fn build(raw: Option<RawCluster>) -> Result<ClusterSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(ClusterSettings::default());
    };
    let mut s = ClusterSettings::default();
    if let Some(url) = &raw.store {
        s.store = StoreUrl::parse(url).map_err(|e| invalid("cluster.store", e))?;
    }
    if let Some(id) = raw.node_id {
        if !valid_node_id(&id) {
            return Err(invalid(
                "cluster.node_id",
                format!("{id:?}: use 1 to 63 letters, digits, '-', '_' or '.'"),
            ));
        }
        s.node_id = Some(id);
    }
    s.advertise_client = raw.advertise_client;
    s.advertise_admin = raw.advertise_admin;
    if let Some(ttl) = &raw.lease_ttl {
        s.lease_ttl = parse_duration_key("cluster.lease_ttl", ttl)?;
        if s.lease_ttl < MIN_LEASE_TTL {
            return Err(invalid("cluster.lease_ttl", "must be at least 1s"));
        }
    }
    s.start_without_store = raw.start_without_store.unwrap_or(false);
    s.history = raw.history.map(PathBuf::from);
    Ok(s)
}
