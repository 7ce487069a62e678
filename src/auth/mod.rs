//! Authentication math that is independent of sockets: the server side of
//! SCRAM-SHA-256 (pgbaton checking its clients). Logging in to servers uses
//! `postgres-protocol`'s client side, in `server::auth`.

pub mod scram;
