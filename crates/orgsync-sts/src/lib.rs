//! STS Organisation 6 client: reads one municipality's units, users and positions into `orgsync_model::snapshot::Snapshot`.
//!
//! * [`client::StsClient`] makes polite calls (in-flight and per-second limits, timeout, retries
//!   with backoff, response size limit) and offers the bulk read ([`client::StsClient::read_snapshot`])
//!   and the per-unit read ([`client::StsClient::read_unit`]).
//! * [`transport::Transport`] is the seam for security: the unsigned transport works only
//!   against the simulator; the signed profile (issue #7) implements the same trait.
//! * `bitemporal` applies the registration/virkning rules; problems become [`issues::ReadIssue`]s.
//! * [`cli`] holds the `orgsync sts ...` subcommands.
//!
//! **Architecture Invariant:** CPR numbers are never requested, parsed or stored: the response
//! shapes do not declare `CPR-NummerTekst`, so it is skipped unread.

mod bitemporal;
pub mod c14n;
pub mod cli;
pub mod client;
pub mod dsig;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod issues;
pub mod limits;
pub mod options;
pub mod pager;
mod request;
mod response;
pub mod signed;
pub mod token;
pub mod transport;
pub mod wire;
pub mod xml;
