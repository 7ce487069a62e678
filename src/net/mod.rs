//! Transport: a stream that is plain TCP or TLS, the rustls set-up for both
//! directions (pgbaton as TLS server to clients, as TLS client to backends),
//! and busy polling of the sockets.

#[cfg(target_os = "linux")]
pub mod busy_poll;
#[cfg(not(target_os = "linux"))]
#[path = "busy_poll_off.rs"]
pub mod busy_poll;
mod busy_poll_stats;
pub mod stream;
pub mod tls;

pub use stream::Stream;
