//! Settings of the SQLite adapter.

use std::path::PathBuf;

use orgsync_model::ids::Cvr;
use orgsync_model::policy::Mappings;

/// Where the directory lives and whose part of it this is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The database file (created with its directory when missing).
    pub path: PathBuf,
    /// The customer.
    pub cvr: Cvr,
    /// Which optional fields orgsync manages; the others are never written.
    pub mappings: Mappings,
}
