//! Busy polling: a worker thread that runs out of work watches its sessions'
//! sockets for a few microseconds before it goes to sleep (Linux only; on
//! other systems `busy_poll` does nothing).
//!
//! Why: a relayed round trip wakes the proxy twice. On a virtual machine an
//! idle vCPU sleeps in the hypervisor, and waking it costs tens of
//! microseconds, more than pgbaton's whole share of the round trip. When the
//! reply is due within microseconds, spinning until it comes is cheaper than
//! sleeping and being woken. This is what the guest kernel's `haltpoll`
//! idle governor and KVM's `halt_poll_ns` do one level down; the window
//! adapts the same way: it grows while sleeps are short, and shrinks to
//! nothing when they are long, so an idle proxy never spins.
//!
//! How: the listener, each accepted client and each server connection are
//! registered, edge-triggered, in an epoll instance of their own, beside
//! tokio's. Tokio calls [`BusyPoll::before_park`] when it is about to sleep in its own
//! `epoll_wait`; it polls ours with a zero timeout until data arrives on a
//! socket or the window ends. New data queues an edge in both instances, so
//! tokio's sleep then returns at once. Edge-triggered, because a socket the
//! relay leaves unread on purpose (a client slow to take a large result, a
//! session being moved) would otherwise end every spin at once.
//!
//! Each turn of the spin yields the CPU, so a runnable pgbench or Postgres
//! on the same run queue goes first, and a yield that ran one ends the spin.
//! What the watched set does not cover (timers, signals, wake-ups from other
//! threads, a socket becoming writable) waits until the spin ends: at most
//! the window, 1 ms at most. A socket leaves the set when it is closed (the
//! kernel drops it once no descriptor refers to it; pgbaton never dups one).

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use super::busy_poll_stats::Stats;

/// Busy polling for one runtime and the sockets it serves: made once by
/// whoever builds the runtime, cloned into its park hooks and to every
/// place that opens a socket. Off (does nothing) by default.
#[derive(Clone, Default)]
pub struct BusyPoll(Option<Arc<Poller>>);

struct Poller {
    epoll: OwnedFd,
    max: Duration,
    stats: Stats,
}

impl BusyPoll {
    /// Off: watches nothing and never spins.
    pub fn off() -> BusyPoll {
        BusyPoll(None)
    }

    /// Busy polling with windows of at most `max`; off for a zero `max`.
    pub fn new(max: Duration) -> std::io::Result<BusyPoll> {
        if max.is_zero() {
            return Ok(BusyPoll::off());
        }
        Ok(BusyPoll(Some(Arc::new(Poller::new(max)?))))
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// How the spins so far have ended (all zero when off).
    pub fn stats(&self) -> &Stats {
        static OFF: Stats = Stats::new();
        self.0.as_ref().map_or(&OFF, |p| &p.stats)
    }

    /// Adds a socket to the watched set (nothing when busy polling is off).
    pub fn watch(&self, socket: &impl AsFd) {
        let Some(p) = &self.0 else { return };
        if let Err(e) = p.add(socket.as_fd()) {
            // ENOSPC (fs.epoll.max_user_watches) or ENOMEM: that socket only
            // ends no spin; the session works the same.
            tracing::debug!(error = %e, "busy polling cannot watch a socket");
        }
    }

    /// Tokio's `on_thread_park` hook: spin for this thread's window.
    pub fn before_park(&self) {
        let Some(p) = &self.0 else { return };
        let window = WINDOW.with(Cell::get);
        let start = Instant::now();
        let spin_for = window.spin_for(p.max);
        if spin_for.is_zero() {
            SLEPT_AT.with(|s| s.set(Some(start)));
            return;
        }
        match p.spin(start, spin_for) {
            Spin::Ready => count(&p.stats.ready),
            Spin::Timeout => {
                count(&p.stats.timeouts);
                SLEPT_AT.with(|s| s.set(Some(start)));
            }
            // The core is wanted by others: spin less, and do not count the
            // sleep that follows as one a longer window would have saved.
            Spin::Contended => {
                count(&p.stats.contended);
                WINDOW.with(|w| w.set(window.shrink()));
            }
        }
    }

    /// Tokio's `on_thread_unpark` hook: adapt the window to how long the
    /// thread was idle.
    pub fn after_unpark(&self) {
        let Some(p) = &self.0 else { return };
        if let Some(at) = SLEPT_AT.with(Cell::take) {
            let idle = at.elapsed();
            WINDOW.with(|w| w.set(w.get().after_sleep(idle, p.max)));
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    static WINDOW: Cell<Window> = const { Cell::new(Window::OFF) };
    /// When this thread went to sleep after a spin that found nothing.
    static SLEPT_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How a spin ended.
#[derive(Debug, PartialEq, Eq)]
enum Spin {
    /// Data arrived on a watched socket.
    Ready,
    /// The window passed (or there was none).
    Timeout,
    /// Yielding let another thread run: the core is not idle, and the spin
    /// would take time from Postgres or the clients on it.
    Contended,
}

/// A yield that takes longer than this ran another thread.
const YIELDED: Duration = Duration::from_micros(5);

/// Events taken per look: edges left from while the thread was busy are
/// cleared in one call.
const EVENTS: usize = 64;

impl Poller {
    fn new(max: Duration) -> std::io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is
        // a new descriptor that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            epoll,
            max,
            stats: Stats::new(),
        })
    }

    fn add(&self, socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open for the call (the borrow keeps
        // the socket's), and `event` outlives it.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Spins until data arrives on a watched socket or `window` has passed
    /// since `start`, yielding the core on every turn.
    fn spin(&self, start: Instant, window: Duration) -> Spin {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: the buffer holds the EVENTS events asked for at most.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS as i32,
                    0,
                )
            };
            if n > 0 {
                return Spin::Ready;
            }
            if n < 0 || start.elapsed() >= window {
                return Spin::Timeout;
            }
            let yielded_at = Instant::now();
            // SAFETY: no arguments. A runnable process on this core (pgbench,
            // a Postgres backend) runs before the spin goes on.
            unsafe { libc::sched_yield() };
            if yielded_at.elapsed() >= YIELDED {
                return Spin::Contended;
            }
        }
    }
}

