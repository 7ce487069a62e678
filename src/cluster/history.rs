//! A replica's JSON-lines history of cluster events: one object per line
//! with monotonic and wall time, term, store revision and the decision.
//! The fleet tests check the invariants of the design (one leader per
//! term, terms rising, writes inside their term) on these files.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    /// CLOCK_MONOTONIC in microseconds: one clock for every process on
    /// the machine, so the histories of several replicas line up.
    pub mono_us: u64,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
    pub node: &'a str,
    /// `registered`, `elected`, `fenced_write`, `write_refused`,
    /// `step_down`, `resigned`, `charged`, `store_lost`, `store_back`.
    pub event: &'a str,
    pub term: u64,
    /// The store revision the event committed at (0: none).
    pub rev: u64,
    pub detail: String,
}

pub struct History {
    file: Option<Mutex<std::fs::File>>,
}

pub fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl History {
    /// Appends to `path` when given; without one, events only go to the log.
    pub fn open(path: Option<&Path>) -> std::io::Result<History> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(History { file })
    }

    pub fn record(&self, node: &str, event: &str, term: u64, rev: u64, detail: String) {
        tracing::info!(node, event, term, rev, detail = %detail, "cluster");
        let Some(file) = &self.file else { return };
        let e = Event {
            mono_us: mono_us(),
            wall_ms: wall_ms(),
            node,
            event,
            term,
            rev,
            detail,
        };
        let mut line = serde_json::to_vec(&e).expect("events serialize");
        line.push(b'\n');
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        // One write per line, so lines of several processes never interleave.
        if let Err(err) = f.write_all(&line) {
            tracing::warn!(error = %err, "cannot append to the cluster history");
        }
    }
}

/// An event read back from a history file.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Recorded {
    pub mono_us: u64,
    pub wall_ms: u64,
    pub node: String,
    pub event: String,
    pub term: u64,
    pub rev: u64,
    pub detail: String,
}

/// Reads the events of several history files, in one list.
pub fn read(paths: &[&Path]) -> std::io::Result<Vec<Recorded>> {
    let mut all = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p)?;
        for (i, line) in text.lines().enumerate() {
            let e = serde_json::from_str(line).map_err(|err| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}:{}: {err}", p.display(), i + 1),
                )
            })?;
            all.push(e);
        }
    }
    Ok(all)
}

/// Events that record a fenced leader write.
pub const LEADER_WRITES: &[&str] = &[
    "fenced_write",
    "plan_executing",
    "plan_aborted",
    "plan_done",
    "resolved",
    "routing_committed",
];

/// The node of a proposal id (`<node>-<8 hex digits>`).
fn proposer(id: &str) -> &str {
    id.rsplit_once('-').map_or(id, |(node, _)| node)
}

/// The first word of a plan event's detail: the proposal id.
fn plan_id(detail: &str) -> &str {
    detail.split(':').next().unwrap_or("").trim()
}

