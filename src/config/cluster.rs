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

#[cfg(test)]
mod tests {
    use crate::config::{Config, Overrides};
    use std::time::Duration;

    fn load(cluster: &str, o: &Overrides) -> Result<Config, String> {
        let text = format!(
            "auth = \"trust\"\n[[backends]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n{cluster}"
        );
        Config::from_toml(&text, o).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_a_fleet_of_one_in_memory() {
        let c = load("", &Overrides::default()).unwrap();
        assert!(c.cluster.store.is_memory());
        assert_eq!(c.cluster.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.cluster.store_timeout(), Duration::from_millis(2500));
        assert!(!c.cluster.start_without_store);
        assert!(c.cluster.node_id_or_default(c.listen).ends_with("-6432"));
    }

    #[test]
    fn flags_override_the_file() {
        let o = Overrides {
            cluster_store: Some("etcd://127.0.0.1:2379".into()),
            node_id: Some("px2".into()),
            ..Default::default()
        };
        let c = load("[cluster]\nstore = \"memory\"\nnode_id = \"px1\"\n", &o).unwrap();
        assert_eq!(c.cluster.store.to_string(), "etcd://127.0.0.1:2379");
        assert_eq!(c.cluster.node_id.as_deref(), Some("px2"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (cluster, key) in [
            ("[cluster]\nlease_ttl = \"500ms\"\n", "cluster.lease_ttl"),
            ("[cluster]\nlease_ttl = \"soon\"\n", "cluster.lease_ttl"),
            ("[cluster]\nnode_id = \"a b\"\n", "cluster.node_id"),
            ("[cluster]\nnode_id = \"\"\n", "cluster.node_id"),
            ("[cluster]\nstore = \"zookeeper://x\"\n", "cluster.store"),
            ("[cluster]\nstores = \"memory\"\n", "stores"),
        ] {
            let e = load(cluster, &Overrides::default()).unwrap_err();
            assert!(e.contains(key), "{cluster:?}: {e}");
        }
    }
}
