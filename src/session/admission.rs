//! Who may connect. Authenticated clients count against `max_clients`, the
//! last `admin_reserved_clients` of which only admin users may take (as
//! Postgres keeps superuser_reserved_connections). Clients still starting
//! up (no startup packet yet, or mid-authentication) count apart, against
//! `max_startup_clients`; when that is full, the one that has been starting
//! longest gives way to the newcomer, so silent sockets cannot keep anyone
//! out for longer than it takes to open more of them than there are slots.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Counts of both kinds of client.
#[derive(Debug, Default)]
pub struct Admission {
    authenticated: AtomicUsize,
    next_ticket: std::sync::atomic::AtomicU64,
    /// Clients starting up, oldest first, each with the signal that tells
    /// it to give way.
    starting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
}

/// Why an authenticated client is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every slot is taken.
    All,
    /// Only slots kept for admin users are left.
    ReservedForAdmins,
}

impl Full {
    pub fn message(self) -> &'static str {
        match self {
            Full::All => "sorry, too many clients already",
            Full::ReservedForAdmins => {
                "remaining connection slots are reserved for pgbaton's admin users"
            }
        }
    }
}

/// An authenticated client's slot; given back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    admission: Arc<Admission>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.admission.authenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's place among those starting up; given back when dropped.
#[derive(Debug)]
pub struct StartupTicket {
    admission: Arc<Admission>,
    id: u64,
    give_way: Arc<Notify>,
}

impl StartupTicket {
    /// Resolves when a newer client needs this one's place.
    pub async fn given_way(&self) {
        self.give_way.notified().await
    }
}

impl Drop for StartupTicket {
    fn drop(&mut self) {
        let mut starting = self.admission.starting.lock().expect("not poisoned");
        if let Some(i) = starting.iter().position(|(id, _)| *id == self.id) {
            starting.remove(i);
        }
    }
}

impl Admission {
    /// A new client starts up. When `max` are already starting, the oldest
    /// is told to give way.
    pub fn start(self: &Arc<Self>, max: usize) -> StartupTicket {
        let id = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let give_way = Arc::new(Notify::new());
        let mut starting = self.starting.lock().expect("not poisoned");
        while starting.len() >= max.max(1) {
            if let Some((_, oldest)) = starting.pop_front() {
                // notify_one keeps the permit if the loser is not waiting yet.
                oldest.notify_one();
            }
        }
        starting.push_back((id, give_way.clone()));
        StartupTicket {
            admission: self.clone(),
            id,
            give_way,
        }
    }

    /// Clients starting up now.
    pub fn starting(&self) -> usize {
        self.starting.lock().expect("not poisoned").len()
    }

    /// Authenticated clients now.
    pub fn authenticated(&self) -> usize {
        self.authenticated.load(Ordering::Acquire)
    }

    /// Takes a slot for an authenticated client: anyone below
    /// `max - reserved`, admin users up to `max`.
    pub fn admit(
        self: &Arc<Self>,
        is_admin: bool,
        max: usize,
        reserved: usize,
    ) -> Result<ClientSlot, Full> {
        let limit = if is_admin {
            max
        } else {
            max.saturating_sub(reserved)
        };
        let mut now = self.authenticated.load(Ordering::Acquire);
        loop {
            if now >= limit {
                return Err(if now >= max {
                    Full::All
                } else {
                    Full::ReservedForAdmins
                });
            }
            match self.authenticated.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(ClientSlot {
                        admission: self.clone(),
                    })
                }
                Err(actual) => now = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_slots_are_for_admins_only() {
        let a = Arc::new(Admission::default());
        let _one = a.admit(false, 3, 1).unwrap();
        let _two = a.admit(false, 3, 1).unwrap();
        assert_eq!(a.admit(false, 3, 1).unwrap_err(), Full::ReservedForAdmins);
        let admin = a.admit(true, 3, 1).unwrap();
        assert_eq!(a.admit(true, 3, 1).unwrap_err(), Full::All);
        drop(admin);
        assert_eq!(a.authenticated(), 2);
        a.admit(true, 3, 1).unwrap();
    }

    #[tokio::test]
    async fn the_oldest_starting_client_gives_way() {
        let a = Arc::new(Admission::default());
        let first = a.start(2);
        let second = a.start(2);
        let third = a.start(2);
        // The first was told, even though it was not waiting yet.
        first.given_way().await;
        assert_eq!(a.starting(), 2);
        drop(second);
        drop(first);
        assert_eq!(a.starting(), 1);
        drop(third);
        assert_eq!(a.starting(), 0);
    }
}
