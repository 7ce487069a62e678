//! Opening a transport to a backend: TCP, then SSLRequest and TLS as the
//! backend's mode asks. Also sends CancelRequests, which need their own
//! connection.

use super::ServerError;
use crate::config::{Backend, ServerTls};
use crate::net::busy_poll::BusyPoll;
use crate::net::{tls, Stream};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

pub async fn connect(
    backend: &Backend,
    tls_connector: Option<&TlsConnector>,
    timeout: Duration,
    poll: &BusyPoll,
) -> Result<Stream, ServerError> {
    match tokio::time::timeout(timeout, connect_inner(backend, tls_connector, poll)).await {
        Ok(r) => r,
        Err(_) => Err(ServerError::Timeout {
            backend: backend.name.clone(),
            addr: backend.addr(),
        }),
    }
}

async fn connect_inner(
    backend: &Backend,
    tls_connector: Option<&TlsConnector>,
    poll: &BusyPoll,
) -> Result<Stream, ServerError> {
    let mut tcp = TcpStream::connect((backend.host.as_str(), backend.port))
        .await
        .map_err(|source| ServerError::Connect {
            backend: backend.name.clone(),
            addr: backend.addr(),
            source,
        })?;
    // Small protocol messages must not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    poll.watch(&tcp);
    let Some(connector) = tls_connector.filter(|_| backend.tls != ServerTls::Disable) else {
        return Ok(Stream::Plain(tcp));
    };
    let io = |source| ServerError::Io {
        backend: backend.name.clone(),
        source,
    };
    tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    match answer[0] {
        b'S' => {}
        b'N' if backend.tls == ServerTls::Prefer => return Ok(Stream::Plain(tcp)),
        b'N' => {
            return Err(ServerError::TlsRefused {
                backend: backend.name.clone(),
            })
        }
        other => {
            return Err(ServerError::Protocol {
                backend: backend.name.clone(),
                reason: format!("unexpected answer {other:#04x} to SSLRequest"),
            })
        }
    }
    let name = tls::server_name(&backend.host).ok_or_else(|| ServerError::Tls {
        backend: backend.name.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "host is not a valid TLS server name",
        ),
    })?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|source| ServerError::Tls {
            backend: backend.name.clone(),
            source,
        })?;
    Ok(Stream::Tls(Box::new(stream.into())))
}

/// Sends a CancelRequest for the server process `pid` with secret `key`.
/// The server answers nothing; it closes the connection.
pub async fn send_cancel(
    backend: &Backend,
    tls_connector: Option<&TlsConnector>,
    timeout: Duration,
    pid: i32,
    key: i32,
) -> Result<(), ServerError> {
    // Short-lived: not worth watching.
    let mut stream = connect(backend, tls_connector, timeout, &BusyPoll::off()).await?;
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&crate::protocol::startup::CANCEL_REQUEST_CODE.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&key.to_be_bytes());
    let io = |source| ServerError::Io {
        backend: backend.name.clone(),
        source,
    };
    stream.write_all(&packet).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    // Wait for the server to close, so the cancel has been handled when we return.
    let mut sink = [0u8; 16];
    let _ = tokio::time::timeout(timeout, stream.read(&mut sink)).await;
    Ok(())
}
