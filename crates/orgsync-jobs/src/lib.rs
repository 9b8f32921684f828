//! orgsync-jobs: the nightly pipeline. Job payloads and their handlers ([`SyncCustomer`] →
//! [`SyncDepartment`] × N → [`FinishRun`]), run state and run reports, the release of held
//! runs, `plan` (a dry run), and the scheduler.
//!
//! Configuration is not read here: the binary implements [`sources::Sources`] (which STS
//! client and which target a customer has) and hands down typed options. Redis is reached only
//! through `orgsync-queue`'s API, so no key name is known here either.

pub mod explain;
pub mod pipeline;
pub mod provisioning;
pub mod release;
pub mod report;
pub mod scheduler;
pub mod sources;
mod store;

pub use store::RunObserver;
pub mod worker;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Reads a customer's snapshot, validates and plans it, writes the departments, and fans out one
/// [`SyncDepartment`] per department with user changes. Enqueued by the scheduler and by
/// `orgsync sync`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCustomer {
    /// The municipality's CVR number.
    pub cvr: String,
    /// The run this job starts (see [`pipeline::new_run_id`]).
    pub run_id: String,
}

impl orgsync_queue::Job for SyncCustomer {
    const JOB_TYPE: &'static str = "sync_customer";

    fn run_id(&self) -> Option<String> {
        Some(self.run_id.clone())
    }
}

/// Writes the users whose primary department is `unit`, from the run's stored plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDepartment {
    /// The run.
    pub run_id: String,
    /// The department (STS unit UUID).
    pub unit: Uuid,
}

impl orgsync_queue::Job for SyncDepartment {
    const JOB_TYPE: &'static str = "sync_department";

    fn run_id(&self) -> Option<String> {
        Some(self.run_id.clone())
    }
}

/// Enqueued by the queue when the last [`SyncDepartment`] of a run is terminal: applies (or
/// holds) the deactivations, writes the run report, releases the customer's run lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishRun {
    /// The run.
    pub run_id: String,
}

impl orgsync_queue::Job for FinishRun {
    const JOB_TYPE: &'static str = "finish_run";

    fn run_id(&self) -> Option<String> {
        Some(self.run_id.clone())
    }
}
