//! The proxy-wide budget for client bytes held in memory: a Query or Parse
//! is held whole until it has all arrived (its text is read by the ledger
//! and the command parser), so a few clients sending huge statements could
//! otherwise take all the memory there is. Each session is charged for what
//! its read buffer holds beyond a small allowance every session gets free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What each session may buffer without being charged: a few read chunks,
/// so ordinary traffic never touches the shared counter.
pub const FREE_PER_SESSION: usize = 256 * 1024;

/// Bytes charged across all sessions, against a limit.
#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

/// The session asked for more than is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub wanted: usize,
    pub used: usize,
    pub limit: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Bytes charged now, across all sessions.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn take(&self, n: usize) -> Result<(), OverBudget> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + n > self.limit {
                return Err(OverBudget {
                    wanted: n,
                    used,
                    limit: self.limit,
                });
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One session's share of the budget; given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    charged: usize,
}

impl Charge {
    pub fn new(budget: Arc<MemoryBudget>) -> Charge {
        Charge {
            budget: Some(budget),
            charged: 0,
        }
    }

    /// Charges for a buffer of `held` bytes. Cheap when nothing changed,
    /// which is almost always.
    pub fn hold(&mut self, held: usize) -> Result<(), OverBudget> {
        let want = held.saturating_sub(FREE_PER_SESSION);
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if want > self.charged {
            budget.take(want - self.charged)?;
        } else if want < self.charged {
            budget.give(self.charged - want);
        }
        self.charged = want;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.charged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_are_free_and_large_ones_share_the_limit() {
        let budget = MemoryBudget::new(1 << 20);
        let mut a = Charge::new(budget.clone());
        let mut b = Charge::new(budget.clone());
        a.hold(FREE_PER_SESSION).unwrap();
        assert_eq!(budget.used(), 0);
        a.hold(FREE_PER_SESSION + 700_000).unwrap();
        let err = b.hold(FREE_PER_SESSION + 400_000).unwrap_err();
        assert_eq!((err.used, err.limit), (700_000, 1 << 20));
        assert_eq!(budget.used(), 700_000, "a refused charge takes nothing");
        a.hold(10).unwrap();
        b.hold(FREE_PER_SESSION + 400_000).unwrap();
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_charge_without_a_budget_never_fails() {
        Charge::default().hold(usize::MAX).unwrap();
    }
}
