//! Sans-IO PostgreSQL protocol: framing, message tags, startup packets and the
//! messages pgbaton writes itself. Nothing in here touches a socket or tokio,
//! so every function can be unit-tested and fuzzed on byte slices.
//!
//! Reference: <https://www.postgresql.org/docs/15/protocol-message-formats.html>.

pub mod backend;
pub mod codec;
pub mod error;
pub mod frontend;
pub mod startup;
pub mod write;

pub use codec::{Frame, FrameError};
pub use error::{write_client_error, ClientError, Said, SqlState};