/// I5 on the plans' events: every conflict report gets exactly one
/// resolution (that names it the winner or a loser); no losing proposal
/// ever executes; every loser that lived on acknowledged (adopted) its
/// resolution.
pub fn check_conflicts(events: &[Recorded]) -> Vec<String> {
    let mut bad = Vec::new();
    // resolution n -> (winner, losers, when)
    let mut resolutions = Vec::new();
    for e in events.iter().filter(|e| e.event == "resolved") {
        let words: Vec<&str> = e.detail.split_whitespace().collect();
        let n: Option<u64> = words
            .get(1)
            .and_then(|w| w.trim_end_matches(':').parse().ok());
        let winner = words
            .iter()
            .position(|w| *w == "winner")
            .and_then(|i| words.get(i + 1));
        let losers: Vec<String> = words
            .iter()
            .position(|w| *w == "losers")
            .and_then(|i| words.get(i + 1))
            .map(|l| {
                l.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        match (n, winner) {
            (Some(n), Some(w)) => resolutions.push((n, w.to_string(), losers, e.mono_us)),
            _ => bad.push(format!("I5: unreadable resolution {:?}", e.detail)),
        }
    }
    for e in events.iter().filter(|e| e.event == "conflict_filed") {
        let id = plan_id(&e.detail);
        let n = resolutions
            .iter()
            .filter(|(_, w, l, _)| w == id || l.iter().any(|x| x == id))
            .count();
        if n != 1 {
            bad.push(format!(
                "I5: conflict report {id} has {n} resolutions, not 1"
            ));
        }
    }
    for e in events.iter().filter(|e| e.event == "plan_executing") {
        let id = plan_id(&e.detail);
        if resolutions
            .iter()
            .any(|(_, _, l, _)| l.iter().any(|x| x == id))
        {
            bad.push(format!(
                "I5: plan {id} executed although it lost a conflict"
            ));
        }
    }
    for (n, _, losers, at) in &resolutions {
        for l in losers {
            let node = proposer(l);
            let lived_on = events.iter().any(|e| e.node == node && e.mono_us > *at);
            let adopted = events.iter().any(|e| {
                e.node == node
                    && e.event == "adopted"
                    && e.detail
                        .strip_prefix("resolution ")
                        .and_then(|d| d.split(';').next())
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_some_and(|a| a >= *n)
            });
            if lived_on && !adopted {
                bad.push(format!(
                    "I5: {node} never acknowledged resolution {n}, which its plan {l} lost"
                ));
            }
        }
    }
    bad
}

/// I4, convergence: each of `nodes` last applied the routing revision the
/// fleet last committed (or seeded).
pub fn check_converged(events: &[Recorded], nodes: &[&str]) -> Vec<String> {
    let committed = events
        .iter()
        .filter(|e| e.event == "routing_committed" || e.event == "routing_seeded")
        .map(|e| e.rev)
        .max();
    let Some(committed) = committed else {
        return vec!["I4: no routing was ever committed".into()];
    };
    nodes
        .iter()
        .filter_map(|n| {
            let applied = events
                .iter()
                .filter(|e| e.node == *n && e.event == "routing_applied")
                .max_by_key(|e| e.mono_us)
                .map(|e| e.rev);
            (applied != Some(committed)).then(|| {
                format!("I4: {n} runs on routing revision {applied:?}, the fleet's is {committed}")
            })
        })
        .collect()
}

/// Checks the safety invariants of the fleet's design on the histories of
/// all replicas (store revisions order the events across processes):
/// - I1: at most one leader per term;
/// - I2: terms rise with the revisions they were taken at, never reused;
/// - I3: every fenced write committed inside its term's tenure, after its
///   election and before the next one;
/// - I8: every election was won by the best-ranked candidate (rank 0)
///   when `strict_rank` (all replicas could reach the store).
///
/// Returns one line per violation; empty means the history holds them.
pub fn check(events: &[Recorded], strict_rank: bool) -> Vec<String> {
    let mut bad = Vec::new();
    let mut elected: Vec<&Recorded> = events.iter().filter(|e| e.event == "elected").collect();
    elected.sort_by_key(|e| e.rev);
    let mut by_term: std::collections::BTreeMap<u64, Vec<&Recorded>> = Default::default();
    for e in &elected {
        by_term.entry(e.term).or_default().push(e);
    }
    for (term, winners) in &by_term {
        if winners.len() > 1 {
            let who: Vec<&str> = winners.iter().map(|e| e.node.as_str()).collect();
            bad.push(format!(
                "I1: term {term} has {} leaders: {}",
                winners.len(),
                who.join(", ")
            ));
        }
    }
    for pair in elected.windows(2) {
        if pair[1].term <= pair[0].term {
            bad.push(format!(
                "I2: term {} taken at revision {} after term {} at revision {}",
                pair[1].term, pair[1].rev, pair[0].term, pair[0].rev
            ));
        }
    }
    for w in events
        .iter()
        .filter(|e| LEADER_WRITES.contains(&e.event.as_str()))
    {
        let Some(start) = by_term.get(&w.term).and_then(|v| v.first()) else {
            bad.push(format!(
                "I3: {} wrote at revision {} for term {}, which nobody was elected to",
                w.node, w.rev, w.term
            ));
            continue;
        };
        let next = elected.iter().find(|e| e.term > w.term).map(|e| e.rev);
        if start.node != w.node || w.rev <= start.rev || next.is_some_and(|n| w.rev >= n) {
            bad.push(format!(
                "I3: {} wrote at revision {} for term {} outside that term's tenure ({} from revision {} to {})",
                w.node,
                w.rev,
                w.term,
                start.node,
                start.rev,
                next.map_or("now".to_string(), |n| n.to_string())
            ));
        }
    }
    if strict_rank {
        for e in &elected {
            if !e.detail.starts_with("rank 0 ") {
                bad.push(format!(
                    "I8: {} took term {} at {}",
                    e.node, e.term, e.detail
                ));
            }
        }
    }
    bad
}

/// I7, liveness: some replica took the seat within `bound` after
/// `after_mono_us` (a fault, or its healing). The time it took, or why not.
pub fn leader_within(
    events: &[Recorded],
    after_mono_us: u64,
    bound: std::time::Duration,
) -> Result<std::time::Duration, String> {
    let first = events
        .iter()
        .filter(|e| e.event == "elected" && e.mono_us > after_mono_us)
        .map(|e| e.mono_us)
        .min();
    match first {
        Some(t) if t - after_mono_us <= bound.as_micros() as u64 => {
            Ok(std::time::Duration::from_micros(t - after_mono_us))
        }
        Some(t) => Err(format!(
            "I7: the next leader came {:?} after the fault, over {bound:?}",
            std::time::Duration::from_micros(t - after_mono_us)
        )),
        None => Err("I7: no leader was elected after the fault".to_string()),
    }
}
