//! Server connections: connect (TCP, optional TLS), log in with pgbaton's own
//! credentials, and collect what the server announced at startup. A session
//! holds one [`ServerConn`] at a time and can replace it; nothing here is tied
//! to a client.

mod auth;
pub mod batch;
pub mod check;
mod connect;
mod connectors;
mod error;
mod side;
mod startup;

pub use connect::{connect, send_cancel};
pub use connectors::Connectors;
pub use error::ServerError;
pub use side::ServerSide;
pub use startup::{login, Login};

use crate::config::Backend;
use crate::net::Stream;
use bytes::{Bytes, BytesMut};

/// A logged-in server connection, ready for queries.
pub struct ServerConn {
    pub stream: Stream,
    pub backend: Backend,
    /// The server's own BackendKeyData; never shown to clients.
    pub pid: i32,
    pub key: i32,
    /// ParameterStatus values from startup, in order.
    pub params: Vec<(Vec<u8>, Vec<u8>)>,
    /// NoticeResponse messages sent during startup, whole, to forward.
    pub notices: Vec<Bytes>,
    /// Bytes read past the first ReadyForQuery (e.g. an early notification).
    pub leftover: BytesMut,
}

impl ServerConn {
    pub fn param(&self, name: &[u8]) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Connects and logs in to `backend` for a client's session (or a move's
/// target, or a control connection): its startup `params`, and the password
/// the configuration gives pgbaton for `user`. `connector` is the backend's
/// TLS set-up, when it has one.
pub async fn connect_server(
    config: &crate::config::Config,
    backend: &Backend,
    connector: Option<&tokio_rustls::TlsConnector>,
    params: &[crate::protocol::startup::StartupParam],
    user: &str,
    poll: &crate::net::busy_poll::BusyPoll,
) -> Result<ServerConn, ServerError> {
    let stream = connect(backend, connector, config.connect_timeout, poll).await?;
    let password = config.user(user).and_then(|u| u.password_for_servers());
    login(
        stream,
        backend,
        Login {
            params,
            user,
            password,
            timeout: config.connect_timeout,
        },
    )
    .await
}
