//! The pipeline's end of a run, as tickets see it: [`RunOutcome::of_report`] maps a run report
//! onto the ticket input, and [`Tickets`] is the pipeline's [`orgsync_jobs::RunObserver`], so
//! every run that ends (in any worker, or by a release) reaches the ticket logic once.

use async_trait::async_trait;
use orgsync_jobs::report::{RunReport, RunState};
use tracing::{info, warn};

use crate::outcome::{OutcomeKind, RunOutcome};
use crate::tickets::{TicketAction, Tickets};

impl RunOutcome {
    /// The ticket input of an ended run's report; `None` for a run that has not ended.
    pub fn of_report(report: &RunReport) -> Option<RunOutcome> {
        let kind = match report.state {
            RunState::Succeeded | RunState::Released => OutcomeKind::Succeeded,
            RunState::Failed => OutcomeKind::Failed,
            RunState::Held => OutcomeKind::Held,
            RunState::PartlyFailed => OutcomeKind::PartlyFailed,
            RunState::Refused => OutcomeKind::Refused,
            RunState::Queued
            | RunState::Reading
            | RunState::Departments
            | RunState::Users
            | RunState::Finishing => return None,
        };
        let message = match kind {
            OutcomeKind::Held => report.held.as_ref().map(|h| h.reason.clone()),
            _ => report.error.clone().or_else(|| {
                report
                    .failed_departments
                    .iter()
                    .find(|f| f.recovered_at.is_none())
                    .map(|f| format!("department {} failed: {}", f.title, f.error))
            }),
        };
        Some(RunOutcome {
            cvr: report.cvr.clone(),
            customer: report.customer.clone(),
            run_id: report.run_id.clone(),
            at: report.finished_at.unwrap_or_else(chrono::Utc::now),
            kind,
            error_class: report.error_class.map(|c| c.as_str().to_owned()),
            message,
            held_reasons: report
                .held
                .iter()
                .flat_map(|h| h.reasons.iter())
                .map(|r| {
                    serde_json::to_value(r)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect(),
            failed_jobs: report
                .failed_departments
                .iter()
                .filter(|f| f.recovered_at.is_none())
                .map(|f| f.job_id.clone())
                .chain(
                    (report.state == RunState::Failed)
                        .then(|| report.job_id.clone())
                        .flatten(),
                )
                .collect(),
            sts: None,
        })
    }
}

#[async_trait]
impl orgsync_jobs::RunObserver for Tickets {
    async fn run_ended(&self, report: &RunReport) {
        let Some(outcome) = RunOutcome::of_report(report) else {
            return;
        };
        match self.observe(&outcome).await {
            Ok(TicketAction::Nothing | TicketAction::AlreadySeen) => {}
            Ok(action) => info!(
                customer.cvr = %outcome.cvr, run.id = %outcome.run_id,
                "support ticket for run {}: {action:?}", outcome.run_id
            ),
            Err(error) => warn!(
                customer.cvr = %outcome.cvr, run.id = %outcome.run_id,
                "could not tell support about run {}: {error}", outcome.run_id
            ),
        }
    }
}
