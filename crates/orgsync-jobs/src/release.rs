//! What a person does to a run after the fact: `orgsync runs release <run-id>` applies a held
//! run's deactivations, `orgsync runs revert <run-id>` reactivates what a run deactivated; both
//! re-check every object against the target as it is now, hold the customer's lock while they
//! write, and are recorded in the report and the provisioning log with who and when.

use chrono::Utc;
use orgsync_model::ids::{Cvr, UserId};
use orgsync_model::plan::{
    Action, DepartmentFields, DepartmentItem, HoldReason, UserFields, UserItem,
};
use orgsync_queue::LockAttempt;
use orgsync_target::batch::{BatchReport, write_departments, write_users};
use orgsync_target::user_label;
use tracing::info;
use uuid::Uuid;

use crate::pipeline::{Pipeline, PipelineError};
use crate::provisioning::{self, LogAction, LogFilter, ObjectKind};
use crate::report::{Release, Revert, RunReport, RunState};
use crate::sources::SourceError;

/// Runs `work` holding the customer's run lock under a fresh owner `<what>:<run>:<random>`
/// (extended while it works, released after): no run and no other person's action meanwhile.
async fn with_customer_lock<T>(
    pipeline: &Pipeline,
    cvr: &str,
    what: &str,
    run_id: &str,
    work: impl std::future::Future<Output = Result<T, PipelineError>>,
) -> Result<T, PipelineError> {
    let store = pipeline.store();
    let owner = format!("{what}:{run_id}:{}", Uuid::new_v4().simple());
    match store.try_lock(cvr, &owner, pipeline.lock_ttl()).await? {
        LockAttempt::Acquired => {}
        LockAttempt::Held { owner: active, .. } => {
            return Err(PipelineError::State(format!(
                "{active} holds {cvr}; {what} {run_id} after it has ended"
            )));
        }
    }
    let heartbeat = pipeline.heartbeat(cvr, &owner);
    let result = work.await;
    drop(heartbeat);
    let _ = store.release_lock(cvr, &owner).await;
    result
}

/// Applies the held deactivations of `run_id` that still apply; records who did it and when.
///
/// Refused when the run is not held, when a newer run of the customer has started (its plan
/// decides), while another run of the customer is active, or when some held deactivations are
/// of objects a partial read may not have read (see [`release_with`]).
pub async fn release(
    pipeline: &Pipeline,
    run_id: &str,
    by: &str,
) -> Result<RunReport, PipelineError> {
    release_with(pipeline, run_id, by, ReleaseOptions::default()).await
}

/// How a person releases a held run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseOptions {
    /// Also deactivate objects the run's partial read may simply not have read (marked unread
    /// in the held list); without it a release of a run holding any is refused.
    pub include_unread: bool,
}

/// [`release`], with `options`.
pub async fn release_with(
    pipeline: &Pipeline,
    run_id: &str,
    by: &str,
    options: ReleaseOptions,
) -> Result<RunReport, PipelineError> {
    let cvr = pipeline.report(run_id).await?.cvr;
    // Boxed: the locked release holds reports across awaits, too large a future to embed in
    // every caller's (a web handler's, the CLI's).
    Box::pin(with_customer_lock(
        pipeline,
        &cvr,
        "release",
        run_id,
        release_locked(pipeline, run_id, by, options),
    ))
    .await
}

/// `orgsync runs accept-empty <cvr>`: a person confirms that the customer's target starts
/// empty (a new HR system, a database deliberately thrown away). It forgets the last trusted
/// run's counts, so the next run is a first run: it creates a missing SQLite file and fills an
/// empty target instead of failing with `guard.target_lost`. Refused while a run of the
/// customer is active. Returns the counts it forgot (`None` when there were none).
pub async fn accept_empty(
    pipeline: &Pipeline,
    cvr: &str,
    by: &str,
) -> Result<Option<orgsync_model::validate::SourceCounts>, PipelineError> {
    let customer = pipeline.customer(cvr)?;
    let cvr = customer.cvr.as_str();
    with_customer_lock(pipeline, cvr, "accept-empty", cvr, async {
        let store = pipeline.store();
        let previous = store.last_counts(cvr).await?;
        store.clear_last_counts(cvr).await?;
        info!(customer.cvr = %cvr, "{by} accepted an empty target for {cvr}: the baseline ({previous:?}) is forgotten, the next run is a first run");
        Ok(previous)
    })
    .await
}

