//! The exit of a server connection a session left: Terminate, then read it
//! to its end so that notifications sent before the swap still reach the
//! client.

use crate::net::Stream;
use crate::server::ServerSide;
use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Longest the exit of a move's old server connection waits for a cutover in
/// progress, and then keeps other cutovers waiting (see `Moves::move_gate`).
const EXIT_GATE: Duration = Duration::from_millis(50);

/// Ends a server side a session left: Terminate, then read it to its end
/// and forward every NotificationResponse to `late` (renamed to the pid the
/// client knows), so none sent before the swap is lost (a duplicate is
/// possible; a gap would be worse). The exit is Postgres work like a
/// pre-staging's login: it waits for the cutover in progress, not beside
/// it (but not for long: late notifications must not lag).
pub fn retire(
    old: ServerSide,
    late: tokio::sync::mpsc::UnboundedSender<Bytes>,
    gate: std::sync::Arc<tokio::sync::RwLock<()>>,
    client_pid: i32,
) {
    let ServerSide {
        r,
        mut w,
        inbox,
        pid,
        ..
    } = old;
    tokio::spawn(async move {
        let gate = tokio::time::timeout(EXIT_GATE, gate.read_owned())
            .await
            .ok();
        let _ = w.write_all(b"X\0\0\0\x04").await;
        let _ = w.flush().await;
        drain_notifications(r, inbox.buf, late, gate, (pid, client_pid)).await;
    });
}

/// Reads a terminated server connection to its end and forwards every
/// NotificationResponse. `gate` is let go at EOF, or after [`EXIT_GATE`]
/// at most, so a server that is slow to close never stalls other moves.
async fn drain_notifications(
    mut r: tokio::io::ReadHalf<Stream>,
    mut buf: BytesMut,
    late: tokio::sync::mpsc::UnboundedSender<Bytes>,
    mut gate: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    (old_pid, client_pid): (i32, i32),
) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(2);
    loop {
        while let Ok(Some((frame, _))) = crate::protocol::codec::split_message(&buf, |_| 1 << 20) {
            let mut msg = buf.split_to(frame.total);
            if frame.tag == b'A' {
                crate::protocol::backend::rename_notifier(&mut msg, old_pid, client_pid);
                if late.send(msg.freeze()).is_err() {
                    return;
                }
            }
        }
        let until = match gate {
            Some(_) => started + EXIT_GATE,
            None => deadline,
        };
        match tokio::time::timeout_at(until, r.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) if gate.is_some() => gate = None,
            _ => return,
        }
    }
}
