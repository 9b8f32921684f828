//! The pipeline's end of a run, as tickets see it: [`RunOutcome::of_report`] maps a run report
//! onto the ticket input, and [`Tickets`] is the pipeline's [`orgsync_jobs::RunObserver`], so
//! every run that ends (in any worker, or by a release) reaches the ticket logic once.

use async_trait::async_trait;
use orgsync_jobs::report::{RunReport, RunState};
use tracing::{info, warn};

use crate::outcome::{OutcomeKind, RunOutcome, StsIncident};
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
            sts: report.sts_failure.as_ref().map(|call| StsIncident {
                operation: call.operation.clone(),
                endpoint: Some(call.endpoint.clone()),
                first_call_at: Some(call.first_at),
                last_call_at: Some(call.last_at),
                fault: Some(call.answer.clone()),
                transaction_ids: call
                    .transaction_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            }),
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

#[cfg(test)]
mod tests {
    use orgsync_jobs::report::{FailedDepartment, RunReport, RunState, Trigger};
    use orgsync_model::error_class::ErrorClass;

    use super::*;

    fn report(state: RunState) -> RunReport {
        let mut r = RunReport::queued(
            "29189846-20261207T010000-s",
            "29189846",
            "Test Kommune",
            Trigger::Manual { by: "x".into() },
        );
        r.state = state;
        r
    }

    #[test]
    fn a_report_maps_onto_the_ticket_input_with_its_class_and_dead_letters() {
        assert!(RunOutcome::of_report(&report(RunState::Users)).is_none());
        let mut partly = report(RunState::PartlyFailed);
        partly.error_class = Some(ErrorClass::TargetAuth);
        partly.failed_departments.push(FailedDepartment {
            unit: uuid::Uuid::nil(),
            title: "Kantine".into(),
            job_id: "job-1".into(),
            error: "401".into(),
            error_class: Some(ErrorClass::TargetAuth),
            users: 2,
            recovered_at: None,
        });
        let outcome = RunOutcome::of_report(&partly).unwrap();
        assert_eq!(outcome.kind, OutcomeKind::PartlyFailed);
        assert_eq!(outcome.error_class.as_deref(), Some("target.auth"));
        assert_eq!(outcome.failed_jobs, ["job-1"]);
        assert!(outcome.message.as_deref().unwrap().contains("Kantine"));
        assert_eq!(outcome.ticket_class().as_deref(), Some("target.auth"));

        let mut failed = report(RunState::Failed);
        failed.error_class = Some(ErrorClass::StsAgreementMissing);
        failed.job_id = Some("job-9".into());
        failed.error = Some("no agreement".into());
        let outcome = RunOutcome::of_report(&failed).unwrap();
        assert_eq!(outcome.failed_jobs, ["job-9"]);
        assert_eq!(outcome.message.as_deref(), Some("no agreement"));

        // A failed read's STS call becomes the incident a KOMBIT text quotes.
        let mut sts_down = failed.clone();
        sts_down.error_class = Some(ErrorClass::StsUnavailable);
        sts_down.sts_failure = Some(Box::new(orgsync_model::error_class::FailedStsCall {
            operation: "organisationsystem fremsoegobjekthierarki".into(),
            endpoint: "https://organisation.eksterntest-stottesystemerne.dk/organisation/organisationsystem/6/".into(),
            first_at: chrono::DateTime::from_timestamp(1_796_000_000, 0).unwrap(),
            last_at: chrono::DateTime::from_timestamp(1_796_000_600, 0).unwrap(),
            transaction_ids: vec![uuid::Uuid::from_u128(7), uuid::Uuid::from_u128(8)],
            answer: "HTTP status 503".into(),
        }));
        let incident = RunOutcome::of_report(&sts_down).unwrap().sts.unwrap();
        assert_eq!(
            incident.operation,
            "organisationsystem fremsoegobjekthierarki"
        );
        assert_eq!(incident.fault.as_deref(), Some("HTTP status 503"));
        assert_eq!(
            incident.transaction_ids,
            [
                "00000000-0000-0000-0000-000000000007",
                "00000000-0000-0000-0000-000000000008"
            ]
        );
        assert!(incident.first_call_at < incident.last_call_at);

        let released = RunOutcome::of_report(&report(RunState::Released)).unwrap();
        assert_eq!(released.kind, OutcomeKind::Succeeded);
        assert_eq!(released.ticket_class(), None);
    }
}
