//! Prepared statements a move could not create on the new server: their
//! Parse failed there (a table dropped since they were prepared, say), where
//! on the old server they would just have failed when executed, or worked
//! again once the table was back. The session keeps them; each is prepared
//! on the server right before its first use (a Bind or Describe naming it,
//! an `EXECUTE` or `DEALLOCATE` of it), and the reply to that Parse is the
//! client's business only when it is an error: then the client gets the
//! error the old server would have given, in place of its request's.
//!
//! The injected messages get expectations of their own in the reply queue
//! ([`Expect::LazyParse`], [`Expect::LazySync`]); the ledger gives each
//! reply a [`Fate`] (see [`Ledger::take_fate`]): the relay drops pgbaton's
//! own replies, and before a simple query keeps a failed Parse's error to
//! answer, in its turn, the statement that uses it.

use super::change::{query_changes, Change};
use super::replies::{Expect, Fate};
use super::{Ledger, Prepared};
use crate::protocol::codec::cstr;
use crate::protocol::frontend::{self, FrontendTag};
use bytes::BytesMut;
use std::collections::BTreeMap;

/// What the relay knows of the client when it asks [`Ledger::lazy_parse_for`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientState {
    /// An extended batch is open (no Sync yet).
    pub batch_open: bool,
    /// The transaction has failed.
    pub tx_failed: bool,
    /// Nothing is in flight and no transaction is open.
    pub quiet_idle: bool,
}

/// What a stand-in for a statement that only goes away needs to be: any
/// statement at all (a DEALLOCATE of it must succeed, as on the old server).
const STAND_IN: &str = "SELECT";

impl Ledger {
    /// Statements not prepared on the current server: name (empty for the
    /// unnamed one) and parameter types.
    pub fn deferred(&self) -> &BTreeMap<String, Vec<u32>> {
        &self.deferred
    }

    /// After a move: these statements are not prepared on the new server.
    pub fn defer(&mut self, deferred: BTreeMap<String, Vec<u32>>) {
        if deferred != self.deferred {
            self.version += 1;
        }
        self.deferred = deferred;
    }

    fn statement(&self, name: &str) -> Option<&Prepared> {
        if name.is_empty() {
            self.unnamed.as_ref()
        } else {
            self.prepared.get(name)
        }
    }

    /// A Parse of `name` is on its way: pgbaton's own, or the client's
    /// (which replaces the deferred one).
    fn lazy_in_flight(&self, name: &str) -> bool {
        (name.is_empty() && !self.unnamed_pending.is_empty())
            || self.replies.queue.iter().any(|e| match e {
                Expect::LazyParse(n) => n == name,
                Expect::ParseNamed(b) => b.0 == name,
                _ => false,
            })
    }

    /// The messages to send before the client's message `tag` (`body`
    /// complete, or the first bytes of a Bind), when it uses a deferred
    /// statement; their expectations are queued.
    pub fn lazy_parse_for(
        &mut self,
        tag: FrontendTag,
        body: &[u8],
        client: ClientState,
    ) -> Option<BytesMut> {
        if self.deferred.is_empty() || self.replies.skipping {
            return None;
        }
        match tag {
            FrontendTag::Bind => {
                let (_, rest) = cstr(body)?;
                let (stmt, _) = cstr(rest)?;
                let name = String::from_utf8_lossy(stmt).into_owned();
                self.inject(&name, false)
            }
            FrontendTag::Describe => match body.split_first() {
                Some((b'S', rest)) => {
                    let (stmt, _) = cstr(rest)?;
                    let name = String::from_utf8_lossy(stmt).into_owned();
                    self.inject(&name, false)
                }
                _ => None,
            },
            // Inside an extended batch a Sync of pgbaton's own would end
            // it; in a failed transaction a Parse fails whatever it is.
            FrontendTag::Query if !client.batch_open && !client.tx_failed => {
                self.lazy_for_query(body, client.quiet_idle)
            }
            _ => None,
        }
    }

