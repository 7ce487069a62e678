//! The pid a client learns: the real pid of its first server backend, and
//! after a move the notifications of its current backend still carry it.

use crate::harness::foreign_proxy;
use crate::harness::{start_servers, Raw};

fn notifier(msgs: &[crate::harness::Msg]) -> i32 {
    let a = msgs.iter().find(|m| m.tag == b'A').expect("a notification");
    i32::from_be_bytes(a.body[..4].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_notifications_carry_the_clients_pid_after_moves() {
    let servers = start_servers(2).await;
    let proxy = foreign_proxy(&[&servers[0], &servers[1]], "").await;
    let (mut raw, startup) = Raw::login(proxy.addr, &[("user", "postgres")]).await;
    let key = startup.iter().find(|m| m.tag == b'K').unwrap();
    let client_pid = i32::from_be_bytes(key.body[..4].try_into().unwrap());
    raw.query("LISTEN mine").await;
    assert_eq!(notifier(&raw.query("NOTIFY mine").await), client_pid);
    for to in ["pg2", "pg1"] {
        let msgs = raw.query(&format!("/* pgbaton: migrate to={to} */;")).await;
        assert!(
            msgs.iter().all(|m| m.tag != b'E'),
            "the move to {to} failed"
        );
        // The server's backend now has another pid; the client still sees
        // its own on what it sent itself.
        assert_eq!(notifier(&raw.query("NOTIFY mine").await), client_pid);
    }
}
