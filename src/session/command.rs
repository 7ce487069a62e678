//! The `/* pgbaton: migrate ... */` comment: a simple Query that starts with
//! it is held back (not forwarded), answered once everything the client sent
//! before it has been answered, and either answered by pgbaton alone or,
//! when a statement follows the comment, forwarded after the move.

use super::relay::{Held, Relay};
use crate::migration::stage::Reply;
use crate::migration::{MoveError, MoveOutcome, MoveRequest, OnTimeout, Origin};
use crate::protocol::backend::TxStatus;
use crate::protocol::codec::HEADER_LEN;
use crate::protocol::frontend::{parse_body, query_text, FrontendTag};
use crate::protocol::write;
use crate::protocol::{Said, SqlState};
use crate::sql::{parse_command, Command};
use bytes::BytesMut;

/// The SQL of a held message: a Query's text or a Parse's query.
fn command_text(msg: &[u8]) -> &[u8] {
    let body = &msg[HEADER_LEN..];
    if msg.first() == Some(&b'P') {
        parse_body(body).map(|p| p.query).unwrap_or_default()
    } else {
        query_text(body)
    }
}

/// Cheap test run on every Query and Parse: does its text start with a block
/// comment that names pgbaton? Only then is it parsed.
pub fn is_command(tag: FrontendTag, body: &[u8]) -> bool {
    let text = if tag == FrontendTag::Parse {
        match crate::protocol::codec::cstr(body)
            .and_then(|(_, rest)| crate::protocol::codec::cstr(rest))
        {
            Some((q, _)) => q,
            None => return false,
        }
    } else {
        query_text(body)
    };
    let start = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(text.len());
    let rest = &text[start..];
    rest.starts_with(b"/*") && {
        let inner = &rest[2..];
        let s = inner
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(inner.len());
        inner[s..].len() >= 8 && inner[s..s + 8].eq_ignore_ascii_case(b"pgbaton:")
    }
}

impl Relay {
    /// Refuses the held command: for a Query, ErrorResponse and
    /// ReadyForQuery; for a Parse, ErrorResponse now and the rest of the
    /// client's batch dropped up to its Sync, which gets the ReadyForQuery.
    fn reply_error(&mut self, code: SqlState, message: &str) {
        let parse = self.held_is_parse();
        self.held = Held::Answered;
        let mut out = Said::error(code, message).to_bytes();
        if parse {
            self.discard_until_sync = true;
        } else {
            write::ready_for_query(
                &mut out,
                self.ledger.in_flight().tx_status().as_char() as u8,
            );
        }
        self.client.outbox.push(out.freeze());
    }

    fn held_is_parse(&self) -> bool {
        matches!(&self.held, Held::Command(m) if m.first() == Some(&b'P'))
    }

    fn reply_notice(&mut self, message: &str) {
        self.reply_said(&Said::notice(message));
    }

    fn reply_said(&mut self, said: &Said) {
        self.client.outbox.push(said.to_bytes().freeze());
    }

    fn reply_done(&mut self, tag: &str) {
        let mut out = BytesMut::new();
        write::command_complete(&mut out, tag);
        write::ready_for_query(
            &mut out,
            self.ledger.in_flight().tx_status().as_char() as u8,
        );
        self.client.outbox.push(out.freeze());
    }

    /// Sends the held Query or Parse on to the server, as if it had never
    /// been held.
    fn forward_held(&mut self) {
        if let Held::Command(msg) = std::mem::replace(&mut self.held, Held::Answered) {
            let tag = FrontendTag::from_byte(msg[0]);
            // The move just made may have deferred what it uses.
            let client = self.ledger.client_state();
            if let Some(first) = self.ledger.lazy_parse_for(tag, &msg[HEADER_LEN..], client) {
                self.server.outbox.push(first.freeze());
            }
            self.ledger.on_frontend(tag, &msg[HEADER_LEN..]);
            self.server.outbox.push(msg);
        }
    }

