//! `orgsync runs release <run-id>`: a person applies a held run's deactivations, each re-checked
//! against the target as it is now.

use chrono::Utc;
use orgsync_model::ids::{Cvr, UserId};
use orgsync_model::plan::HoldReason;
use orgsync_queue::LockAttempt;
use orgsync_target::batch::{BatchReport, write_departments, write_users};
use orgsync_target::user_label;
use tracing::info;
use uuid::Uuid;

use crate::pipeline::{Pipeline, PipelineError};
use crate::report::{Release, RunReport, RunState};
use crate::sources::SourceError;

/// Applies the held deactivations of `run_id` that still apply; records who did it and when.
///
/// Refused when the run is not held, when a newer run of the customer has started (its plan
/// decides), or while another run of the customer is active.
pub async fn release(
    pipeline: &Pipeline,
    run_id: &str,
    by: &str,
) -> Result<RunReport, PipelineError> {
    let store = pipeline.store();
    let cvr = pipeline.report(run_id).await?.cvr;
    // The customer's lock, as this one release: no run and no other release meanwhile.
    let owner = format!("release:{run_id}:{}", Uuid::new_v4().simple());
    match store.try_lock(&cvr, &owner, pipeline.lock_ttl()).await? {
        LockAttempt::Acquired => {}
        LockAttempt::Held { owner: active, .. } => {
            return Err(PipelineError::State(format!(
                "{active} holds {cvr}; release {run_id} after it has ended"
            )));
        }
    }
    let heartbeat = pipeline.heartbeat(&cvr, &owner);
    let result = release_locked(pipeline, run_id, by).await;
    drop(heartbeat);
    let _ = store.release_lock(&cvr, &owner).await;
    result
}

async fn release_locked(
    pipeline: &Pipeline,
    run_id: &str,
    by: &str,
) -> Result<RunReport, PipelineError> {
    let store = pipeline.store();
    // Checked under the lock, so two releases cannot both pass.
    let report = pipeline.report(run_id).await?;
    let Some(held) = report
        .held
        .clone()
        .filter(|_| report.state == RunState::Held)
    else {
        return Err(PipelineError::State(format!(
            "run {run_id} is {}, not held: there is nothing to release",
            report.state
        )));
    };
    let cvr = report.cvr.clone();
    if let Some(current) = store.current_run(&cvr).await? {
        if current != run_id {
            return Err(PipelineError::State(format!(
                "run {run_id} was superseded by run {current} of {cvr}: the newer run's plan decides (`orgsync runs show {current}`; release that one if it is held)"
            )));
        }
    }
    let (release, writes) = apply(pipeline, &report, &held, by).await?;
    if held.reasons.contains(&HoldReason::SourceDrop) {
        // The person accepted the smaller organisation: it is the next run's baseline.
        if let Some(source) = &report.source {
            store.set_last_counts(&cvr, source).await?;
        }
    }
    info!(
        customer.cvr = %cvr, run.id = %run_id,
        "run {run_id} released by {by}: {} deactivations applied, {} no longer needed",
        release.applied, release.skipped.len()
    );
    let updated = store
        .update_report(run_id, |r| {
            for w in &writes {
                r.add_writes(w);
            }
            r.note(format!(
                "released by {} ({} applied, {} no longer needed)",
                release.by,
                release.applied,
                release.skipped.len()
            ));
            r.release = Some(release.clone());
            r.state = RunState::Released;
        })
        .await?;
    updated.ok_or_else(|| PipelineError::State(format!("the report of run {run_id} disappeared")))
}

async fn apply(
    pipeline: &Pipeline,
    report: &RunReport,
    held: &orgsync_model::plan::Held,
    by: &str,
) -> Result<(Release, Vec<BatchReport>), PipelineError> {
    let cvr = Cvr::parse(&report.cvr).map_err(|_| PipelineError::InvalidCvr(report.cvr.clone()))?;
    let target = pipeline.sources().target(&cvr).await?;
    let mut skipped = Vec::new();
    let mut users = Vec::new();
    for item in &held.users {
        let label = user_label(item);
        let found = target
            .find_user(
                item.external_id.unwrap_or(UserId(Uuid::nil())),
                &item.fields.user_name,
            )
            .await
            .map_err(|e| SourceError::target(&e))?;
        match found {
            None => skipped.push(format!("{label}: no longer in the target")),
            Some(u) if !u.active => skipped.push(format!("{label}: already inactive")),
            Some(u) if u.external_id != item.external_id => skipped.push(format!(
                "{label}: now carries another external id ({})",
                u.external_id.map(|id| id.to_string()).unwrap_or_default()
            )),
            Some(_) => users.push(item.clone()),
        }
    }
    let mut departments = Vec::new();
    for item in &held.departments {
        let found = target
            .find_department(item.external_id)
            .await
            .map_err(|e| SourceError::target(&e))?;
        match found {
            None => skipped.push(format!(
                "department {} ({}): no longer in the target",
                item.fields.title, item.external_id
            )),
            Some(d) if !d.active => skipped.push(format!(
                "department {} ({}): already inactive",
                item.fields.title, item.external_id
            )),
            Some(_) => departments.push(item.clone()),
        }
    }
    let concurrency = crate::pipeline::concurrency(target.as_ref());
    let written_users = write_users(target.as_ref(), &users, concurrency)
        .await
        .map_err(|e| SourceError::target(&e))?;
    let written_departments = write_departments(target.as_ref(), &departments, concurrency)
        .await
        .map_err(|e| SourceError::target(&e))?;
    let rejected = written_users
        .rejected
        .iter()
        .chain(&written_departments.rejected)
        .map(|r| format!("{}: {}", r.external_id, r.message))
        .collect();
    let release = Release {
        by: by.to_owned(),
        at: Utc::now(),
        applied: written_users.written + written_departments.written,
        skipped,
        rejected,
    };
    Ok((release, vec![written_users, written_departments]))
}
