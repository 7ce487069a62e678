//! One task per client: the opening handshake, client authentication, the
//! login to a server with pgbaton's own credentials, then the relay.
//!
//! A session is its parts: the client side, the server side
//! ([`ServerSide`]: a server connection and what is in flight on it) and
//! the session state (the [`Ledger`](crate::ledger::Ledger)). A move stages
//! a target from the ledger and, at a safe point, puts it in place of the
//! server side (see [`crate::migration`]); the session asks for both.

pub mod admission;
pub mod budget;
pub mod client_auth;
mod client_side;
pub mod command;
mod control;
pub mod env;
pub mod fleet;
mod framing;
pub mod handshake;
mod moving;
pub mod registry;
pub mod relay;
mod steps;

use crate::cancel::{CancelRegistry, CancelTarget};
use crate::config::ADMIN_DATABASE;
use crate::net::Stream;
use crate::protocol::startup::{self, StartupParam, PROTOCOL_3_0};
use crate::protocol::write;
use crate::protocol::{ClientError, Said, SqlState};
use crate::server::{self, ServerError, ServerSide};
use admission::{ClientSlot, StartupTicket};
use bytes::BytesMut;
use env::{Env, Stats};
use handshake::{HandshakeError, Opening};
use registry::{Live, SessionEntry, SessionState};
use relay::{Relay, RelayCtx, RelayEnd};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

/// How long a client may take from connect to authenticated, like Postgres'
/// `authentication_timeout`.
const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// An admin user that opened the console (database `pgbaton`).
pub struct ConsoleClient {
    pub stream: Stream,
    pub user: String,
    /// AuthenticationOk, not sent yet.
    pub out: BytesMut,
}

