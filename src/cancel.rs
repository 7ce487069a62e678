//! Virtual cancel keys. Each client gets pgbaton's own BackendKeyData; this
//! registry maps it to whichever server connection the session uses now, so a
//! CancelRequest still reaches the right server process after the session has
//! moved.

use crate::config::Backend;
use std::collections::HashMap;
use std::sync::Mutex;

/// Where a cancel for one session goes.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub backend: Backend,
    pub pid: i32,
    pub key: i32,
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, (i32, CancelTarget)>>,
}

impl CancelRegistry {
    /// Registers a session under its client-visible `pid` and secret `key`.
    pub fn register(&self, pid: i32, key: i32, target: CancelTarget) {
        self.lock().insert(pid, (key, target));
    }

    /// Points an existing session at a new server connection.
    pub fn update(&self, pid: i32, target: CancelTarget) {
        if let Some(entry) = self.lock().get_mut(&pid) {
            entry.1 = target;
        }
    }

    /// The server process a session's cancels currently go to.
    pub fn lookup_pid(&self, pid: i32) -> Option<i32> {
        self.lock().get(&pid).map(|(_, t)| t.pid)
    }

    pub fn remove(&self, pid: i32) {
        self.lock().remove(&pid);
    }

    /// The target for a CancelRequest, only if the secret matches: a wrong key
    /// does nothing, as in Postgres.
    pub fn lookup(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        self.lock()
            .get(&pid)
            .filter(|(k, _)| *k == key)
            .map(|(_, t)| t.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, (i32, CancelTarget)>> {
        // A panic while holding this lock cannot leave the map half-written
        // (every operation is a single insert/remove), so poisoning is ignored.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerTls;

    fn target(pid: i32) -> CancelTarget {
        CancelTarget {
            backend: Backend {
                name: "pg1".into(),
                host: "127.0.0.1".into(),
                port: 5432,
                tls: ServerTls::Disable,
                ca_file: None,
                foreign: false,
                draining: false,
            },
            pid,
            key: 99,
        }
    }

    #[test]
    fn wrong_key_finds_nothing() {
        let r = CancelRegistry::default();
        r.register(1, 42, target(100));
        assert!(r.lookup(1, 41).is_none());
        assert_eq!(r.lookup(1, 42).unwrap().pid, 100);
        r.update(1, target(200));
        assert_eq!(r.lookup(1, 42).unwrap().pid, 200);
        r.remove(1);
        assert!(r.lookup(1, 42).is_none());
    }
}
