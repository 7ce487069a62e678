//! Who may lead, after US10810093B1: a node's reliability is its failure
//! count; a newcomer starts one worse than the median of the live nodes,
//! so it is not elected over proven ones.

/// One live candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub failures: u32,
    /// Create revision of its registration: earlier joined ranks first.
    pub joined_rev: u64,
}

/// Best first: fewest failures, then earliest registration, then id.
pub fn ranked(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates
        .sort_by(|a, b| (a.failures, a.joined_rev, &a.id).cmp(&(b.failures, b.joined_rev, &b.id)));
    candidates
}

/// A newcomer's failure count: the median of the live nodes' counts plus
/// one (an even count takes the lower middle), or zero when alone.
pub fn initial_failures(live: &[u32]) -> u32 {
    if live.is_empty() {
        return 0;
    }
    let mut v = live.to_vec();
    v.sort_unstable();
    v[(v.len() - 1) / 2].saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, failures: u32, joined_rev: u64) -> Candidate {
        Candidate {
            id: id.into(),
            failures,
            joined_rev,
        }
    }

    #[test]
    fn a_newcomer_starts_one_worse_than_the_median() {
        assert_eq!(initial_failures(&[]), 0);
        assert_eq!(initial_failures(&[0, 2, 5]), 3);
        assert_eq!(initial_failures(&[5, 0, 2]), 3);
        assert_eq!(initial_failures(&[1, 3]), 2);
        assert_eq!(initial_failures(&[u32::MAX]), u32::MAX);
    }

    #[test]
    fn rank_is_failures_then_registration_then_id() {
        let order: Vec<String> =
            ranked(vec![c("c", 1, 5), c("b", 0, 9), c("a", 0, 9), c("d", 0, 3)])
                .into_iter()
                .map(|c| c.id)
                .collect();
        assert_eq!(order, ["d", "a", "b", "c"]);
    }
}
