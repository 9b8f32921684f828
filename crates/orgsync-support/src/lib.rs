//! orgsync-support: support tickets without flooding and Sentry.
//!
//! - [`Tickets::observe`] takes a [`RunOutcome`] when a run ends and keeps one ticket per
//!   (customer CVR, error class) in Zendesk ([`sink::zendesk`]) or a JSON-lines log
//!   ([`sink::log`]): opened when a run-scoped problem persists over `open_after_runs` runs (at
//!   once for a held run, a guard and a missing service agreement), one private comment per
//!   later run, a follow-up when a person closed it, a comment on recovery, and at most
//!   `max_new_tickets_per_hour` new tickets. State lives in Redis through `orgsync-queue`.
//! - [`sentry`] starts Sentry (off without a DSN) and gives the `tracing` layer that sends the
//!   queue worker's failed attempts with fingerprint `[cvr, error_class]`.
//! - [`scrub::Scrubber`]: every outgoing text passes through it (CPR-shaped numbers, tokens,
//!   passwords, keys).

pub mod classes;
mod error;
mod observer;
mod outcome;
pub mod scrub;
pub mod sentry;
pub mod sink;
pub mod text;
mod tickets;

pub use error::SupportError;
pub use outcome::{OutcomeKind, RunOutcome, StsIncident};
pub use tickets::{TicketAction, TicketSettings, Tickets, external_id};