    /// Runs the held command comment. Called once every earlier request of
    /// the client has been answered, so replies stay in order.
    pub(crate) fn process_held(&mut self) {
        let Held::Command(msg) = &self.held else {
            return;
        };
        let msg = msg.clone();
        let parse = self.held_is_parse();
        let text = command_text(&msg);
        let parsed = match parse_command(text) {
            None => return self.forward_held(),
            Some(Err(e)) => return self.reply_error(SqlState::SYNTAX_ERROR, &e.to_string()),
            Some(Ok(c)) => c,
        };
        let Command::Migrate {
            to,
            from,
            dry_run,
            wait,
        } = parsed.command;
        let Some(ctx) = self.ctx.clone() else { return };
        let config = ctx.env.config();
        if let Some(from) = from {
            if !config.is_admin(&ctx.user) {
                return self.reply_error(
                    SqlState::INSUFFICIENT_PRIVILEGE,
                    "pgbaton: moving every session of a backend (from=) needs an admin user",
                );
            }
            if dry_run {
                return self.reply_error(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    "pgbaton: dry_run applies to this session only; it does not combine with from=",
                );
            }
            let (mut draft, here) =
                match super::fleet::move_draft(&ctx.env, Some(&from), &to, Origin::Admin) {
                    Ok(d) => d,
                    Err(e) => return self.reply_error(e.sqlstate(), &format!("pgbaton: {e}")),
                };
            if let Some(spec) = draft.moves.as_mut() {
                spec.wait_ms = wait.map(|w| w.as_millis() as u64);
            }
            let plan = draft.id.clone();
            // Proposed on its own task: the session answers at once, and
            // the leader's decision shows in SHOW PLANS and SHOW CONFLICTS
            // (a lost conflict or a refusal is logged here too).
            let env = ctx.env.clone();
            tokio::spawn(async move {
                match super::fleet::propose(&env, draft).await {
                    Ok((plan, None)) => tracing::info!(plan = %plan, "fleet-wide move committed"),
                    Ok((plan, Some(n))) => {
                        tracing::info!(plan = %plan, note = %n, "fleet-wide move proposed")
                    }
                    Err((code, m)) => {
                        tracing::warn!(code = code.code(), message = %m, "fleet-wide move not done")
                    }
                }
            });
            self.reply_notice(&format!(
                "pgbaton: plan {plan} proposed: moving every session from {from} to {to}, at every replica ({here} here); see SHOW PLANS"
            ));
            // The command is answered once: the held message is either
            // gone or on its way to the server now.
            if parsed.has_statement || parse {
                self.forward_held();
            } else {
                self.held = Held::Answered;
                self.reply_done(&format!("MIGRATE {here}"));
            }
            return;
        }
        if self.ledger.in_flight().tx_status() != TxStatus::Idle {
            let e = MoveError::Pinned(format!(
                "open transaction (status {})",
                self.ledger.in_flight().tx_status().as_char()
            ));
            if dry_run {
                // The dry run's answer: not now, and why.
                let notice = e.dry_run_notice(ctx.id, &self.server.backend.name, &to);
                self.reply_notice(&notice);
                if parsed.has_statement || parse {
                    self.forward_held();
                } else {
                    self.held = Held::Answered;
                    self.reply_done("MIGRATE 0");
                }
                return;
            }
            return self.reply_error(e.sqlstate(), &format!("pgbaton: {e}"));
        }
        let request = MoveRequest {
            target: to,
            wait: wait.unwrap_or(config.migration_wait),
            dry_run,
            on_timeout: OnTimeout::Abort,
            origin: Origin::Comment,
        };
        // A Parse always carries its statement on.
        self.start_move(
            request,
            Reply::Client {
                has_statement: parsed.has_statement || parse,
            },
        );
    }

    /// Answers a finished (or refused) move.
    pub(crate) fn answer_move(
        &mut self,
        reply: Reply,
        result: Result<MoveOutcome, MoveError>,
        request: Option<&MoveRequest>,
    ) {
        match reply {
            Reply::Channel(tx) => {
                let _ = tx.send(result);
            }
            Reply::Client { has_statement } => {
                let moved = match &result {
                    Ok(o) => {
                        if let Some(w) = &o.warning {
                            self.reply_said(&Said::warning(w.as_str()));
                        }
                        self.reply_notice(&o.notice());
                        Some(!o.dry_run)
                    }
                    Err(MoveError::AlreadyThere(b)) => {
                        self.reply_notice(&format!("pgbaton: session is already on {b}"));
                        Some(false)
                    }
                    // A dry run was asked whether the move would work: "no,
                    // because" is its answer, not an error.
                    Err(e) if request.is_some_and(|r| r.dry_run) && e.is_verdict() => {
                        let session = self.ctx.as_ref().map_or(0, |c| c.id);
                        let to = request.map(|r| r.target.as_str()).unwrap_or_default();
                        let notice = e.dry_run_notice(session, &self.server.backend.name, to);
                        self.reply_notice(&notice);
                        Some(false)
                    }
                    Err(_) => None,
                };
                match (moved, result) {
                    (Some(_), _) if has_statement => self.forward_held(),
                    (Some(moved), _) => {
                        self.held = Held::Answered;
                        self.reply_done(if moved { "MIGRATE 1" } else { "MIGRATE 0" });
                    }
                    (None, Err(e)) => self.reply_error(e.sqlstate(), &format!("pgbaton: {e}")),
                    (None, Ok(_)) => unreachable!("an outcome is always Some"),
                }
            }
        }
    }
}
