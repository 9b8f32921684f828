//! STS Organisation simulator: synthetic or fixture municipalities served over the same SOAP 1.2 wire protocol as KOMBIT's Organisation 6 service, or (`Dialect::Serviceplatformen5`) over the legacy Serviceplatformen v5 contract (SOAP 1.1).
//!
//! * [`generate`] builds municipalities by size and seed (docs/sizes.md §4), as the model's Snapshot.
//! * [`world::World`] indexes a Snapshot and renders its STS objects (units, users, persons,
//!   addresses, functions) as XML exactly as the v6 XSDs order them, with JAXB-style prefixes.
//! * [`server::Simulator`] runs the axum server in-process (`127.0.0.1:0`) with latency and
//!   fault injection; municipalities can be replaced while it runs.
//! * [`cli`] holds `orgsync sim`.
//!
//! **Architecture Invariant:** the simulator shares no code with the client (`orgsync-sts`):
//! both are checked against the official XSDs, so neither can hide the other's mistakes.

pub mod cli;
mod dsig;
pub mod generate;
pub mod pki;
pub mod security;
pub mod server;
mod tls;
mod wire;
pub mod world;
mod xml;

pub use wire::{Dialect, Service};

/// Why the simulator could not start or load data.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(String, String),
    /// A fixture could not be read or parsed.
    #[error("cannot load fixture {path}: {message}")]
    Fixture {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

/// Reads a municipality from a Snapshot JSON fixture.
pub fn load_fixture(path: &std::path::Path) -> Result<orgsync_model::snapshot::Snapshot, SimError> {
    let text = std::fs::read_to_string(path).map_err(|e| SimError::Fixture {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| SimError::Fixture {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