async fn release_locked(
    pipeline: &Pipeline,
    run_id: &str,
    by: &str,
    options: ReleaseOptions,
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
    if !held.unread.is_empty() && !options.include_unread {
        return Err(PipelineError::UnreadHeld {
            run_id: run_id.to_owned(),
            users: held.unread.users.len(),
            departments: held.unread.departments.len(),
        });
    }
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
                "released by {} ({} applied, {} no longer needed{})",
                release.by,
                release.applied,
                release.skipped.len(),
                if release.unread_included > 0 {
                    format!(
                        "; {} unread objects included by --include-unread",
                        release.unread_included
                    )
                } else {
                    String::new()
                }
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
    let mut entries =
        provisioning::user_writes(&report.run_id, &report.cvr, &users, &written_users);
    entries.extend(provisioning::department_writes(
        &report.run_id,
        &report.cvr,
        &departments,
        &written_departments,
    ));
    for e in &mut entries {
        e.reason = Some(format!("held deactivation released by {by}"));
    }
    pipeline
        .provisioning()
        .append(&report.cvr, &entries)
        .await?;
    let release = Release {
        by: by.to_owned(),
        at: Utc::now(),
        applied: written_users.written + written_departments.written,
        skipped,
        rejected,
        unread_included: held.unread.len() as u64,
    };
    Ok((release, vec![written_users, written_departments]))
}

/// Reactivates what run `run_id` deactivated (by its own `FinishRun` or by a release), each
/// object re-checked against the target as it is now: one that is gone, already active, now
/// another source's, changed in the target since (user name, e-mail or name differ from what was
/// deactivated), or touched by a later run is skipped and listed. Recorded in the report and the
/// provisioning log with who and when. The way back from a bad night without waiting for STS;
/// the next run decides again from STS (a person still absent there is deactivated again unless
/// the guards hold it).
pub async fn revert(
    pipeline: &Pipeline,
    run_id: &str,
    by: &str,
) -> Result<RunReport, PipelineError> {
    let report = pipeline.report(run_id).await?;
    if !report.state.is_final() {
        return Err(PipelineError::State(format!(
            "run {run_id} is {}: revert it after it has ended",
            report.state
        )));
    }
    let cvr = report.cvr.clone();
    with_customer_lock(
        pipeline,
        &cvr,
        "revert",
        run_id,
        Box::pin(revert_locked(pipeline, report, by)),
    )
    .await
}

