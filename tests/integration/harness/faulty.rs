//! A fault-injecting TCP relay: listens on 127.0.0.1:0 and forwards every
//! connection to a real server, byte for byte, until told to cut. A test
//! configures a pgbaton backend with the relay's address and then breaks that
//! backend's connections at exact points: after so many bytes from pgbaton,
//! right after the StartupMessage, the next time pgbaton sends anything, or
//! all at once. It can also hold new connections (accepted, not forwarded)
//! until released: a login that waits as long as a test needs.
//!
//! A cut closes both sockets of a connection; bytes from pgbaton past the cut
//! point are never forwarded, so the server never sees half a request it
//! might act on (apart from what the rule lets through).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// When a connection is cut, counted in bytes sent by pgbaton (the client
/// side of the relay) since that connection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Forward everything.
    None,
    /// Cut once the client sent more than this many bytes; exactly this many
    /// are forwarded.
    AfterClientBytes(u64),
    /// Like `AfterClientBytes`, counted from the end of the StartupMessage.
    AfterStartupPlus(u64),
    /// Cut the first connection whose client sends anything from now on
    /// (nothing of it is forwarded), then go back to `None`.
    NextClientBytes,
}

struct State {
    target: String,
    rule: Mutex<Rule>,
    /// Bumped by `cut_all`: every open connection ends.
    cut_all: watch::Sender<u64>,
    connections: AtomicU64,
    cuts: AtomicU64,
    /// While true, new connections wait before reaching the server.
    hold: watch::Sender<bool>,
}

pub struct FaultyRelay {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyRelay {
    /// Starts a relay to `target` (`host:port`).
    pub async fn start(target: &str) -> FaultyRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let (cut_all, _) = watch::channel(0);
        let state = Arc::new(State {
            target: target.to_string(),
            rule: Mutex::new(Rule::None),
            cut_all,
            connections: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            hold: watch::channel(false).0,
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                st.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(st.clone(), client));
            }
        });
        FaultyRelay { addr, state, task }
    }

    /// `host:port` to give pgbaton as a backend address.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    fn set(&self, rule: Rule) {
        *self.state.rule.lock().unwrap() = rule;
    }

    /// From now on, every connection is cut once pgbaton has sent it more
    /// than `n` bytes (counting from the connection's first byte).
    pub fn cut_after_client_bytes(&self, n: u64) {
        self.set(Rule::AfterClientBytes(n));
    }

    /// From now on, every connection is cut once pgbaton has sent `n` bytes
    /// past its StartupMessage: with trust auth, `n` bytes into the first
    /// request after the login.
    pub fn cut_after_startup_plus(&self, n: u64) {
        self.set(Rule::AfterStartupPlus(n));
    }

    /// The first connection (open or new) on which pgbaton sends anything
    /// from now on is cut before that is forwarded. One shot.
    pub fn cut_on_next_client_bytes(&self) {
        self.set(Rule::NextClientBytes);
    }

    /// Forward everything again (open connections stay as they are).
    pub fn heal(&self) {
        self.set(Rule::None);
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) {
        self.state.cut_all.send_modify(|g| *g += 1);
    }

    /// New connections are accepted but wait, forwarding nothing, until
    /// [`FaultyRelay::release`].
    pub fn hold(&self) {
        self.state.hold.send_replace(true);
    }

    /// A blackhole: open connections end, new ones hang until
    /// [`FaultyRelay::release`].
    pub fn blackhole(&self) {
        self.hold();
        self.cut_all();
    }

    /// Lets held connections (and new ones) through.
    pub fn release(&self) {
        self.state.hold.send_replace(false);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Connections cut by a rule or `cut_all` so far.
    pub fn cuts(&self) -> u64 {
        self.state.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyRelay {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end too.
        self.cut_all();
    }
}

/// How many of `got` new client bytes may pass, given `sent` already passed
/// and the startup length (once known); `None` when all of them may.
fn allowed(rule: Rule, sent: u64, startup_len: Option<u64>, got: u64) -> Option<u64> {
    let limit = match rule {
        Rule::None => return None,
        Rule::AfterClientBytes(n) => n,
        Rule::AfterStartupPlus(n) => startup_len? + n,
        Rule::NextClientBytes => sent,
    };
    if sent + got <= limit {
        None
    } else {
        Some(limit.saturating_sub(sent))
    }
}

async fn serve(state: Arc<State>, mut client: TcpStream) {
    let mut hold = state.hold.subscribe();
    while *hold.borrow_and_update() {
        if hold.changed().await.is_err() {
            return;
        }
    }
    let Ok(mut server) = TcpStream::connect(&state.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut cut_rx = state.cut_all.subscribe();
    cut_rx.borrow_and_update();
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut cbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    let mut sent: u64 = 0;
    // The StartupMessage's length, from its first four bytes.
    let mut head: Vec<u8> = Vec::with_capacity(4);
    let mut startup_len: Option<u64> = None;
    loop {
        tokio::select! {
            r = cr.read(&mut cbuf) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = &cbuf[..n];
                if startup_len.is_none() {
                    let take = (4 - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                    if head.len() == 4 {
                        startup_len =
                            Some(u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64);
                    }
                }
                let rule = {
                    let mut g = state.rule.lock().unwrap();
                    let rule = *g;
                    if rule == Rule::NextClientBytes {
                        *g = Rule::None;
                    }
                    rule
                };
                match allowed(rule, sent, startup_len, n as u64) {
                    None => {
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                        sent += n as u64;
                    }
                    Some(k) => {
                        let _ = sw.write_all(&chunk[..k as usize]).await;
                        let _ = sw.flush().await;
                        state.cuts.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
            r = sr.read(&mut sbuf) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if cw.write_all(&sbuf[..n]).await.is_err() {
                    break;
                }
            }
            r = cut_rx.changed() => {
                if r.is_ok() {
                    state.cuts.fetch_add(1, Ordering::SeqCst);
                }
                break;
            }
        }
    }
    // Dropping both streams closes both sides.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_let_exactly_the_limit_through() {
        assert_eq!(allowed(Rule::None, 0, None, 100), None);
        assert_eq!(allowed(Rule::AfterClientBytes(10), 0, None, 5), None);
        assert_eq!(allowed(Rule::AfterClientBytes(10), 5, None, 5), None);
        assert_eq!(allowed(Rule::AfterClientBytes(10), 5, None, 6), Some(5));
        assert_eq!(allowed(Rule::AfterStartupPlus(3), 0, None, 4), None);
        assert_eq!(
            allowed(Rule::AfterStartupPlus(3), 0, Some(40), 50),
            Some(43)
        );
        assert_eq!(allowed(Rule::NextClientBytes, 70, Some(40), 1), Some(0));
    }
}
