//! `SupportError`: what can go wrong opening tickets or starting Sentry, split by what the caller
//! does next (`is_retriable`).

use std::time::Duration;

/// An error of the ticket sinks, the ticket state or the Sentry set-up. Messages never carry the
/// Zendesk token, the Sentry DSN or a ticket body.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// Zendesk could not be reached (connection refused, timeout, TLS).
    #[error("Zendesk at {url} could not be reached: {source}")]
    Transport {
        /// The API URL called (no credentials in it).
        url: String,
        /// What reqwest said.
        source: reqwest::Error,
    },
    /// Zendesk refused the credentials (401/403): the e-mail, the API token or its permissions.
    #[error(
        "Zendesk refused the credentials ({status}) for {url}: check [support] zendesk_email and the token in the variable zendesk_token_env names"
    )]
    Unauthorized {
        /// The API URL called.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// Zendesk kept answering 429 after waiting out its `Retry-After` as often as allowed.
    #[error("Zendesk is rate limiting orgsync ({url}); retry after {retry_after:?}")]
    RateLimited {
        /// The API URL called.
        url: String,
        /// The last `Retry-After`.
        retry_after: Duration,
    },
    /// Zendesk failed on its side (5xx).
    #[error("Zendesk answered {status} for {url}: {detail}")]
    Unavailable {
        /// The API URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer.
        detail: String,
    },
    /// Zendesk refused the request itself (4xx other than 401/403/404/429): a bad field, a
    /// ticket that cannot be updated.
    #[error("Zendesk rejected the request to {url} ({status}): {detail}")]
    Rejected {
        /// The API URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Zendesk's description of the problem.
        detail: String,
    },
    /// Zendesk's answer could not be understood.
    #[error("unexpected answer from Zendesk at {url}: {detail}")]
    Malformed {
        /// The API URL called.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The log sink's file could not be written.
    #[error("cannot write the ticket log {path}: {source}")]
    LogFile {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The ticket state in Redis could not be read or written.
    #[error("ticket state: {0}")]
    State(#[from] orgsync_queue::QueueError),
    /// The stored ticket state does not decode (written by another version).
    #[error("the stored ticket state {name} does not decode: {source}")]
    StateFormat {
        /// The state's name.
        name: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// Another process kept the customer's ticket state locked for longer than `observe` waits.
    #[error("the ticket state of CVR {cvr} is locked by {owner}; try again")]
    Busy {
        /// The customer.
        cvr: String,
        /// Who holds it.
        owner: String,
    },
    /// A setting is missing or wrong (names the field or the variable).
    #[error("{field}: {message}")]
    Config {
        /// The field or environment variable.
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

impl SupportError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            SupportError::Transport { .. }
            | SupportError::RateLimited { .. }
            | SupportError::Unavailable { .. }
            | SupportError::LogFile { .. }
            | SupportError::Busy { .. } => true,
            SupportError::State(e) => e.is_retriable(),
            SupportError::Unauthorized { .. }
            | SupportError::Rejected { .. }
            | SupportError::Malformed { .. }
            | SupportError::StateFormat { .. }
            | SupportError::Config { .. } => false,
        }
    }
}
