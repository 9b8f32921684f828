//! `RunOutcome`: what the ticket logic needs to know about a run that ended. The pipeline's
//! report is mapped onto it by the caller, so this crate does not depend on the pipeline.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How a run ended, as far as tickets are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Everything written: a good run (counts towards recovery).
    Succeeded,
    /// The read or validation failed; nothing was written.
    Failed,
    /// Deactivations wait for `orgsync runs release`: opens a ticket at once.
    Held,
    /// Department jobs were dead-lettered.
    PartlyFailed,
    /// Another run of the customer was active. Neither good nor bad unless it carries a class.
    Refused,
}

/// The STS side of a failure, for the text a supplier sends to KOMBIT's service desk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StsIncident {
    /// The operation called, e.g. `OrganisationEnhed/fremsoeg`.
    pub operation: String,
    /// The service endpoint called (no credentials).
    pub endpoint: Option<String>,
    /// When the failing calls were made (first and last).
    pub first_call_at: Option<DateTime<Utc>>,
    /// The last failing call.
    pub last_call_at: Option<DateTime<Utc>>,
    /// The SOAP fault or HTTP answer as STS gave it.
    pub fault: Option<String>,
    /// The transaction UUIDs (`TransaktionsID`) of the failing calls.
    pub transaction_ids: Vec<String>,
}

/// A run that ended: the input of [`crate::Tickets::observe`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The municipality's CVR number.
    pub cvr: String,
    /// The municipality's name.
    pub customer: String,
    /// The run id.
    pub run_id: String,
    /// When the run ended.
    pub at: DateTime<Utc>,
    /// How it ended.
    pub kind: OutcomeKind,
    /// The run's error class, dotted (`sts.unavailable`, `guard.mass_deactivation`, ...).
    pub error_class: Option<String>,
    /// What went wrong, in a sentence (scrubbed before it goes anywhere).
    pub message: Option<String>,
    /// Why deactivations were held (`source_drop`, `over_count`, ...).
    pub held_reasons: Vec<String>,
    /// Dead-letter job ids of the run's failed jobs.
    pub failed_jobs: Vec<String>,
    /// The STS side of the failure, when STS failed.
    pub sts: Option<StsIncident>,
}

impl RunOutcome {
    /// The class this outcome is filed under, or `None` for a good or neutral run. An outcome
    /// without a class gets one from its kind (`run.held`, `run.failed`, `run.partly_failed`).
    pub fn ticket_class(&self) -> Option<String> {
        if let Some(class) = self.error_class.as_deref().filter(|c| !c.is_empty()) {
            if self.kind == OutcomeKind::Succeeded {
                return None;
            }
            return Some(class.to_owned());
        }
        match self.kind {
            OutcomeKind::Succeeded | OutcomeKind::Refused => None,
            OutcomeKind::Held => Some("run.held".to_owned()),
            OutcomeKind::Failed => Some("run.failed".to_owned()),
            OutcomeKind::PartlyFailed => Some("run.partly_failed".to_owned()),
        }
    }
}
