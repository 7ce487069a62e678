//! Transport: a stream that is plain TCP or TLS, the rustls set-up for both
//! directions (pgbaton as TLS server to clients, as TLS client to backends),
//! busy polling of the sockets, and the byte queues a relay reads into
//! ([`Inbox`]) and writes from ([`Outbox`]).

#[cfg(target_os = "linux")]
pub mod busy_poll;
#[cfg(not(target_os = "linux"))]
#[path = "busy_poll_off.rs"]
pub mod busy_poll;
mod busy_poll_stats;
mod inbox;
mod outbox;
pub mod stream;
pub mod tls;

pub use inbox::{Inbox, READ_CHUNK};
pub use outbox::Outbox;
pub use stream::Stream;