async fn revert_locked(
    pipeline: &Pipeline,
    report: RunReport,
    by: &str,
) -> Result<RunReport, PipelineError> {
    let run_id = report.run_id.as_str();
    let log = pipeline.provisioning();
    let filter = LogFilter {
        actions: vec![LogAction::Deactivate],
        run_id: Some(run_id.to_owned()),
        since: Some(report.enqueued_at),
        ..LogFilter::default()
    };
    let mut deactivated = Vec::new();
    let mut cursor = None;
    loop {
        let page_filter = LogFilter {
            before: cursor,
            ..filter.clone()
        };
        let (page, next) = log.search(&report.cvr, &page_filter, 1000).await?;
        deactivated.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let cvr = Cvr::parse(&report.cvr).map_err(|_| PipelineError::InvalidCvr(report.cvr.clone()))?;
    let target = pipeline.sources().target(&cvr).await?;
    let mut skipped = Vec::new();
    let mut users = Vec::new();
    let mut departments = Vec::new();
    for entry in &deactivated {
        let label = entry
            .user_name
            .clone()
            .or_else(|| entry.name.clone())
            .unwrap_or_default();
        let label = format!(
            "{} {label} ({})",
            match entry.kind {
                ObjectKind::User => "user",
                ObjectKind::Department => "department",
            },
            entry.uuid.map(|u| u.to_string()).unwrap_or_default()
        );
        // Touched by a later run (or a later person) since? Then that decides.
        let newest = log.history(&report.cvr, &entry.object(), 1).await?;
        if let Some(newer) = newest
            .first()
            .filter(|n| n.run_id != entry.run_id || n.action != LogAction::Deactivate)
        {
            skipped.push(format!(
                "{label}: {} by run {} since",
                newer.action.as_str(),
                newer.run_id
            ));
            continue;
        }
        match entry.kind {
            ObjectKind::User => {
                let user_name = entry.user_name.clone().unwrap_or_default();
                let found = target
                    .find_user(UserId(entry.uuid.unwrap_or(Uuid::nil())), &user_name)
                    .await
                    .map_err(|e| SourceError::target(&e))?;
                match found {
                    None => skipped.push(format!("{label}: no longer in the target")),
                    Some(u) if u.active => skipped.push(format!("{label}: already active")),
                    Some(u) if u.external_id.map(|id| id.0) != entry.uuid => {
                        skipped.push(format!("{label}: now carries another external id"))
                    }
                    Some(u)
                        if !u.user_name.eq_ignore_ascii_case(&user_name)
                            || u.email != entry.email
                            || full_name(&u) != entry.name =>
                    {
                        skipped.push(format!("{label}: changed in the target since"));
                    }
                    Some(u) => users.push(reactivation_of_user(u)),
                }
            }
            ObjectKind::Department => {
                let Some(uuid) = entry.uuid else { continue };
                let found = target
                    .find_department(orgsync_model::ids::UnitId(uuid))
                    .await
                    .map_err(|e| SourceError::target(&e))?;
                match found {
                    None => skipped.push(format!("{label}: no longer in the target")),
                    Some(d) if d.active => skipped.push(format!("{label}: already active")),
                    Some(d) if Some(&d.title) != entry.name.as_ref() => {
                        skipped.push(format!("{label}: changed in the target since"));
                    }
                    Some(d) => departments.push(reactivation_of_department(uuid, d)),
                }
            }
        }
    }
    let concurrency = crate::pipeline::concurrency(target.as_ref());
    // Departments first (parents before children), so users' memberships point at active ones.
    let written_departments = write_departments(target.as_ref(), &departments, concurrency)
        .await
        .map_err(|e| SourceError::target(&e))?;
    let written_users = write_users(target.as_ref(), &users, concurrency)
        .await
        .map_err(|e| SourceError::target(&e))?;
    let mut entries =
        provisioning::department_writes(run_id, &report.cvr, &departments, &written_departments);
    entries.extend(provisioning::user_writes(
        run_id,
        &report.cvr,
        &users,
        &written_users,
    ));
    for e in &mut entries {
        e.reason = Some(format!("revert of run {run_id} by {by}"));
    }
    pipeline
        .provisioning()
        .append(&report.cvr, &entries)
        .await?;
    let revert = Revert {
        by: by.to_owned(),
        at: Utc::now(),
        applied: written_users.written + written_departments.written,
        skipped,
        rejected: written_users
            .rejected
            .iter()
            .chain(&written_departments.rejected)
            .map(|r| format!("{}: {}", r.external_id, r.message))
            .collect(),
    };
    info!(
        customer.cvr = %report.cvr, run.id = %run_id,
        "run {run_id} reverted by {by}: {} reactivated, {} skipped",
        revert.applied, revert.skipped.len()
    );
    let updated = pipeline
        .store()
        .update_report(run_id, |r| {
            r.add_writes(&written_users);
            r.add_writes(&written_departments);
            r.note(format!(
                "reverted by {} ({} reactivated, {} skipped, {} rejected)",
                revert.by,
                revert.applied,
                revert.skipped.len(),
                revert.rejected.len()
            ));
            r.revert = Some(revert.clone());
        })
        .await?;
    updated.ok_or_else(|| PipelineError::State(format!("the report of run {run_id} disappeared")))
}

fn full_name(user: &orgsync_model::target::TargetUser) -> Option<String> {
    let name = [&user.first_name, &user.last_name]
        .into_iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    (!name.is_empty()).then_some(name)
}

/// A reactivation that changes nothing but `active`: the target's current values.
fn reactivation_of_user(user: orgsync_model::target::TargetUser) -> UserItem {
    UserItem {
        action: Action::Reactivate,
        external_id: user.external_id,
        fields: UserFields {
            user_name: user.user_name,
            email: user.email,
            first_name: user.first_name,
            last_name: user.last_name,
            memberships: user.memberships.into_iter().collect(),
            primary_department: user.primary_department,
            title: user.title,
            phone: user.phone,
            manager: user.manager,
        },
        defaults: None,
        changes: Some(active_change()),
    }
}

fn reactivation_of_department(
    uuid: Uuid,
    department: orgsync_model::target::TargetDepartment,
) -> DepartmentItem {
    DepartmentItem {
        action: Action::Reactivate,
        external_id: orgsync_model::ids::UnitId(uuid),
        fields: DepartmentFields {
            title: department.title,
            custom_id: department.custom_id,
            parent: department.parent,
            manager: department.manager,
            contact: department.contact,
        },
        changes: Some(active_change()),
    }
}

fn active_change() -> orgsync_model::plan::Changes {
    [(
        "active".to_owned(),
        (
            serde_json::Value::Bool(false),
            serde_json::Value::Bool(true),
        ),
    )]
    .into_iter()
    .collect()
}
