//! Reading the server's replies against what the ledger expects (see
//! [`super::replies`]): a change is applied only when its confirmation
//! arrives, and an error discards what the server will skip.

use super::change::{statement_changes, Change};
use super::replies::{Expect, Fate};
use super::{Ledger, Prepared, PreparedKind};
use crate::protocol::backend::BackendTag;
use crate::protocol::codec::cstr;
use crate::sql::Discard;

impl Ledger {
    pub fn on_backend(&mut self, tag: BackendTag, body: &[u8]) {
        self.replies.protocol.on_backend(tag, body);
        match tag {
            BackendTag::ParseComplete => self.on_parse_complete(),
            BackendTag::BindComplete => self.expect(|e| matches!(e, Expect::Bind)),
            BackendTag::NoData | BackendTag::RowDescription => {
                // A RowDescription inside a simple query's results belongs to it.
                if matches!(self.replies.queue.front(), Some(Expect::Describe)) {
                    self.replies.queue.pop_front();
                }
            }
            BackendTag::CloseComplete => match self.replies.queue.pop_front() {
                Some(Expect::Close(Some(name))) => {
                    self.deferred.remove(&name);
                    if self.prepared.remove(&name).is_some() {
                        self.version += 1;
                    }
                }
                Some(Expect::Close(None)) => {}
                _ => self.desync(),
            },
            BackendTag::CommandComplete => self.on_command_complete(body),
            BackendTag::EmptyQueryResponse | BackendTag::PortalSuspended => {
                if matches!(self.replies.queue.front(), Some(Expect::Execute(_))) {
                    self.replies.queue.pop_front();
                }
            }
            BackendTag::ErrorResponse => self.on_error(body),
            BackendTag::ReadyForQuery => self.on_ready(body),
            BackendTag::ParameterStatus => self.on_parameter_status(body),
            _ => {}
        }
    }

    /// ParseComplete: the statement is prepared now.
    fn on_parse_complete(&mut self) {
        match self.replies.queue.pop_front() {
            Some(Expect::LazyParse(name)) => {
                // Prepared on this server now, as the ledger has it.
                self.replies.fate = Fate::Drop;
                self.deferred.remove(&name);
                self.version += 1;
            }
            Some(Expect::ParseNamed(b)) => {
                let (name, p) = *b;
                self.deferred.remove(&name);
                self.prepared.insert(name, p);
                self.version += 1;
            }
            Some(Expect::ParseUnnamed) => {
                self.deferred.remove("");
                if let Some((buf, changes)) = self.unnamed_pending.pop_front() {
                    let search_path = self.search_path();
                    let old = self.unnamed.replace(Prepared {
                        kind: PreparedKind::Protocol { parse_body: buf },
                        search_path,
                        changes,
                    });
                    if let Some(Prepared {
                        kind: PreparedKind::Protocol { parse_body },
                        ..
                    }) = old
                    {
                        self.spare.push(parse_body);
                    }
                    self.version += 1;
                }
            }
            _ => self.desync(),
        }
    }

    /// CommandComplete: a statement's changes took effect.
    fn on_command_complete(&mut self, body: &[u8]) {
        let tag = cstr(body).map(|(t, _)| t).unwrap_or_default();
        match self.replies.queue.front_mut() {
            Some(Expect::Query { stmts, next, .. }) => {
                let changes = stmts
                    .as_mut()
                    .and_then(|s| s.get_mut(*next))
                    .map(std::mem::take);
                *next += 1;
                if let Some(changes) = changes {
                    self.apply(&changes, tag);
                }
            }
            Some(Expect::Execute(_)) => {
                if let Some(Expect::Execute(changes)) = self.replies.queue.pop_front() {
                    self.apply(&changes, tag);
                }
            }
            _ => self.desync(),
        }
    }

    /// ErrorResponse: what the server will skip, and what becomes of it.
    fn on_error(&mut self, body: &[u8]) {
        self.replies.error = true;
        let fields = crate::protocol::backend::error_fields(body);
        if let Some(Expect::Query { next, lazy, .. }) = self.replies.queue.front() {
            // A statement using a deferred statement whose Parse
            // failed, failing because that statement is missing
            // (or its transaction aborted by that Parse): the old
            // server's answer is that Parse's error.
            let missing = matches!(fields.code, b"26000" | b"25P02");
            if let Some((_, name)) = lazy
                .iter()
                .find(|(i, n)| missing && i == next && self.replies.lazy_failed.contains(n))
            {
                self.replies.fate = Fate::Replace(name.clone());
                return;
            }
        }
        if let (Some(Expect::LazyParse(_)), Some(Expect::LazySync), false) = (
            self.replies.queue.front(),
            self.replies.queue.get(1),
            fields.is_fatal(),
        ) {
            // pgbaton's own Parse before a simple query: its error
            // waits for the statement that uses it.
            if let Some(Expect::LazyParse(name)) = self.replies.queue.pop_front() {
                self.replies.lazy_failed.insert(name.clone());
                self.replies.fate = Fate::Keep(name);
            }
            return;
        }
        match self.replies.queue.front() {
            // A simple query or function call failed, or the commit
            // at a Sync: its own ReadyForQuery follows, nothing is
            // skipped.
            None
            | Some(Expect::Query { .. } | Expect::FunctionCall | Expect::Sync | Expect::LazySync) =>
                {}
            // An extended message failed: the server skips every
            // message up to the next Sync, whatever it is.
            Some(_) => {
                while let Some(front) = self.replies.queue.front() {
                    if matches!(front, Expect::Sync | Expect::LazySync) {
                        break;
                    }
                    // A skipped request gets no ReadyForQuery: leaving the
                    // queue, it leaves the requests in flight.
                    if let Some(Expect::ParseUnnamed) = self.replies.queue.pop_front() {
                        if let Some((buf, _)) = self.unnamed_pending.pop_front() {
                            self.spare.push(buf);
                        }
                    }
                }
                // Its Sync is not sent yet: what comes before it is
                // skipped too.
                self.replies.skipping = self.replies.queue.is_empty();
            }
        }
    }

