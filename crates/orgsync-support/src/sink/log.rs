//! The log sink (`[support] sink = "log"`): every ticket and comment orgsync would send, as one
//! JSON object per line, appended to a file or written to stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::Utc;
use serde_json::json;

use super::NewTicket;
use crate::error::SupportError;

/// Writes tickets and comments as JSON lines.
#[derive(Debug)]
pub struct LogSink {
    path: Option<PathBuf>,
    lock: Mutex<()>,
}

impl LogSink {
    /// Appends to `path` (created when missing), or writes to stderr when `None`.
    pub fn new(path: Option<PathBuf>) -> LogSink {
        LogSink {
            path,
            lock: Mutex::new(()),
        }
    }

    pub(crate) fn create(&self, ticket: &NewTicket) -> Result<String, SupportError> {
        // A stable id per (fingerprint, run): the same feed gives the same ids.
        let id = ticket.idempotency_key.clone();
        self.write(&json!({
            "at": Utc::now(),
            "action": if ticket.followup_of.is_some() { "follow_up" } else { "create" },
            "ticket_id": id,
            "external_id": ticket.external_id,
            "subject": ticket.subject,
            "body": ticket.body,
            "priority": ticket.priority,
            "tags": ticket.tags,
            "followup_of": ticket.followup_of,
        }))?;
        Ok(id)
    }

    pub(crate) fn comment(
        &self,
        id: &str,
        external_id: &str,
        body: &str,
    ) -> Result<(), SupportError> {
        self.write(&json!({
            "at": Utc::now(),
            "action": "comment",
            "ticket_id": id,
            "external_id": external_id,
            "body": body,
            "public": false,
        }))
    }

    fn write(&self, line: &serde_json::Value) -> Result<(), SupportError> {
        let mut text = line.to_string();
        text.push('\n');
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = match &self.path {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(text.as_bytes())),
            None => std::io::stderr().lock().write_all(text.as_bytes()),
        };
        result.map_err(|source| SupportError::LogFile {
            path: self
                .path
                .as_ref()
                .map_or_else(|| "stderr".to_owned(), |p| p.display().to_string()),
            source,
        })
    }
}
