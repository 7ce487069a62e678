//! The admin console: `psql -U <admin user> pgbaton`. Speaks the simple query
//! protocol and answers with ordinary result sets, like PgBouncer's console.
//! Only `--admin-user` users get here (others get 42501 at startup).
//!
//! One file per command; [`command`] parses the text.

mod command;
mod migrate_all;
mod migrate_session;
mod reload;
mod result;
mod scale_out;
mod show_backends;
mod show_cluster;
mod show_conflicts;
mod show_migrations;
mod show_plans;
mod show_session;
mod show_sessions;
mod show_stats;
mod show_version;
mod shutdown;

pub use command::{AdminCommand, COMMANDS};
pub use result::{AdminError, ResultSet};

use crate::net::Stream;
use crate::protocol::codec::{split_message, HEADER_LEN, PG_SMALL_MESSAGE_LIMIT};
use crate::protocol::frontend::{query_text, FrontendTag};
use crate::protocol::write;
use crate::protocol::SqlState;
use crate::protocol::{write_client_error, Said};
use crate::proxy::Shared;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// The database name that opens the console.
pub use crate::config::ADMIN_DATABASE as DATABASE;

/// Largest admin query accepted.
const MAX_QUERY: usize = 64 * 1024;

/// The console the proxy is given ([`crate::proxy::ConsoleFn`]).
pub fn console(
    shared: Arc<Shared>,
    client: crate::session::ConsoleClient,
    shutdown: watch::Receiver<Option<Instant>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let crate::session::ConsoleClient { stream, user, out } = client;
        serve(&shared, stream, &user, out, shutdown).await;
    })
}

/// Runs one console session; `out` already holds AuthenticationOk.
pub async fn serve(
    shared: &Arc<Shared>,
    mut stream: Stream,
    user: &str,
    mut out: BytesMut,
    mut shutdown: watch::Receiver<Option<Instant>>,
) {
    for (name, value) in [
        ("server_version", "15.0 (pgbaton admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("TimeZone", "UTC"),
        ("is_superuser", "off"),
        ("session_authorization", user),
    ] {
        write::parameter_status(&mut out, name.as_bytes(), value.as_bytes());
    }
    write::backend_key_data(&mut out, 0, 0);
    write::ready_for_query(&mut out, b'I');
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        out.clear();
        let frame = loop {
            match split_message(&buf, |t| {
                if t == b'Q' {
                    MAX_QUERY
                } else {
                    PG_SMALL_MESSAGE_LIMIT
                }
            }) {
                Ok(Some((f, _))) => break Some(f),
                Ok(None) => {}
                Err(e) => {
                    write_client_error(
                        &mut out,
                        &Said::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()),
                    );
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
            tokio::select! {
                r = stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => {}
                },
                _ = shutdown.changed() => {
                    write_client_error(&mut out, &Said::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection because pgbaton is shutting down"));
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
        };
        let Some(frame) = frame else { return };
        let msg = buf.split_to(frame.total);
        let body = &msg[HEADER_LEN..];
        match FrontendTag::from_byte(frame.tag) {
            FrontendTag::Terminate => return,
            FrontendTag::Query => {
                run_query(shared, query_text(body), &mut out).await;
                write::ready_for_query(&mut out, b'I');
            }
            FrontendTag::Sync => write::ready_for_query(&mut out, b'I'),
            FrontendTag::Flush => {}
            _ => write_client_error(
                &mut out,
                &Said::error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "the pgbaton admin console speaks the simple query protocol only",
                ),
            ),
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Runs every statement of one query; the first error ends it, like a
/// multi-statement query in Postgres.
async fn run_query(shared: &Arc<Shared>, sql: &[u8], out: &mut BytesMut) {
    let mut any = false;
    for stmt in crate::sql::statements(sql) {
        any = true;
        let text = String::from_utf8_lossy(stmt);
        let result = match AdminCommand::parse(&text) {
            Ok(cmd) => cmd.run(shared).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(rs) => rs.write(out),
            Err(e) => {
                e.write(out);
                return;
            }
        }
    }
    if !any {
        write::empty_query_response(out);
    }
}
