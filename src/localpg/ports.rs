//! Free TCP ports on 127.0.0.1 for servers to listen on.
//!
//! A port is found by binding port 0 and closing the socket, so another process can still take it
//! before the server binds it; `cluster` retries on "Address already in use". Within this process
//! a [`PortLease`] additionally keeps a port from being handed to two servers, including while a
//! stopped server waits to be restarted on it.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use super::LocalPgError;

/// Ports held by live servers of this process.
static LEASED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// How many kernel-chosen ports to try before giving up (each try is a bind to port 0).
const TRIES: usize = 32;

/// A port reserved for one server until dropped.
#[derive(Debug)]
pub(crate) struct PortLease {
    port: u16,
}

impl PortLease {
    /// Reserves a port the kernel just reported free on 127.0.0.1.
    pub(crate) fn acquire() -> Result<PortLease, LocalPgError> {
        let mut last_error = String::from("every port offered was already leased");
        for _ in 0..TRIES {
            let port =
                match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()) {
                    Ok(addr) => addr.port(),
                    Err(err) => {
                        last_error = format!("binding 127.0.0.1:0: {err}");
                        continue;
                    }
                };
            if LEASED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(port)
            {
                return Ok(PortLease { port });
            }
        }
        Err(LocalPgError::NoFreePort(format!(
            "{TRIES} tries; last: {last_error}"
        )))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        LEASED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::PortLease;

    #[test]
    fn leases_are_distinct_and_released() {
        let a = PortLease::acquire().unwrap();
        let b = PortLease::acquire().unwrap();
        assert_ne!(a.port(), b.port());
        let port = a.port();
        drop(a);
        assert!(!super::LEASED.lock().unwrap().contains(&port));
    }
}
