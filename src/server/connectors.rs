//! The TLS set-up of every backend a session may reach, and which backends
//! were found unreachable at the last attempt. Shared by the sessions, the
//! moves and the admin console of one proxy.

use crate::config::Backend;
use crate::net::tls::{self, TlsError};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use tokio_rustls::TlsConnector;

#[derive(Default)]
pub struct Connectors {
    tls: RwLock<HashMap<String, Option<TlsConnector>>>,
    unreachable: Mutex<HashSet<String>>,
}

impl Connectors {
    /// Connectors for `backends`.
    pub fn new<'a>(
        backends: impl IntoIterator<Item = &'a Backend>,
    ) -> Result<Connectors, TlsError> {
        let c = Connectors::default();
        for b in backends {
            c.add(b)?;
        }
        Ok(c)
    }

    /// Sets up TLS for a backend not known yet; a known one keeps its own.
    pub fn add(&self, backend: &Backend) -> Result<(), TlsError> {
        let mut map = self.tls.write().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&backend.name) {
            map.insert(backend.name.clone(), tls::connector(backend)?);
        }
        Ok(())
    }

    /// The backend's TLS connector, `None` for plain TCP.
    pub fn get(&self, backend: &str) -> Option<TlsConnector> {
        self.tls
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(backend)
            .cloned()
            .flatten()
    }

    /// `ok`, or `unreachable` when the last attempt to log in to it failed
    /// for a reason on the server's side of the network.
    pub fn status(&self, backend: &str) -> &'static str {
        if self.lock().contains(backend) {
            "unreachable"
        } else {
            "ok"
        }
    }

    pub fn note_reachable(&self, backend: &str, reachable: bool) {
        let mut set = self.lock();
        if reachable {
            set.remove(backend);
        } else {
            set.insert(backend.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.unreachable.lock().unwrap_or_else(|p| p.into_inner())
    }
}
