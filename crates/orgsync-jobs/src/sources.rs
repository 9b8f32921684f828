//! What the pipeline needs from the outside world for one customer: its policy, an STS read, and
//! its target. The binary implements [`Sources`] from the configuration; tests implement it
//! directly.

use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use orgsync_model::error_class::{ErrorClass, FailedStsCall};
use orgsync_model::ids::Cvr;
use orgsync_model::policy::Policy;
use orgsync_model::snapshot::Snapshot;
use orgsync_model::target::TargetState;
use orgsync_model::validate::SourceCounts;
use orgsync_target::Target;
use serde::{Deserialize, Serialize};

/// One configured customer, as the pipeline sees it.
#[derive(Clone, Debug)]
pub struct Customer {
    /// The municipality.
    pub cvr: Cvr,
    /// Its name, for people.
    pub name: String,
    /// Scope, defaults, guards, mappings.
    pub policy: Policy,
}

/// A whole read of one municipality.
#[derive(Clone, Debug)]
pub struct SourceRead {
    /// The snapshot (with `partial` set when part of the read failed for good).
    pub snapshot: Snapshot,
    /// STS calls the read made, retries included.
    pub calls: u64,
    /// Problems in the data that the reader skipped, for the report.
    pub issues: Vec<String>,
}

/// How far an STS read has got, as the run's report shows it while the run reads (the STS
/// client's figure: `orgsync_sts::pager::ReadProgress`, copied so that this crate needs no
/// STS dependency).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadProgress {
    /// STS calls made so far (retries included).
    pub calls: u64,
    /// Distinct objects found so far (units, positions and users).
    pub objects: u64,
    /// Calls still expected; a lower bound while `paging`.
    pub remaining_estimate: u64,
    /// Whether a search is still paging (more pages may come).
    pub paging: bool,
    /// Whether the read has ended.
    pub done: bool,
}

/// Where a read reports its progress: the pipeline records the latest value in the run's
/// report (at most once per `PipelineOptions::progress_interval`).
pub type ProgressSender = tokio::sync::watch::Sender<ReadProgress>;

/// A failure to reach a customer's STS or target, with what the queue should do about it. The
/// class and retriability are the library error's own (`StsError::class`, `TargetError::class`),
/// passed through unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// The error class for the error log, the dead-letter queue, the report and tickets.
    pub class: ErrorClass,
    /// Whether trying again later may succeed.
    pub retriable: bool,
    /// The shortest sensible wait before another attempt (a full disk, a `Retry-After`).
    pub retry_not_before: Option<Duration>,
    /// What failed and why, for people (never a secret).
    pub message: String,
    /// The STS call that failed for good, when STS failed (for KOMBIT's service desk).
    pub sts_failure: Option<Box<FailedStsCall>>,
}

impl SourceError {
    /// A configuration problem: not retriable.
    pub fn config(message: impl Into<String>) -> SourceError {
        SourceError {
            class: ErrorClass::ConfigInvalid,
            retriable: false,
            retry_not_before: None,
            message: message.into(),
            sts_failure: None,
        }
    }

    /// A target failure, classified and retriable as the target says.
    pub fn target(error: &orgsync_target::TargetError) -> SourceError {
        SourceError {
            class: error.class(),
            retriable: error.is_retriable(),
            retry_not_before: error.retry_not_before(),
            message: error.to_string(),
            sts_failure: None,
        }
    }
}

/// What [`Sources::open_target`] found at a run's start.
#[derive(Debug)]
pub enum TargetOpen {
    /// The target, open.
    Opened(Arc<dyn Target>),
    /// The target does not exist and was not to be created (an SQLite file that is absent).
    Missing,
}

/// Where a customer's data comes from and goes to.
#[async_trait]
pub trait Sources: Send + Sync + std::fmt::Debug + 'static {
    /// The customer with this CVR, or `None` when no customer file has it.
    fn customer(&self, cvr: &Cvr) -> Option<Customer>;

    /// Why the customer with this CVR cannot be used although a file names it (the file and
    /// its problems), when [`Sources::customer`] answers `None` for that reason.
    fn customer_problem(&self, cvr: &Cvr) -> Option<String> {
        let _ = cvr;
        None
    }

    /// Every configured customer's CVR (for error messages).
    fn customers(&self) -> Vec<Cvr>;

    /// Reads the whole municipality from STS (one token for the whole read).
    async fn read_snapshot(&self, cvr: &Cvr) -> Result<SourceRead, SourceError>;

    /// Reads as [`Sources::read_snapshot`], sending the read's progress to `progress` while it
    /// reads. The default reports nothing.
    async fn read_snapshot_with_progress(
        &self,
        cvr: &Cvr,
        progress: ProgressSender,
    ) -> Result<SourceRead, SourceError> {
        drop(progress);
        self.read_snapshot(cvr).await
    }

    /// Reads as [`Sources::read_snapshot_with_progress`], given the size of the customer's last
    /// trusted read (`None`: no trusted run yet), from which an STS read derives its bounds of
    /// calls and distinct objects. The default ignores it.
    async fn read_snapshot_expecting(
        &self,
        cvr: &Cvr,
        progress: ProgressSender,
        expected: Option<SourceCounts>,
    ) -> Result<SourceRead, SourceError> {
        let _ = expected;
        self.read_snapshot_with_progress(cvr, progress).await
    }

    /// Opens the customer's target as it exists: a target that would be created by opening it
    /// (an SQLite file that is absent) is an error, never created here.
    async fn target(&self, cvr: &Cvr) -> Result<Arc<dyn Target>, SourceError>;

    /// Opens the customer's target at a run's start: with `create`, a target that does not
    /// exist yet is created (a first run); without, [`TargetOpen::Missing`] says it is absent.
    /// The default opens it with [`Sources::target`].
    async fn open_target(&self, cvr: &Cvr, create: bool) -> Result<TargetOpen, SourceError> {
        let _ = create;
        self.target(cvr).await.map(TargetOpen::Opened)
    }

    /// The customer's target for people (`the SQLite file /var/lib/orgsync/x.sqlite`), named in
    /// errors about it.
    fn describe_target(&self, cvr: &Cvr) -> String {
        format!("the target of {cvr}")
    }

    /// What the target holds, for `plan`, which must not write anything: an implementation
    /// whose target would be created by opening it (an SQLite file that does not exist yet)
    /// answers with the empty state instead.
    async fn target_state(&self, cvr: &Cvr) -> Result<TargetState, SourceError> {
        let target = self.target(cvr).await?;
        target
            .read_state()
            .await
            .map_err(|e| SourceError::target(&e))
    }
}

#[cfg(test)]
mod tests {
    use orgsync_model::error_class::ErrorClass;
    use orgsync_queue::class;

    /// The queue's own classes reach the same reports, filters and tickets as the pipeline's,
    /// so each must be one of the documented classes, not `unclassified` by accident.
    #[test]
    fn every_class_the_queue_gives_is_a_documented_class() {
        for name in [
            class::UNDECODABLE,
            class::PANICKED,
            class::ABANDONED,
            class::ABORTED,
            class::UNCLASSIFIED,
        ] {
            let parsed: ErrorClass = name.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.as_str(), name);
        }
    }
}
