//! Records of moves for SHOW MIGRATIONS: the last 1000, newest last.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

const KEEP: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Done,
    /// A dry run that ended: it moved nothing, whatever it found.
    DryRun,
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Done => "done",
            Status::DryRun => "dry run",
            Status::Aborted => "aborted",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub id: u64,
    pub session: u64,
    pub from: String,
    pub to: String,
    pub status: Status,
    pub reason: Option<String>,
    pub pause: Option<Duration>,
    pub total: Option<Duration>,
    pub started_at: SystemTime,
    pub dry_run: bool,
    /// Whether the state was read in full; `None` until it ended or when it
    /// was aborted.
    pub full_check: Option<bool>,
}

#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<(u64, VecDeque<Record>)>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<Record>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(&self, session: u64, from: &str, to: &str, dry_run: bool) -> u64 {
        let mut g = self.lock();
        g.0 += 1;
        let id = g.0;
        if g.1.len() == KEEP {
            g.1.pop_front();
        }
        g.1.push_back(Record {
            id,
            session,
            from: from.to_string(),
            to: to.to_string(),
            status: Status::Waiting,
            reason: None,
            pause: None,
            total: None,
            started_at: SystemTime::now(),
            dry_run,
            full_check: None,
        });
        id
    }

    pub fn finish(
        &self,
        id: u64,
        status: Status,
        reason: Option<String>,
        pause: Option<Duration>,
        total: Duration,
        full_check: Option<bool>,
    ) {
        if let Some(r) = self.lock().1.iter_mut().rev().find(|r| r.id == id) {
            r.full_check = full_check;
            r.status = status;
            r.reason = reason;
            r.pause = pause;
            r.total = Some(total);
        }
    }

    pub fn list(&self) -> Vec<Record> {
        self.lock().1.iter().cloned().collect()
    }
}
