//! The opening of a client connection, before any server is involved:
//! SSLRequest (answered with TLS when a certificate is configured, 'N'
//! otherwise), GSSENCRequest ('N'), CancelRequest, and the StartupMessage.
//!
//! Packets are read with exact-length reads, so no plaintext byte sent after
//! an SSLRequest can be buffered and then treated as if it came over TLS.

use super::env::Env;
use crate::net::Stream;
use crate::protocol::startup::{self, StartupError, StartupPacket, StartupParam};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client opened with.
pub enum Opening {
    /// The stream stays open until the cancel has been handled: clients
    /// (libpq's PQcancel) take its close to mean exactly that.
    Cancel {
        stream: Stream,
        pid: i32,
        key: i32,
        forwarded: bool,
    },
    Startup {
        stream: Stream,
        version: i32,
        params: Vec<StartupParam>,
    },
}

#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("client connection lost during startup: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("TLS handshake with client failed: {0}")]
    Tls(std::io::Error),
    #[error("client sent {0} negotiation requests")]
    TooManyRequests(usize),
}

/// Reads the opening packets of a client connection.
/// On failure the stream is returned, when it is still usable, so the
/// caller can send the client an error.
pub async fn accept(
    tcp: TcpStream,
    env: &Env,
) -> Result<Opening, (HandshakeError, Option<Stream>)> {
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    // A client may try SSL, then GSS (or the reverse) before its startup.
    for _ in 0..3 {
        let packet = match read_packet(&mut stream).await {
            Ok(p) => p,
            Err(e) => return Err((e, Some(stream))),
        };
        let parsed = match startup::parse(&packet) {
            Ok(p) => p,
            Err(e) => return Err((e.into(), Some(stream))),
        };
        match parsed {
            StartupPacket::SslRequest => match (&env.tls_acceptor, stream) {
                (Some(acceptor), Stream::Plain(mut tcp)) => {
                    if let Err(e) = tcp.write_all(b"S").await {
                        return Err((e.into(), None));
                    }
                    match acceptor.accept(tcp).await {
                        Ok(tls) => stream = Stream::Tls(Box::new(tls.into())),
                        Err(e) => return Err((HandshakeError::Tls(e), None)),
                    }
                }
                (_, mut s) => {
                    // No certificate, or SSLRequest twice: refuse TLS.
                    if let Err(e) = s.write_all(b"N").await {
                        return Err((e.into(), None));
                    }
                    stream = s;
                }
            },
            StartupPacket::GssEncRequest => {
                if let Err(e) = stream.write_all(b"N").await {
                    return Err((e.into(), None));
                }
            }
            StartupPacket::Cancel {
                pid,
                key,
                forwarded,
            } => {
                return Ok(Opening::Cancel {
                    stream,
                    pid,
                    key,
                    forwarded,
                })
            }
            StartupPacket::Startup { version, params } => {
                return Ok(Opening::Startup {
                    stream,
                    version,
                    params,
                })
            }
        }
    }
    Err((HandshakeError::TooManyRequests(3), Some(stream)))
}

async fn read_packet(stream: &mut Stream) -> Result<Vec<u8>, HandshakeError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let total = startup::packet_len(&len)?.unwrap_or(0);
    let mut packet = vec![0u8; total];
    packet[..4].copy_from_slice(&len);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}
