//! A raw protocol client, for exact message sequences that drivers never
//! send: Flush without Sync, unknown tags, malformed lengths, 3.2 startup.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A message from the server side.
#[derive(Debug, Clone)]
pub struct Msg {
    pub tag: u8,
    pub body: Bytes,
}

impl Msg {
    /// The `C` field of an ErrorResponse/NoticeResponse.
    pub fn field(&self, kind: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&k, tail)) = rest.split_first() {
            if k == 0 {
                break;
            }
            let nul = tail.iter().position(|&b| b == 0)?;
            if k == kind {
                return Some(String::from_utf8_lossy(&tail[..nul]).into_owned());
            }
            rest = &tail[nul + 1..];
        }
        None
    }

    pub fn code(&self) -> Option<String> {
        self.field(b'C')
    }

    pub fn message(&self) -> Option<String> {
        self.field(b'M')
    }

    /// Name and value, when this is a ParameterStatus.
    pub fn parameter(&self) -> Option<(String, String)> {
        if self.tag != b'S' {
            return None;
        }
        let mut parts = self.body.split(|&b| b == 0);
        let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        Some((next(), next()))
    }
}

/// Longest a test waits for one message before failing (not a sleep: the
/// message normally arrives at once; this only bounds a broken test).
const RECV_LIMIT: Duration = Duration::from_secs(60);

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects, sends a 3.0 StartupMessage and reads up to ReadyForQuery
    /// (trust auth). Returns the startup messages.
    pub async fn login(addr: SocketAddr, params: &[(&str, &str)]) -> (Raw, Vec<Msg>) {
        let mut raw = Raw::connect(addr).await;
        raw.send_startup(params).await;
        let msgs = raw.until_rfq().await;
        assert!(
            msgs.iter().all(|m| m.tag != b'E'),
            "login failed: {:?}",
            msgs.iter()
                .find(|m| m.tag == b'E')
                .and_then(|m| m.message())
        );
        (raw, msgs)
    }

    pub async fn send_startup(&mut self, params: &[(&str, &str)]) {
        let mut out = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut out).unwrap();
        self.send(&out).await;
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads a single byte answer (SSLRequest / GSSENCRequest).
    pub async fn recv_byte(&mut self) -> u8 {
        let mut b = [0u8; 1];
        tokio::time::timeout(RECV_LIMIT, self.stream.read_exact(&mut b))
            .await
            .expect("answer in time")
            .expect("answer");
        b[0]
    }

    /// The next message, or `None` once the server closed the connection.
    pub async fn recv(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).freeze();
                    return Some(Msg { tag, body });
                }
            }
            let n = tokio::time::timeout(RECV_LIMIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("a message in time");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Messages up to and including the next ReadyForQuery.
    pub async fn until_rfq(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        loop {
            let m = self
                .recv()
                .await
                .expect("connection open until ReadyForQuery");
            let done = m.tag == b'Z';
            msgs.push(m);
            if done {
                return msgs;
            }
        }
    }

    /// Reads until the connection closes; returns what came.
    /// The tags of what comes up to and including ReadyForQuery.
    pub async fn tags_until_rfq(&mut self) -> Vec<u8> {
        self.until_rfq().await.iter().map(|m| m.tag).collect()
    }

    pub async fn until_closed(&mut self) -> Vec<Msg> {
        let mut msgs = Vec::new();
        while let Some(m) = self.recv().await {
            msgs.push(m);
        }
        msgs
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Msg> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await;
        self.until_rfq().await
    }
}

/// Message builders for the extended protocol.
pub mod build {
    use super::*;

    pub fn parse(name: &str, sql: &str, out: &mut BytesMut) {
        frontend::parse(name, sql, std::iter::empty(), out).unwrap();
    }

    pub fn bind(portal: &str, stmt: &str, out: &mut BytesMut) {
        frontend::bind(
            portal,
            stmt,
            std::iter::empty::<i16>(),
            std::iter::empty::<()>(),
            |_, _| -> Result<postgres_protocol::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                unreachable!()
            },
            std::iter::empty::<i16>(),
            out,
        )
        .map_err(|_| ())
        .unwrap();
    }

    pub fn execute(portal: &str, out: &mut BytesMut) {
        frontend::execute(portal, 0, out).unwrap();
    }

    pub fn describe_portal(portal: &str, out: &mut BytesMut) {
        frontend::describe(b'P', portal, out).unwrap();
    }

    pub fn sync(out: &mut BytesMut) {
        frontend::sync(out);
    }

    pub fn flush(out: &mut BytesMut) {
        frontend::flush(out);
    }

    pub fn terminate(out: &mut BytesMut) {
        frontend::terminate(out);
    }

    /// Any message by tag and body.
    pub fn message(tag: u8, body: &[u8], out: &mut BytesMut) {
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
    }
}