    /// ReadyForQuery: whatever did not answer before it never will.
    fn on_ready(&mut self, body: &[u8]) {
        // Whatever did not answer before ReadyForQuery never will.
        while let Some(e) = self.replies.queue.pop_front() {
            match e {
                // pgbaton's own Sync: its ReadyForQuery is not the
                // client's, the transaction status it reports is.
                Expect::LazySync => self.replies.fate = Fate::Drop,
                // Kept errors live as long as a query may use them.
                Expect::Query { .. }
                    if !self
                        .replies
                        .queue
                        .iter()
                        .any(|q| matches!(q, Expect::Query { lazy, .. } if !lazy.is_empty())) =>
                {
                    self.replies.lazy_failed.clear()
                }
                _ => {}
            }
            if e.ends_batch() {
                break;
            }
            self.desync();
        }
        let status = body.first().copied().unwrap_or(b'I');
        if self.vars.ready(status, self.replies.error) {
            self.version += 1;
        }
        self.replies.error = false;
        if status == b'I' {
            // Portals end with their transaction.
            self.replies.named_portals.clear();
        }
    }

    /// ParameterStatus: the value the client sees now.
    fn on_parameter_status(&mut self, body: &[u8]) {
        if let Some((n, v)) = crate::protocol::backend::parameter_status(body) {
            match self.reported.iter_mut().find(|(name, _)| name == n) {
                Some((_, value)) if value == v => {}
                Some((_, value)) => {
                    value.clear();
                    value.extend_from_slice(v);
                    self.version += 1;
                }
                None => {
                    self.reported.push((n.to_vec(), v.to_vec()));
                    self.version += 1;
                }
            }
        }
    }

    fn expect(&mut self, want: impl Fn(&Expect) -> bool) {
        match self.replies.queue.front() {
            Some(e) if want(e) => {
                self.replies.queue.pop_front();
            }
            _ => self.desync(),
        }
    }

    /// Applies one confirmed statement's changes.
    fn apply(&mut self, changes: &[Change], tag: &[u8]) {
        if changes.is_empty() {
            return;
        }
        self.version += 1;
        for c in changes {
            match c {
                Change::Prepare { name, text } => {
                    // Prepared anew by the client: no longer deferred.
                    self.deferred.remove(name);
                    self.replies.lazy_failed.remove(name);
                    let changes = statement_changes(text.as_bytes());
                    let search_path = self.search_path();
                    self.prepared.insert(
                        name.clone(),
                        Prepared {
                            kind: PreparedKind::Sql { text: text.clone() },
                            search_path,
                            changes,
                        },
                    );
                }
                Change::Deallocate(Some(name)) => {
                    self.prepared.remove(name);
                    self.deferred.remove(name);
                    self.replies.lazy_failed.remove(name);
                }
                Change::Deallocate(None) => {
                    self.prepared.clear();
                    self.deferred.retain(|n, _| n.is_empty());
                }
                Change::AdvisoryLock => self.blockers.advisory_locks += 1,
                Change::AdvisoryUnlock => {
                    self.blockers.advisory_locks = self.blockers.advisory_locks.saturating_sub(1)
                }
                Change::AdvisoryUnlockAll => self.blockers.advisory_locks = 0,
                Change::Load(lib) => self.blockers.loaded_libraries.push(lib.clone()),
                Change::DblinkConnect => self.blockers.dblink_connections += 1,
                Change::DblinkDisconnect => {
                    self.blockers.dblink_connections =
                        self.blockers.dblink_connections.saturating_sub(1)
                }
                Change::OpaqueSetConfig => self.blockers.opaque_set_config = true,
                Change::Execute(name) => {
                    if let Some(inner) = self.prepared.get(name).map(|p| p.changes.clone()) {
                        self.apply(&inner, tag);
                    }
                }
                Change::Discard(Discard::All) => {
                    self.prepared.clear();
                    self.deferred.retain(|n, _| n.is_empty());
                    self.blockers.advisory_locks = 0;
                    self.vars.apply(c, tag);
                }
                other => self.vars.apply(other, tag),
            }
        }
    }
}
