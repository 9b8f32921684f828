//! Where tickets go: Zendesk Support, or a JSON-lines log for suppliers without Zendesk. Both
//! receive the same de-duplicated feed; texts arrive already scrubbed.

pub mod log;
pub mod zendesk;

use serde::Serialize;

use crate::error::SupportError;

/// A ticket's state as the desk sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketStatus {
    /// New, open, pending or on hold: a person may still work on it; comments go there.
    Open,
    /// A person solved it.
    Solved,
    /// Closed (solved and archived, or closed by a person): it cannot be updated any more.
    Closed,
}

/// A ticket to create.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewTicket {
    /// `orgsync:{cvr}:{error_class}`.
    pub external_id: String,
    /// Unique per attempt to create the ticket for one run, so a retried create does not
    /// duplicate it (`Idempotency-Key`).
    pub idempotency_key: String,
    /// At most 150 characters.
    pub subject: String,
    /// The first comment, private.
    pub body: String,
    /// `urgent`, `high`, `normal` or `low`.
    pub priority: String,
    /// Tags: `orgsync`, the class and the CVR.
    pub tags: Vec<String>,
    /// A closed ticket this one follows up (`via_followup_source_id`).
    pub followup_of: Option<String>,
}

/// The configured sink.
#[derive(Debug)]
pub enum Sink {
    /// Zendesk Support's ticket API.
    Zendesk(Box<zendesk::ZendeskClient>),
    /// JSON lines to a file or stderr.
    Log(log::LogSink),
}

impl Sink {
    /// The newest ticket with `external_id` that is still open, if any.
    pub async fn find_open(&self, external_id: &str) -> Result<Option<String>, SupportError> {
        match self {
            Sink::Zendesk(z) => z.find_open(external_id).await,
            Sink::Log(_) => Ok(None),
        }
    }

    /// The ticket's status; `None` when it no longer exists.
    pub async fn status(&self, id: &str) -> Result<Option<TicketStatus>, SupportError> {
        match self {
            Sink::Zendesk(z) => z.status(id).await,
            Sink::Log(_) => Ok(Some(TicketStatus::Open)),
        }
    }

    /// Creates a ticket; returns its id.
    pub async fn create(&self, ticket: &NewTicket) -> Result<String, SupportError> {
        match self {
            Sink::Zendesk(z) => z.create(ticket).await,
            Sink::Log(l) => l.create(ticket),
        }
    }

    /// Adds a private comment.
    pub async fn comment(
        &self,
        id: &str,
        external_id: &str,
        body: &str,
    ) -> Result<(), SupportError> {
        match self {
            Sink::Zendesk(z) => z.comment(id, body).await,
            Sink::Log(l) => l.comment(id, external_id, body),
        }
    }
}