    /// Parses (each with a Sync) for the deferred statements a simple query
    /// uses, and which of its statements use them.
    fn lazy_for_query(&mut self, body: &[u8], quiet_idle: bool) -> Option<BytesMut> {
        let stmts = query_changes(frontend::query_text(body))?;
        let alone = stmts.len() == 1;
        let mut wanted = Vec::new();
        for (i, stmt) in stmts.iter().enumerate() {
            for c in stmt {
                match c {
                    Change::Execute(n) if self.deferred.contains_key(n) => {
                        wanted.push((i, n.clone(), false))
                    }
                    // DEALLOCATE works on the old server whatever the
                    // statement's tables: a stand-in does, when it is the
                    // query's only statement (so it surely runs and the
                    // stand-in never outlives it).
                    Change::Deallocate(Some(n)) if alone && self.deferred.contains_key(n) => {
                        wanted.push((i, n.clone(), true))
                    }
                    _ => {}
                }
            }
        }
        // pgbaton's Parse runs before the whole query, in the session's
        // transaction: should it fail, the transaction is aborted before
        // the query's earlier statements run. Only when no transaction can
        // be open (nothing in flight, status idle: the Parse then has an
        // implicit transaction of its own), or when the first use is the
        // query's first statement (which the old server would fail at
        // that same point), does the answer stay the old server's.
        if wanted.is_empty() || (!quiet_idle && wanted.iter().any(|(i, _, _)| *i != 0)) {
            return None;
        }
        let mut out: Option<BytesMut> = None;
        let mut uses = Vec::new();
        for (i, name, stand_in) in wanted {
            let msgs = if stand_in {
                self.inject_stand_in(&name)
            } else {
                self.inject(&name, true)
            };
            match msgs {
                Some(msgs) => {
                    out.get_or_insert_with(BytesMut::new)
                        .extend_from_slice(&msgs);
                    uses.push((i, name));
                }
                // Already being prepared for an earlier request: its
                // error answers this one too.
                None if self.own_parse_in_flight(&name) => uses.push((i, name)),
                None => {}
            }
        }
        if !uses.is_empty() {
            self.replies.next_query_lazy = uses;
        }
        out
    }

    fn own_parse_in_flight(&self, name: &str) -> bool {
        self.replies
            .queue
            .iter()
            .any(|e| matches!(e, Expect::LazyParse(n) if n == name))
    }

    /// A Parse of deferred statement `name` (and a Sync when it goes before
    /// a simple query), when it is deferred, not being prepared already,
    /// and was prepared under the search_path the session has now (under
    /// another it could name other tables: then the server's own error
    /// answers the client).
    fn inject(&mut self, name: &str, with_sync: bool) -> Option<BytesMut> {
        let types = self.deferred.get(name)?.clone();
        if self.lazy_in_flight(name) {
            return None;
        }
        let p = self.statement(name)?;
        if p.search_path != self.vars.current().settings.get("search_path").cloned() {
            tracing::debug!(statement = %name, "deferred statement not prepared: the search_path changed since it was");
            return None;
        }
        let query = p.query_text();
        self.queue_parse(name, &query, &types, with_sync)
    }

    /// For a DEALLOCATE of a deferred statement: a stand-in of the same
    /// name, which prepares whatever its text's tables or search_path.
    fn inject_stand_in(&mut self, name: &str) -> Option<BytesMut> {
        if !self.deferred.contains_key(name) || self.lazy_in_flight(name) {
            return None;
        }
        self.queue_parse(name, STAND_IN, &[], true)
    }

    fn queue_parse(
        &mut self,
        name: &str,
        query: &str,
        types: &[u32],
        with_sync: bool,
    ) -> Option<BytesMut> {
        let mut out = BytesMut::new();
        postgres_protocol::message::frontend::parse(name, query, types.iter().copied(), &mut out)
            .ok()?;
        self.replies
            .queue
            .push_back(Expect::LazyParse(name.to_string()));
        if with_sync {
            postgres_protocol::message::frontend::sync(&mut out);
            self.replies.queue.push_back(Expect::LazySync);
        }
        tracing::debug!(statement = %name, "preparing a deferred statement at its first use");
        Some(out)
    }

    /// Whether errors kept for queries are still wanted by one.
    pub fn keeps_lazy_errors(&self) -> bool {
        !self.replies.lazy_failed.is_empty()
    }

    /// What becomes of the reply just given to [`Ledger::on_backend`]
    /// (almost always: forwarded). Reading it resets it.
    pub fn take_fate(&mut self) -> Fate {
        std::mem::take(&mut self.replies.fate)
    }
}
