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

/// Sessions by the secret of their BackendKeyData. The secret, not the
/// pid, is the key: a client's pid is the real pid of its first server
/// backend, and two servers (or one server's recycled pids) can hand out
/// the same pid to two sessions, while pgbaton draws every secret itself
/// and keeps them unique.
///
/// The secret's top byte names the replica that owns the session, so that
/// in a fleet a replica that gets a cancel for another's session knows
/// where to forward it; the other 24 bits are random. (With the pid, which
/// must match too, a guess still needs about 2^24 tries per session, and a
/// wrong one does nothing.)
#[derive(Debug, Default)]
pub struct CancelRegistry {
    node: u8,
    entries: Mutex<HashMap<i32, (i32, CancelTarget)>>,
}

impl CancelRegistry {
    /// The registry of replica `node` (0 when it runs alone).
    pub fn new(node: u8) -> CancelRegistry {
        CancelRegistry {
            node,
            entries: Mutex::default(),
        }
    }

    /// This replica's number.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// The replica a cancel key was given by.
    pub fn node_of(key: i32) -> u8 {
        (key as u32 >> 24) as u8
    }

    /// Registers a session under its client-visible `pid` with a new random
    /// secret, unique among live sessions, and returns the secret.
    pub fn register(&self, pid: i32, target: CancelTarget) -> i32 {
        let mut entries = self.lock();
        loop {
            let key = ((u32::from(self.node) << 24) | (rand::random::<u32>() & 0x00ff_ffff)) as i32;
            if let std::collections::hash_map::Entry::Vacant(v) = entries.entry(key) {
                v.insert((pid, target));
                return key;
            }
        }
    }

    /// Points an existing session at a new server connection.
    pub fn update(&self, key: i32, target: CancelTarget) {
        if let Some(entry) = self.lock().get_mut(&key) {
            entry.1 = target;
        }
    }

    /// The server process a session's cancels currently go to.
    pub fn lookup_pid(&self, key: i32) -> Option<i32> {
        self.lock().get(&key).map(|(_, t)| t.pid)
    }

    pub fn remove(&self, key: i32) {
        self.lock().remove(&key);
    }

    /// The target for a CancelRequest, only if both pid and secret match: a
    /// wrong key does nothing, as in Postgres.
    pub fn lookup(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        self.lock()
            .get(&key)
            .filter(|(p, _)| *p == pid)
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
    fn wrong_keys_find_nothing() {
        let r = CancelRegistry::default();
        let key = r.register(1, target(100));
        assert!(r.lookup(1, key.wrapping_add(1)).is_none());
        assert!(r.lookup(2, key).is_none());
        assert_eq!(r.lookup(1, key).unwrap().pid, 100);
        r.update(key, target(200));
        assert_eq!(r.lookup(1, key).unwrap().pid, 200);
        r.remove(key);
        assert!(r.lookup(1, key).is_none());
    }

    #[test]
    fn two_sessions_with_one_pid_keep_their_own_targets() {
        let r = CancelRegistry::default();
        let a = r.register(7, target(100));
        let b = r.register(7, target(200));
        assert_ne!(a, b);
        assert_eq!(r.lookup(7, a).unwrap().pid, 100);
        assert_eq!(r.lookup(7, b).unwrap().pid, 200);
        r.remove(a);
        assert_eq!(r.lookup(7, b).unwrap().pid, 200);
    }

    #[test]
    fn a_secret_names_its_replica() {
        let r = CancelRegistry::new(0xa7);
        for _ in 0..100 {
            let key = r.register(1, target(100));
            assert_eq!(CancelRegistry::node_of(key), 0xa7);
        }
        assert_eq!(
            CancelRegistry::node_of(CancelRegistry::default().register(1, target(1))),
            0
        );
    }
}
