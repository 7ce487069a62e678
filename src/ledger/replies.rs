//! Matching replies to requests. Every client message that gets an answer
//! pushes what it expects; every server reply pops it. A change is applied
//! only when its confirmation arrives (ParseComplete, CommandComplete,
//! CloseComplete), and an ErrorResponse discards what the server will skip:
//! the rest of a simple query, or the rest of an extended batch up to Sync
//! (Postgres discards the rest of a failed simple query, and skips an
//! extended batch's messages up to its Sync).

use super::change::{query_changes, statement_changes, Change};
use super::{Ledger, Prepared, PreparedKind};
use crate::protocol::codec::cstr;
use crate::protocol::frontend::{self, FrontendTag};
use std::collections::{BTreeSet, HashMap, VecDeque};

/// One expected reply (or group of replies).
#[derive(Debug)]
pub(crate) enum Expect {
    /// A simple Query: one CommandComplete per statement, then ReadyForQuery.
    Query {
        stmts: Option<Vec<Vec<Change>>>,
        next: usize,
        /// Statements (by index) that use a deferred statement pgbaton
        /// prepared for this query (see `lazy`): an error at one of them,
        /// when that Parse failed, is answered with the Parse's error.
        lazy: Vec<(usize, String)>,
    },
    /// ParseComplete for a named statement.
    ParseNamed(Box<(String, Prepared)>),
    /// ParseComplete for the unnamed statement (body in `unnamed_pending`).
    ParseUnnamed,
    Bind,
    Describe,
    Execute(Vec<Change>),
    /// CloseComplete; `Some(name)` for a statement.
    Close(Option<String>),
    Sync,
    FunctionCall,
    /// pgbaton's own Parse of a deferred statement (see `lazy`).
    LazyParse(String),
    /// pgbaton's own Sync after one, before a simple query.
    LazySync,
}

impl Expect {
    pub(super) fn ends_batch(&self) -> bool {
        matches!(
            self,
            Expect::Query { .. } | Expect::Sync | Expect::FunctionCall | Expect::LazySync
        )
    }
}

/// What the relay does with the reply the ledger has just seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Fate {
    /// The client's: passed on.
    #[default]
    Forward,
    /// The reply to pgbaton's own request: dropped.
    Drop,
    /// The error of pgbaton's own Parse of this deferred statement, before
    /// a simple query: held back, to answer the statement that uses it.
    Keep(String),
    /// The query's error at a statement using this deferred statement,
    /// whose Parse failed: the kept error goes to the client instead.
    Replace(String),
}

/// The expected replies, in order, counting the requests among them
/// (what [`super::in_flight::InFlight`] reports).
#[derive(Debug, Default)]
pub(crate) struct Expected {
    items: VecDeque<Expect>,
    requests: u32,
}

impl Expected {
    fn is_request(e: &Expect) -> bool {
        matches!(
            e,
            Expect::Query { .. } | Expect::Sync | Expect::FunctionCall
        )
    }

    pub(crate) fn push_back(&mut self, e: Expect) {
        if Self::is_request(&e) {
            self.requests += 1;
        }
        self.items.push_back(e);
    }

    pub(crate) fn pop_front(&mut self) -> Option<Expect> {
        let e = self.items.pop_front()?;
        if Self::is_request(&e) {
            self.requests -= 1;
        }
        Some(e)
    }

    pub(crate) fn front(&self) -> Option<&Expect> {
        self.items.front()
    }

