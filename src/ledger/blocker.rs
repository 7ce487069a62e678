//! What pins a session to its server: one list, shown one way, whether the
//! wire saw it (the ledger) or the server's check counted it.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    TempObjects(u32),
    HoldCursors(u32),
    AdvisoryLocks(u32),
    LoadedLibraries(u32),
    DblinkConnections(u32),
}

impl Blocker {
    /// Whether the server's state check counts it. What it cannot count (a
    /// LOADed library, a dblink connection) only the wire knows, so a move
    /// trusts the ledger for those.
    pub fn server_sees(self) -> bool {
        matches!(
            self,
            Blocker::TempObjects(_) | Blocker::HoldCursors(_) | Blocker::AdvisoryLocks(_)
        )
    }

    fn parts(self) -> (&'static str, u32) {
        match self {
            Blocker::TempObjects(n) => ("temp objects", n),
            Blocker::HoldCursors(n) => ("WITH HOLD cursors", n),
            Blocker::AdvisoryLocks(n) => ("session advisory locks", n),
            Blocker::LoadedLibraries(n) => ("LOADed libraries", n),
            Blocker::DblinkConnections(n) => ("dblink connections", n),
        }
    }

    /// The blockers of a session as one reason, `None` when there are none.
    pub fn reason(blockers: &[Blocker]) -> Option<String> {
        if blockers.is_empty() {
            return None;
        }
        Some(
            blockers
                .iter()
                .map(Blocker::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// Each kind whose count is not zero.
    pub fn present(counts: [Blocker; 5]) -> Vec<Blocker> {
        counts.into_iter().filter(|b| b.parts().1 > 0).collect()
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, n) = self.parts();
        write!(f, "{what} ({n})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reason_for_all() {
        let b = Blocker::present([
            Blocker::TempObjects(2),
            Blocker::HoldCursors(0),
            Blocker::AdvisoryLocks(1),
            Blocker::LoadedLibraries(0),
            Blocker::DblinkConnections(1),
        ]);
        assert_eq!(
            Blocker::reason(&b).as_deref(),
            Some("temp objects (2), session advisory locks (1), dblink connections (1)")
        );
        assert!(!Blocker::DblinkConnections(1).server_sees());
        assert!(Blocker::reason(&[]).is_none());
    }
}