/// A thread's spin window, in microseconds, adapted like KVM's halt polling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    micros: u32,
}

impl Window {
    const OFF: Window = Window { micros: 0 };
    /// The first window after a short sleep.
    const START_MICROS: u32 = 10;

    fn spin_for(self, max: Duration) -> Duration {
        Duration::from_micros(self.micros.into()).min(max)
    }

    /// The window after the thread was idle for `idle` (spin and sleep):
    /// when the largest window would have covered it, the window doubles, so
    /// that a later wait like it is spun through; otherwise it halves, down
    /// to nothing, so a quiet proxy stops spinning.
    fn after_sleep(self, idle: Duration, max: Duration) -> Window {
        if idle > max {
            return self.shrink();
        }
        let max_micros = u32::try_from(max.as_micros()).unwrap_or(u32::MAX);
        Window {
            micros: self
                .micros
                .saturating_mul(2)
                .max(Self::START_MICROS)
                .min(max_micros),
        }
    }

    /// Half the window, or none once it is shorter than the first one.
    fn shrink(self) -> Window {
        let half = self.micros / 2;
        Window {
            micros: if half < Self::START_MICROS { 0 } else { half },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(200);

    #[test]
    fn short_sleeps_grow_the_window_up_to_the_maximum() {
        let mut w = Window::OFF;
        let mut seen = vec![];
        for _ in 0..6 {
            w = w.after_sleep(Duration::from_micros(50), MAX);
            seen.push(w.micros);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 200]);
        assert_eq!(w.spin_for(MAX), MAX);
    }

    #[test]
    fn long_sleeps_shrink_the_window_to_nothing() {
        let mut w = Window { micros: 200 };
        let mut seen = vec![];
        for _ in 0..6 {
            w = w.after_sleep(Duration::from_millis(5), MAX);
            seen.push(w.micros);
        }
        assert_eq!(seen, [100, 50, 25, 12, 0, 0]);
        assert_eq!(w.spin_for(MAX), Duration::ZERO);
    }

    #[test]
    fn a_smaller_maximum_caps_a_grown_window() {
        let w = Window { micros: 160 }.after_sleep(Duration::from_micros(5), MAX);
        assert_eq!(
            w.spin_for(Duration::from_micros(50)),
            Duration::from_micros(50)
        );
    }

    #[test]
    fn new_data_ends_the_spin_and_data_left_unread_does_not() {
        let poller = Poller::new(Duration::from_secs(5)).unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        poller.add(b.as_fd()).unwrap();
        // Nothing to read: a zero window finds nothing.
        assert_eq!(poller.spin(Instant::now(), Duration::ZERO), Spin::Timeout);
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        // New data: the 5 s window ends at once (a failure takes 5 s).
        assert_eq!(poller.spin(Instant::now(), poller.max), Spin::Ready);
        // Still unread (a relay holding back), but nothing new: no spin
        // ends on it again.
        assert_eq!(poller.spin(Instant::now(), Duration::ZERO), Spin::Timeout);
        std::io::Write::write_all(&mut &a, b"y").unwrap();
        assert_eq!(poller.spin(Instant::now(), poller.max), Spin::Ready);
    }
}