    /// For the fields of the front expectation; it stays what it is.
    pub(crate) fn front_mut(&mut self) -> Option<&mut Expect> {
        self.items.front_mut()
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Expect> {
        self.items.get(i)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Expect> {
        self.items.iter()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Query, Sync and FunctionCall requests waiting for their
    /// ReadyForQuery.
    pub(crate) fn requests(&self) -> u32 {
        self.requests
    }
}

#[derive(Debug, Default)]
pub(crate) struct Replies {
    pub(crate) queue: Expected,
    /// Batch, COPY and transaction status: the rest of what is in flight.
    pub(crate) protocol: super::in_flight::Protocol,
    /// An error arrived since the last ReadyForQuery.
    pub(super) error: bool,
    /// The server is skipping the client's messages until its next Sync
    /// (an error in an extended batch whose Sync was not sent yet): they
    /// get no reply, so nothing is expected of them.
    pub(crate) skipping: bool,
    /// What becomes of the reply just seen (see `lazy`).
    pub(crate) fate: Fate,
    /// Deferred statements whose Parse failed for the query now running.
    pub(crate) lazy_failed: BTreeSet<String>,
    /// For the next Query: its statements that use deferred statements.
    pub(crate) next_query_lazy: Vec<(usize, String)>,
    /// Statement behind the unnamed portal (`None`: the unnamed statement).
    unnamed_portal: Option<String>,
    pub(super) named_portals: HashMap<String, Option<String>>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Ledger {
    pub(super) fn search_path(&self) -> Option<String> {
        self.vars.current().settings.get("search_path").cloned()
    }

    fn note_custom_names(&mut self, changes: &[Vec<Change>]) {
        for c in changes.iter().flatten() {
            match c {
                Change::Set { name, .. }
                    if name.contains('.') && !self.custom_names.contains(name) =>
                {
                    self.custom_names.insert(name.clone());
                }
                // Names inside a prepared statement count too: EXECUTE
                // applies them later.
                Change::Prepare { text, .. } => {
                    if let Some(inner) = query_changes(text.as_bytes()) {
                        self.note_custom_names(&inner);
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether the server skips what the client sends now, up to a Sync
    /// (Postgres' ignore_till_sync): such messages are never answered.
    pub fn skipping(&self) -> bool {
        self.replies.skipping
    }

    /// What is in flight on the server connection now.
    pub fn in_flight(&self) -> super::in_flight::InFlight {
        super::in_flight::InFlight {
            requests: self.replies.queue.requests(),
            protocol: self.replies.protocol,
        }
    }

    /// What preparing a deferred statement before a request needs to know
    /// of the client's state.
    pub fn client_state(&self) -> super::lazy::ClientState {
        let f = self.in_flight();
        super::lazy::ClientState {
            batch_open: f.batch_open(),
            tx_failed: f.tx_status() == crate::protocol::backend::TxStatus::Failed,
            quiet_idle: f.outstanding() == 0
                && !f.batch_open()
                && f.tx_status() == crate::protocol::backend::TxStatus::Idle,
        }
    }

    /// A complete client message, as it is forwarded.
    pub fn on_frontend(&mut self, tag: FrontendTag, body: &[u8]) {
        if self.replies.skipping {
            // Skipped by the server, so no reply and no effect; a Sync
            // ends the skip and gets its ReadyForQuery.
            if tag == FrontendTag::Sync {
                self.replies.skipping = false;
                self.replies.protocol.on_frontend(tag);
                self.replies.queue.push_back(Expect::Sync);
            }
            return;
        }
        self.replies.protocol.on_frontend(tag);
        match tag {
            FrontendTag::Query => {
                let stmts = query_changes(frontend::query_text(body));
                if let Some(s) = &stmts {
                    self.note_custom_names(s);
                }
                // Any simple query destroys the unnamed statement.
                if self.unnamed.take().is_some() {
                    self.version += 1;
                }
                self.deferred.remove("");
                self.replies.queue.push_back(Expect::Query {
                    stmts,
                    next: 0,
                    lazy: std::mem::take(&mut self.replies.next_query_lazy),
                });
            }
            FrontendTag::Parse => {
                let Some(p) = frontend::parse_body(body) else {
                    return;
                };
                let changes = statement_changes(p.query);
                self.note_custom_names(std::slice::from_ref(&changes));
                if p.name.is_empty() {
                    let mut buf = self.spare.pop().unwrap_or_default();
                    buf.clear();
                    buf.extend_from_slice(body);
                    self.unnamed_pending.push_back((buf, changes));
                    self.replies.queue.push_back(Expect::ParseUnnamed);
                } else {
                    let prepared = Prepared {
                        kind: PreparedKind::Protocol {
                            parse_body: body.to_vec(),
                        },
                        search_path: self.search_path(),
                        changes,
                    };
                    self.replies
                        .queue
                        .push_back(Expect::ParseNamed(Box::new((text(p.name), prepared))));
                }
            }
            FrontendTag::Bind => self.on_bind_prefix(body),
            FrontendTag::Execute => {
                let portal = cstr(body).map(|(p, _)| p).unwrap_or_default();
                // Looked up by reference: executing a named statement must
                // not allocate (pgbench -M prepared does it every query).
                let stmt: Option<&str> = if portal.is_empty() {
                    self.replies.unnamed_portal.as_deref()
                } else {
                    match self.replies.named_portals.get(&text(portal)) {
                        Some(s) => s.as_deref(),
                        None => None,
                    }
                };
                let changes = match stmt {
                    None => self.unnamed_changes(),
                    Some(name) => self
                        .prepared
                        .get(name)
                        .map(|p| p.changes.clone())
                        .unwrap_or_default(),
                };
                self.replies.queue.push_back(Expect::Execute(changes));
            }
            FrontendTag::Describe => self.replies.queue.push_back(Expect::Describe),
            FrontendTag::Close => {
                let name = match body.split_first() {
                    Some((b'S', rest)) => cstr(rest).map(|(n, _)| text(n)),
                    _ => None,
                };
                self.replies.queue.push_back(Expect::Close(name));
            }
            FrontendTag::Sync => self.replies.queue.push_back(Expect::Sync),
            FrontendTag::FunctionCall => self.replies.queue.push_back(Expect::FunctionCall),
            _ => {}
        }
    }

    fn unnamed_changes(&self) -> Vec<Change> {
        // The statement an unnamed portal runs is the latest unnamed Parse,
        // confirmed or still pending in the same batch.
        match self.unnamed_pending.back() {
            Some((_, c)) => c.clone(),
            None => self
                .unnamed
                .as_ref()
                .map(|p| p.changes.clone())
                .unwrap_or_default(),
        }
    }

    /// A Bind, possibly only its first bytes (a Bind with large parameters
    /// streams through): the portal and statement names come first.
    pub fn on_bind_prefix(&mut self, body: &[u8]) {
        if self.replies.skipping {
            return;
        }
        self.replies.protocol.batch_open = true;
        let names =
            cstr(body).and_then(|(portal, rest)| cstr(rest).map(|(stmt, _)| (portal, stmt)));
        let stmt_name = |s: &[u8]| if s.is_empty() { None } else { Some(text(s)) };
        match names {
            Some((p, s)) if !p.is_empty() => {
                self.replies.named_portals.insert(text(p), stmt_name(s));
            }
            Some((_, s)) => {
                // Same statement as last time (every query of pgbench -M
                // prepared): keep the string, allocate nothing.
                let same = match &self.replies.unnamed_portal {
                    None => s.is_empty(),
                    Some(cur) => cur.as_bytes() == s,
                };
                if !same {
                    self.replies.unnamed_portal = stmt_name(s);
                }
            }
            None => self.replies.unnamed_portal = None,
        }
        self.replies.queue.push_back(Expect::Bind);
    }

    pub(super) fn desync(&mut self) {
        if !self.desynced {
            tracing::warn!("ledger lost track of replies; the server check is the only truth now");
        }
        self.desynced = true;
    }
}
