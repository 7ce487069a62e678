//! What a console command answers: a result set of text columns, or an error
//! with a real SQLSTATE.

use crate::protocol::write;
use crate::protocol::{write_client_error, ClientError, Said, SqlState};
use bytes::BytesMut;
use thiserror::Error;

pub struct ResultSet {
    pub columns: Vec<&'static str>,
    /// Type OID per column; text unless set.
    pub types: Vec<u32>,
    pub rows: Vec<Vec<Option<String>>>,
    pub tag: String,
    /// Sent first, each as a WARNING.
    pub warnings: Vec<String>,
    /// Sent first too, each as a NOTICE.
    pub notices: Vec<String>,
}

impl ResultSet {
    pub fn new(columns: Vec<&'static str>) -> ResultSet {
        ResultSet {
            types: vec![write::TEXT_OID; columns.len()],
            columns,
            rows: Vec::new(),
            tag: String::new(),
            warnings: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Declares `column`'s type (its values are still written as text).
    pub fn set_type(&mut self, column: &str, oid: u32) {
        if let Some(i) = self.columns.iter().position(|c| *c == column) {
            self.types[i] = oid;
        }
    }

    pub fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    pub fn write(&self, out: &mut BytesMut) {
        for w in &self.warnings {
            write_client_error(out, &Said::warning(w.as_str()));
        }
        for n in &self.notices {
            write_client_error(out, &Said::notice(n.as_str()));
        }
        write::row_description(out, &self.columns, &self.types);
        for r in &self.rows {
            let values: Vec<Option<&str>> = r.iter().map(|v| v.as_deref()).collect();
            write::data_row(out, &values);
        }
        let tag = if self.tag.is_empty() {
            format!("SELECT {}", self.rows.len())
        } else {
            self.tag.clone()
        };
        write::command_complete(out, &tag);
    }
}

#[derive(Debug, Clone, Error)]
#[error("{message}")]
pub struct AdminError {
    pub code: SqlState,
    pub message: String,
    pub hint: Option<String>,
}

impl AdminError {
    pub fn new(code: SqlState, message: impl Into<String>) -> AdminError {
        AdminError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    pub fn write(&self, out: &mut BytesMut) {
        write_client_error(out, self);
    }
}

impl ClientError for AdminError {
    fn sqlstate(&self) -> SqlState {
        self.code.clone()
    }

    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

impl From<crate::migration::MoveError> for AdminError {
    fn from(e: crate::migration::MoveError) -> AdminError {
        AdminError::new(e.sqlstate(), e.to_string())
    }
}
