//! Routing: which backends sessions may be on or move to, which one new
//! sessions go to, and which are being drained. It is its own value with a
//! version, apart from the configuration: the configuration is the
//! catalogue read from the file, while routing also changes at run time
//! (SCALE OUT adds a backend and makes it the default). A RELOAD builds the
//! routing anew from the file *and* what run time added, so it never drops
//! a backend or a default that sessions run on. Published through a
//! `watch`, so the fleet can later feed it from its store.

use crate::config::{Backend, Config};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::watch;

/// In a fleet this is the value of the store's routing record (see
/// `cluster::records::ROUTING`), and `version` is that record's revision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Routing {
    /// Bumped by every change; in a fleet, the store revision of the
    /// committed record.
    #[serde(skip)]
    pub version: u64,
    /// In order: the file's, then those added at run time.
    pub backends: Vec<Backend>,
    /// Where new sessions go.
    pub default: String,
    /// Backends being drained: new sessions avoid them, their sessions are
    /// moved away.
    pub draining: BTreeSet<String>,
    /// Backends added at run time (SCALE OUT's hook), kept across RELOAD.
    pub added: BTreeSet<String>,
    /// The default was chosen at run time (SCALE OUT): a RELOAD keeps it
    /// unless the file now drains or drops it.
    pub chosen_default: bool,
}

impl Routing {
    /// The routing the configuration describes: its backends in order, the
    /// first one not draining as the default.
    pub fn from_config(config: &Config) -> Routing {
        let draining: BTreeSet<String> = config
            .backends
            .iter()
            .filter(|b| b.draining)
            .map(|b| b.name.clone())
            .collect();
        // Validation guarantees at least one backend.
        let default = config
            .backends
            .iter()
            .find(|b| !b.draining)
            .unwrap_or(&config.backends[0])
            .name
            .clone();
        Routing {
            version: 1,
            backends: config.backends.clone(),
            default,
            draining,
            added: BTreeSet::new(),
            chosen_default: false,
        }
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn default_backend(&self) -> &Backend {
        self.backend(&self.default).unwrap_or(&self.backends[0])
    }

    pub fn is_draining(&self, name: &str) -> bool {
        self.draining.contains(name)
    }

    /// SCALE OUT: `backend` becomes the default, added when it is new, and
    /// is no longer drained.
    pub fn scaled_out(&self, backend: Backend) -> Routing {
        let mut next = self.clone();
        next.version += 1;
        next.draining.remove(&backend.name);
        if next.backend(&backend.name).is_none() {
            next.added.insert(backend.name.clone());
            next.backends.push(backend.clone());
        }
        next.default = backend.name;
        next.chosen_default = true;
        next
    }

    /// RELOAD: the file's catalogue, plus the backends run time added that
    /// the file does not name; the default chosen at run time while the
    /// file neither drains nor drops it.
    pub fn reloaded(&self, config: &Config) -> Routing {
        let mut next = Routing::from_config(config);
        next.version = self.version + 1;
        for name in &self.added {
            if next.backend(name).is_none() {
                if let Some(b) = self.backend(name) {
                    next.backends.push(b.clone());
                    next.added.insert(name.clone());
                }
            }
        }
        if self.chosen_default
            && next.backend(&self.default).is_some()
            && !next.is_draining(&self.default)
        {
            next.default = self.default.clone();
            next.chosen_default = true;
        }
        next
    }
}

/// Backends named alike in `a` and `b` with different addresses: one
/// line each. A backend's name means one server across the fleet; a new
/// address is a new backend.
pub fn address_conflicts(a: &[Backend], b: &[Backend]) -> Vec<String> {
    let mut out = Vec::new();
    for x in a {
        if let Some(y) = b.iter().find(|y| y.name == x.name) {
            if (x.host.as_str(), x.port) != (y.host.as_str(), y.port) {
                out.push(format!(
                    "backend \"{}\" is {} here but {} in the fleet's routing",
                    x.name,
                    x.addr(),
                    y.addr()
                ));
            }
        }
    }
    out
}

impl Routing {
    /// Why `next` may not replace this routing, if it may not: its default
    /// is not one of its backends, it gives a backend another address, or
    /// it removes a backend that sessions still run on (`sessions`: per
    /// backend, across the fleet, with who holds them).
    pub fn refuse(
        &self,
        next: &Routing,
        sessions: &BTreeMap<String, Vec<(String, usize)>>,
    ) -> Option<String> {
        if next.backend(&next.default).is_none() {
            return Some(format!(
                "the default backend \"{}\" is not one of the backends",
                next.default
            ));
        }
        let conflicts = address_conflicts(&next.backends, &self.backends);
        if !conflicts.is_empty() {
            return Some(format!(
                "{}; give a new address a new backend name",
                conflicts.join("; ")
            ));
        }
        for b in &self.backends {
            if next.backend(&b.name).is_some() {
                continue;
            }
            let holders: Vec<String> = sessions
                .get(&b.name)
                .into_iter()
                .flatten()
                .filter(|(_, n)| *n > 0)
                .map(|(node, n)| format!("{n} at {node}"))
                .collect();
            if !holders.is_empty() {
                return Some(format!(
                    "backend \"{}\" would be removed while sessions run on it ({}); mark it draining first, so they move",
                    b.name,
                    holders.join(", ")
                ));
            }
        }
        None
    }
}

/// The current routing, for every session of one proxy.
pub struct RoutingTable {
    tx: watch::Sender<Arc<Routing>>,
}

impl RoutingTable {
    pub fn new(routing: Routing) -> RoutingTable {
        RoutingTable {
            tx: watch::channel(Arc::new(routing)).0,
        }
    }

    pub fn current(&self) -> Arc<Routing> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Routing>> {
        self.tx.subscribe()
    }

    /// Replaces the routing with what `change` makes of it, as one step.
    pub fn update(&self, change: impl FnOnce(&Routing) -> Routing) -> Arc<Routing> {
        let mut out = None;
        self.tx.send_modify(|r| {
            let next = Arc::new(change(r));
            out = Some(next.clone());
            *r = next;
        });
        out.expect("send_modify runs the change")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(backends: &[&str], extra: &str) -> Config {
        Config::from_toml(
            extra,
            &Overrides {
                backends: backends.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .expect("valid")
    }

    #[test]
    fn reload_keeps_what_scale_out_added_and_chose() {
        let c = config(&["pg1=127.0.0.1:1", "pg2=127.0.0.1:2"], "");
        let r = Routing::from_config(&c);
        assert_eq!(r.default, "pg1");
        let new = config(&["pg3=127.0.0.1:3"], "").backends[0].clone();
        let r = r.scaled_out(new);
        assert_eq!((r.default.as_str(), r.version), ("pg3", 2));
        let r = r.reloaded(&c);
        assert_eq!(r.version, 3);
        assert_eq!(r.default, "pg3", "the default SCALE OUT chose stays");
        assert!(
            r.backend("pg3").is_some(),
            "the backend SCALE OUT added stays"
        );
        assert!(r.backend("pg1").is_some() && r.backend("pg2").is_some());
    }

    #[test]
    fn reload_that_drains_the_chosen_default_moves_the_default() {
        let c = config(&["pg1=127.0.0.1:1", "pg2=127.0.0.1:2"], "");
        let r = Routing::from_config(&c).scaled_out(c.backends[1].clone());
        assert_eq!(r.default, "pg2");
        let mut drained = c.clone();
        drained.backends[1].draining = true;
        let r = r.reloaded(&drained);
        assert_eq!(r.default, "pg1");
        assert!(r.is_draining("pg2"));
    }
}