/// Serves the admin console to one client; the proxy makes it from the
/// console it was given, so sessions never depend on the console.
pub type Console = Arc<
    dyn Fn(
            ConsoleClient,
            watch::Receiver<Option<Instant>>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Serves one client connection to its end. Never panics on client input;
/// every failure is logged and, where the client can still hear it, reported.
pub async fn serve(
    env: Arc<Env>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<Option<Instant>>,
    ticket: StartupTicket,
    console: Console,
) {
    let id = env.ids.next();
    let span = tracing::info_span!(
        "session",
        session.id = id,
        client.addr = %peer,
        user = tracing::field::Empty,
        db = tracing::field::Empty,
        backend = tracing::field::Empty,
    );
    async move {
        Stats::bump(&env.stats.sessions_total);
        // Held for as long as the client is connected.
        let Some((opened, _slot)) = open(&env, tcp, ticket).await else {
            return;
        };
        match opened {
            Opened::Admin(client) => {
                console(client, shutdown).await;
                info!("admin session ended");
            }
            Opened::Proxy(session) => {
                env.stats.sessions_active.fetch_add(1, Ordering::Relaxed);
                let end = run(&env, session, id, peer, shutdown).await;
                env.stats.sessions_active.fetch_sub(1, Ordering::Relaxed);
                info!(reason = ?end, "session ended");
            }
        }
    }
    .instrument(span)
    .await
}

/// A client that got through startup.
enum Opened {
    Proxy(Box<ProxySession>),
    /// An admin user on database `pgbaton`; `out` holds AuthenticationOk.
    Admin(ConsoleClient),
}

struct ProxySession {
    client_pid: i32,
    client_key: i32,
    user: String,
    database: String,
    relay: Relay,
}

/// A client that has authenticated.
struct Started {
    stream: Stream,
    params: Vec<StartupParam>,
    user: String,
    db: String,
    /// AuthenticationOk and what goes with it, not sent yet.
    out: BytesMut,
}

/// Startup under its limits (`max_startup_clients`, the authentication
/// timeout), then a client slot (`max_clients`), then the server login.
/// `None` when the session ended here.
async fn open(
    env: &Arc<Env>,
    tcp: TcpStream,
    ticket: StartupTicket,
) -> Option<(Opened, ClientSlot)> {
    let mut started = tokio::select! {
        s = tokio::time::timeout(AUTH_TIMEOUT, start(env, tcp)) => match s {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(_) => {
                debug!("client did not finish startup in time");
                return None;
            }
        },
        _ = ticket.given_way() => {
            Stats::bump(&env.stats.sessions_refused);
            warn!("closing a client still starting up: a newer one needed its place (max_startup_clients)");
            return None;
        }
    };
    drop(ticket);
    let config = env.config();
    let slot = match env.admission.admit(
        config.is_admin(&started.user),
        config.max_clients,
        config.admin_reserved_clients,
    ) {
        Ok(slot) => slot,
        Err(full) => {
            Stats::bump(&env.stats.sessions_refused);
            warn!(
                max_clients = config.max_clients,
                "client refused: {}",
                full.message()
            );
            fatal(
                &mut started.stream,
                SqlState::TOO_MANY_CONNECTIONS,
                full.message(),
            )
            .await;
            return None;
        }
    };
    let opened = login(env, started).await?;
    Some((opened, slot))
}

/// Handshake and client authentication.
async fn start(env: &Arc<Env>, tcp: TcpStream) -> Option<Started> {
    let (mut stream, version, params) = match handshake::accept(tcp, env).await {
        Ok(Opening::Cancel {
            mut stream,
            pid,
            key,
            forwarded,
        }) => {
            // Closed only once the server has closed the forwarded cancel's
            // connection: a driver that sends its next query on our close
            // must not have it killed by a cancel still on its way.
            forward_cancel(env, pid, key, forwarded).await;
            let _ = stream.shutdown().await;
            return None;
        }
        Ok(Opening::Startup {
            stream,
            version,
            params,
        }) => (stream, version, params),
        Err((e, stream)) => {
            let quiet = matches!(&e, HandshakeError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
            if !quiet {
                Stats::bump(&env.stats.protocol_errors);
                warn!(error = %e, "bad startup");
            }
            // A bad length gets no reply, as from Postgres (COMMERROR): it is
            // what a client that closes at once (Terminate before any
            // startup) or a stranger probing the port sends, and a reply
            // would only be read as an error by the former.
            let silent = matches!(
                &e,
                HandshakeError::Startup(startup::StartupError::BadLength(_))
            );
            if let (Some(mut s), HandshakeError::Startup(err), false) = (stream, &e, silent) {
                let code = match err {
                    startup::StartupError::UnsupportedVersion { .. } => {
                        SqlState::FEATURE_NOT_SUPPORTED
                    }
                    _ => SqlState::PROTOCOL_VIOLATION,
                };
                fatal(&mut s, code, &err.to_string()).await;
            }
            return None;
        }
    };
    let config = env.config();
    let mut out = BytesMut::with_capacity(1024);
    negotiate_version(version, &params, &mut out);

    let Some(user) =
        startup::param(&params, "user").map(|u| String::from_utf8_lossy(u).into_owned())
    else {
        fatal(
            &mut stream,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return None;
    };
    let db = startup::param(&params, "database")
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_else(|| user.clone());
    let span = tracing::Span::current();
    span.record("user", user.as_str());
    span.record("db", db.as_str());

    if startup::is_replication(&params) {
        fatal(
            &mut stream,
            SqlState::FEATURE_NOT_SUPPORTED,
            "pgbaton does not proxy replication connections; connect to the server directly",
        )
        .await;
        return None;
    }

    if !out.is_empty() {
        // NegotiateProtocolVersion goes before authentication, as in Postgres.
        if stream.write_all(&out).await.is_err() {
            return None;
        }
        out.clear();
    }
    if let Err(e) = client_auth::authenticate(&mut stream, env, config.auth, &user, &mut out).await
    {
        warn!(error = %e, detail = e.detail(), "client authentication failed");
        fatal(&mut stream, e.sqlstate(), &e.client_message()).await;
        return None;
    }
    Some(Started {
        stream,
        params,
        user,
        db,
        out,
    })
}

/// The admin console, or the login to the default backend.
async fn login(env: &Arc<Env>, started: Started) -> Option<Opened> {
    let Started {
        mut stream,
        params,
        user,
        db,
        out,
    } = started;
    let config = env.config();
    let span = tracing::Span::current();
    if db == ADMIN_DATABASE {
        if !config.is_admin(&user) {
            warn!("admin console refused: not an admin user");
            let _ = stream.write_all(&out).await;
            fatal(
                &mut stream,
                SqlState::INSUFFICIENT_PRIVILEGE,
                &format!(
                    "user \"{user}\" may not use the pgbaton admin console (see --admin-user)"
                ),
            )
            .await;
            return None;
        }
        return Some(Opened::Admin(ConsoleClient { stream, user, out }));
    }

    let backend = env.routing.current().default_backend().clone();
    span.record("backend", backend.name.as_str());
    let connector = env.connectors.get(&backend.name);
    let connecting = server::connect_server(
        &config,
        &backend,
        connector.as_ref(),
        &params,
        &user,
        &env.busy_poll,
    );
    let server = match connecting.await {
        Ok(s) => {
            env.connectors.note_reachable(&backend.name, true);
            s
        }
        Err(e) => {
            let down = matches!(e, ServerError::Connect { .. } | ServerError::Timeout { .. });
            env.connectors.note_reachable(&backend.name, !down);
            Stats::bump(&env.stats.server_connect_failures);
            warn!(error = %e, "server login failed");
            let _ = stream.write_all(&out).await;
            match e.server_error() {
                Some(raw) => {
                    let _ = stream.write_all(raw).await;
                    let _ = stream.flush().await;
                }
                None => fatal(&mut stream, e.sqlstate(), &e.client_message()).await,
            }
            return None;
        }
    };

    let (client_pid, client_key) = welcome(env, &mut stream, &server, &backend, out).await?;
    info!(server.pid = server.pid, "session started");
    let ledger = crate::ledger::Ledger::new(params, server.params.clone());
    let relay = Relay::new(
        stream,
        ServerSide::new(server),
        ledger,
        config.max_message_size,
    );
    Some(Opened::Proxy(Box::new(ProxySession {
        client_pid,
        client_key,
        user,
        database: db,
        relay,
    })))
}

/// Tells the client it is in: the server's startup parameters, the real pid
/// of its first server backend (so pg_backend_pid(), its own notifications
/// and pg_terminate_backend agree), pgbaton's own secret (never the
/// server's: the secret is what routes a cancel), and the server's first
/// ReadyForQuery. Returns the pid and secret; `None` when the client left.
async fn welcome(
    env: &Env,
    stream: &mut Stream,
    server: &server::ServerConn,
    backend: &crate::config::Backend,
    mut out: BytesMut,
) -> Option<(i32, i32)> {
    let client_pid = server.pid;
    let client_key = env.cancel.register(
        client_pid,
        CancelTarget {
            backend: backend.clone(),
            pid: server.pid,
            key: server.key,
        },
    );
    for notice in &server.notices {
        out.extend_from_slice(notice);
    }
    for (n, v) in &server.params {
        write::parameter_status(&mut out, n, v);
    }
    write::backend_key_data(&mut out, client_pid, client_key);
    write::ready_for_query(&mut out, b'I');
    if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
        env.cancel.remove(client_key);
        return None;
    }
    Some((client_pid, client_key))
}

async fn run(
    env: &Arc<Env>,
    mut session: Box<ProxySession>,
    id: u64,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<Option<Instant>>,
) -> RelayEnd {
    let relay = &mut session.relay;
    // What the session runs on, from its own server side: the routing may
    // have changed during the login (a SCALE OUT), and a label taken from
    // it would hide the session from moves of its real backend.
    let live = Live {
        backend: relay.server.backend.name.clone(),
        backend_pid: relay.server.pid,
        state: SessionState::Idle,
        tx_status: 'I',
        summary: relay.ledger.summary(),
        migrations: 0,
        moving: None,
    };
    let (entry, control) = SessionEntry::new(
        id,
        session.client_pid,
        std::mem::take(&mut session.user),
        std::mem::take(&mut session.database),
        peer,
        live,
    );
    let _registration = env.sessions.register(entry.clone());
    let relay = &mut session.relay;
    relay.control = Some(control);
    relay.ctx = Some(RelayCtx {
        env: env.clone(),
        id,
        user: entry.user.clone(),
        cancel_key: session.client_key,
    });
    relay.entry = Some(entry);
    relay.client.charge = budget::Charge::new(env.client_memory.clone());
    let end = relay.run(&mut shutdown).await;
    env.cancel.remove(session.client_key);
    if let RelayEnd::ClientProtocolError(_) = end {
        Stats::bump(&env.stats.protocol_errors);
    }
    end
}

/// Protocol 3.2 (PG18) and `_pq_.*` options: pgbaton speaks 3.0 and says so
/// with NegotiateProtocolVersion, as a PG15 server does.
fn negotiate_version(version: i32, params: &[StartupParam], out: &mut BytesMut) {
    let unrecognized: Vec<&[u8]> = params
        .iter()
        .filter(|p| p.name.starts_with(b"_pq_."))
        .map(|p| p.name.as_slice())
        .collect();
    if version != PROTOCOL_3_0 || !unrecognized.is_empty() {
        write::negotiate_protocol_version(out, 0, &unrecognized);
    }
}

async fn forward_cancel(env: &Env, pid: i32, key: i32, forwarded: bool) {
    let Some(target) = env.cancel.lookup(pid, key) else {
        // The secret's top byte names the replica that gave it out: a
        // cancel for another replica's session goes to that replica, which
        // cancels on the session's current server. A cancel another
        // replica forwarded is never forwarded again: one hop at most.
        let owner = CancelRegistry::node_of(key);
        if !forwarded && owner != 0 && owner != env.cancel.node() {
            let peer = env
                .peers
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&owner)
                .cloned();
            match peer {
                Some(addr) => forward_to_replica(env, &addr, pid, key).await,
                None => debug!(
                    pid,
                    owner, "cancel request for a replica this one does not know ignored"
                ),
            }
            return;
        }
        debug!(pid, "cancel request with unknown key ignored");
        return;
    };
    let config = env.config();
    let connector = env.connectors.get(&target.backend.name);
    match server::send_cancel(
        &target.backend,
        connector.as_ref(),
        config.connect_timeout,
        target.pid,
        target.key,
    )
    .await
    {
        Ok(()) => {
            Stats::bump(&env.stats.cancels_forwarded);
            info!(backend = %target.backend.name, server.pid = target.pid, "cancel forwarded");
        }
        Err(e) => warn!(error = %e, "cancel could not be forwarded"),
    }
}

/// Hands a CancelRequest to the replica at `addr` that owns the session,
/// and waits for it to close the connection (it does once it has handled
/// the cancel), so this client's close means the same as with one proxy.
async fn forward_to_replica(env: &Env, addr: &str, pid: i32, key: i32) {
    let timeout = env.config().connect_timeout;
    let send = async {
        let mut tcp = TcpStream::connect(addr).await?;
        let mut packet = Vec::with_capacity(16);
        packet.extend_from_slice(&16i32.to_be_bytes());
        packet.extend_from_slice(&crate::protocol::startup::FORWARDED_CANCEL_CODE.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&key.to_be_bytes());
        tcp.write_all(&packet).await?;
        let mut sink = [0u8; 16];
        let _ = tcp.read(&mut sink).await;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(timeout * 2, send).await {
        Ok(Ok(())) => {
            Stats::bump(&env.stats.cancels_forwarded);
            info!(
                replica = addr,
                "cancel forwarded to the replica that owns the session"
            );
        }
        Ok(Err(e)) => {
            warn!(replica = addr, error = %e, "cancel could not be forwarded to its replica")
        }
        Err(_) => warn!(
            replica = addr,
            "cancel forwarded to its replica got no close in time"
        ),
    }
}

/// Sends a FATAL ErrorResponse written by pgbaton, best effort.
pub async fn fatal(stream: &mut Stream, code: SqlState, message: &str) {
    let out = Said::fatal(code, message).to_bytes();
    let _ = stream.write_all(&out).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}
