//! The run report (docs/design.md §2 step 6): what one run of one customer did, kept for the
//! configured retention and shown by `orgsync runs`, `orgsync runs show` and `sync --wait`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use orgsync_model::error_class::{ErrorClass, FailedStsCall};
use orgsync_model::plan::{ActionCounts, Held, Summary};
use orgsync_model::validate::SourceCounts;
use orgsync_target::batch::{BatchReport, Rejection};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::sources::ReadProgress;
use crate::store::DepartmentResult;

fn written_users(result: &DepartmentResult) -> u64 {
    let a = &result.achieved;
    a.create + a.update + a.deactivate + a.reactivate
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Enqueued, not started.
    Queued,
    /// Reading STS and the target, validating, planning.
    Reading,
    /// Writing departments.
    Departments,
    /// Department jobs are writing users.
    Users,
    /// Applying deactivations and writing the report.
    Finishing,
    /// Everything written.
    Succeeded,
    /// Written, but the deactivations are held for a person (`orgsync runs release`).
    Held,
    /// A person released the held deactivations.
    Released,
    /// Written, except the users of department jobs that were dead-lettered (see
    /// `failed_departments`; replay them with `orgsync dlq replay`). Nothing was deactivated.
    PartlyFailed,
    /// The run failed before writing anything it could not verify (see `error`).
    Failed,
    /// Not started: another run of the same customer was active.
    Refused,
}

impl RunState {
    /// The stable key (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Reading => "reading",
            RunState::Departments => "departments",
            RunState::Users => "users",
            RunState::Finishing => "finishing",
            RunState::Succeeded => "succeeded",
            RunState::Held => "held",
            RunState::Released => "released",
            RunState::PartlyFailed => "partly_failed",
            RunState::Failed => "failed",
            RunState::Refused => "refused",
        }
    }

    /// Whether the run has ended (a replayed department job may still add to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::Held
                | RunState::Released
                | RunState::PartlyFailed
                | RunState::Failed
                | RunState::Refused
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    /// The customer's schedule fired at `fire`.
    Schedule {
        /// The fire time.
        fire: DateTime<Utc>,
    },
    /// A person or script (`orgsync sync`, `orgsync demo`).
    Manual {
        /// Who.
        by: String,
    },
}

/// Target writes of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writes {
    /// Items that changed the target.
    pub written: u64,
    /// Items already in place (nothing sent).
    pub unchanged: u64,
    /// Items the target rejected.
    pub rejected: u64,
}

impl Writes {
    /// Adds a batch's counts.
    pub fn add(&mut self, batch: &BatchReport) {
        self.written += batch.written;
        self.unchanged += batch.unchanged;
        self.rejected += batch.rejected.len() as u64;
    }
}

/// A rejected object, as kept in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedObject {
    /// External id (or user name).
    pub external_id: String,
    /// The target's status.
    pub status: Option<u16>,
    /// The whole message.
    pub message: String,
}

impl From<&Rejection> for RejectedObject {
    fn from(r: &Rejection) -> Self {
        RejectedObject {
            external_id: r.external_id.clone(),
            status: r.status,
            message: r.message.clone(),
        }
    }
}

/// A department job that did not complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedDepartment {
    /// The unit.
    pub unit: Uuid,
    /// Its title.
    pub title: String,
    /// The dead-lettered job (`orgsync dlq show <id>`, `orgsync dlq replay <id>`).
    pub job_id: String,
    /// Its last error.
    pub error: String,
    /// The class of its last error.
    #[serde(default)]
    pub error_class: Option<ErrorClass>,
    /// Users the department job was to write (what waits in the dead letter).
    #[serde(default)]
    pub users: u64,
    /// Set when a replay later completed it.
    #[serde(default)]
    pub recovered_at: Option<DateTime<Utc>>,
}

/// What a release did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Who released.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Deactivations written.
    pub applied: u64,
    /// Deactivations no longer needed, each with why (`user x: already inactive`).
    pub skipped: Vec<String>,
    /// Deactivations the target rejected, each with its message.
    #[serde(default)]
    pub rejected: Vec<String>,
    /// Held deactivations of objects the partial read may not have read that the person
    /// released too (`--include-unread`); 0 when there were none or they were refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unread_included: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line for what a person did (a release, a revert), then what was skipped and rejected.
#[allow(clippy::too_many_arguments)]
fn person_action(
    out: &mut String,
    label: &str,
    by: &str,
    at: DateTime<Utc>,
    applied: u64,
    applied_as: &str,
    skipped_as: &str,
    skipped: &[String],
    rejected: &[String],
) {
    let _ = writeln!(
        out,
        "{label}by {by} at {}: {applied} {applied_as}, {} {skipped_as}, {} rejected",
        at.to_rfc3339(),
        skipped.len(),
        rejected.len()
    );
    for s in skipped {
        let _ = writeln!(out, "  {s}");
    }
    for s in rejected {
        let _ = writeln!(out, "  REJECTED {s}");
    }
}

/// What a revert did (`orgsync runs revert`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revert {
    /// Who reverted.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Objects reactivated.
    pub applied: u64,
    /// Objects left alone, each with why (`user x: changed in the target since`).
    pub skipped: Vec<String>,
    /// Reactivations the target rejected.
    pub rejected: Vec<String>,
}

/// Run durations in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    /// STS read.
    pub read_ms: Option<u64>,
    /// Target state read and planning.
    pub plan_ms: Option<u64>,
    /// Department writes.
    pub departments_ms: Option<u64>,
    /// From the fan-out until the last department job was terminal.
    pub users_ms: Option<u64>,
    /// Deactivations and report.
    pub finish_ms: Option<u64>,
    /// Start to end.
    pub total_ms: Option<u64>,
}

/// What one run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run id.
    pub run_id: String,
    /// The municipality.
    pub cvr: String,
    /// Its name.
    pub customer: String,
    /// Why it ran.
    pub trigger: Trigger,
    /// Where it is.
    pub state: RunState,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When its first job started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Durations of its phases.
    pub durations: Durations,
    /// STS calls of the read.
    pub sts_calls: u64,
    /// How far the STS read has got: updated about once a second while the run reads (state
    /// `reading`), the final figure (`done`) once it has read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_progress: Option<ReadProgress>,
    /// What STS held (active units and users).
    pub source: Option<SourceCounts>,
    /// The plan's counts (created, updated, reactivated, deactivated, unchanged, skipped, held).
    pub summary: Option<Summary>,
    /// Skipped STS users by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Held deactivations (why, and what), when held.
    pub held: Option<Held>,
    /// When the department jobs were enqueued.
    pub fanned_out_at: Option<DateTime<Utc>>,
    /// Department jobs of the fan-out.
    pub departments_total: u64,
    /// Department jobs that completed.
    pub departments_done: u64,
    /// Department jobs that were dead-lettered.
    pub failed_departments: Vec<FailedDepartment>,
    /// Target writes (departments, users, deactivations).
    pub writes: Writes,
    /// Objects the target rejected (the first 100).
    pub rejections: Vec<RejectedObject>,
    /// Validation issues of the snapshot and problems the STS reader skipped.
    pub issues: Vec<String>,
    /// Why the run failed or was refused.
    pub error: Option<String>,
    /// The class of why it failed or was held (`sts.unavailable`, `guard.mass_deactivation`,
    /// ...), or of its failed department jobs when partly failed.
    #[serde(default)]
    pub error_class: Option<ErrorClass>,
    /// The STS call that failed for good, when the read failed on STS's side: operation,
    /// endpoint, times and the `TransactionUUID`s, merged over the run's attempts (what a
    /// ticket's text for KOMBIT's service desk quotes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_failure: Option<Box<FailedStsCall>>,
    /// What was written, as opposed to what was planned (`summary`).
    #[serde(default)]
    pub achieved: Achieved,
    /// The `SyncCustomer` job.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Things that happened after the fact (replays, superseded jobs), oldest first.
    pub notes: Vec<String>,
    /// The release, when a person released the held deactivations.
    pub release: Option<Release>,
    /// The revert, when a person reverted the run's deactivations.
    #[serde(default)]
    pub revert: Option<Revert>,
}

/// What a run achieved, as opposed to what it planned: the plan says "534 users created"; when
/// 58 of 59 department jobs died, `users.create` says how many were, `users_waiting` how many
/// wait in dead letters, and `users_recovered` how many replays wrote since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Achieved {
    /// Departments written, per action.
    pub departments: ActionCounts,
    /// Users written, per action (replays included).
    pub users: ActionCounts,
    /// Users written by replays of dead-lettered department jobs.
    pub users_recovered: u64,
}

impl Achieved {
    /// Adds a provisioning log's entries (what was written).
    pub(crate) fn add(&mut self, entries: &[crate::provisioning::ProvisioningEntry]) {
        use crate::provisioning::{LogAction, ObjectKind};
        for e in entries {
            let counts = match e.kind {
                ObjectKind::Department => &mut self.departments,
                ObjectKind::User => &mut self.users,
            };
            match e.action {
                LogAction::Create => counts.create += 1,
                LogAction::Update => counts.update += 1,
                LogAction::Deactivate => counts.deactivate += 1,
                LogAction::Reactivate => counts.reactivate += 1,
                LogAction::Skip | LogAction::Held | LogAction::Rejected => {}
            }
        }
    }

    /// Adds another count (a department job's).
    pub(crate) fn add_users(&mut self, users: &ActionCounts) {
        self.users.create += users.create;
        self.users.update += users.update;
        self.users.deactivate += users.deactivate;
        self.users.reactivate += users.reactivate;
    }
}

/// At most this many rejections are kept in a report.
const MAX_REJECTIONS: usize = 100;

/// A read's progress for people: `120 calls, 4,311 objects, about 35 calls left`.
pub fn progress_text(progress: &ReadProgress) -> String {
    let left = if progress.done {
        "done".to_owned()
    } else if progress.paging {
        format!("at least {} calls left", progress.remaining_estimate)
    } else {
        format!("about {} calls left", progress.remaining_estimate)
    };
    format!(
        "{} calls, {} objects, {left}",
        progress.calls, progress.objects
    )
}

impl RunReport {
    /// A new report for a run that was just enqueued.
    pub fn queued(run_id: &str, cvr: &str, customer: &str, trigger: Trigger) -> RunReport {
        RunReport {
            run_id: run_id.to_owned(),
            cvr: cvr.to_owned(),
            customer: customer.to_owned(),
            trigger,
            state: RunState::Queued,
            enqueued_at: Utc::now(),
            started_at: None,
            finished_at: None,
            durations: Durations::default(),
            sts_calls: 0,
            read_progress: None,
            source: None,
            summary: None,
            skipped: BTreeMap::new(),
            held: None,
            fanned_out_at: None,
            departments_total: 0,
            departments_done: 0,
            failed_departments: Vec::new(),
            writes: Writes::default(),
            rejections: Vec::new(),
            issues: Vec::new(),
            error: None,
            error_class: None,
            sts_failure: None,
            achieved: Achieved::default(),
            job_id: None,
            notes: Vec::new(),
            release: None,
            revert: None,
        }
    }

    /// Adds a batch's writes and rejections.
    pub(crate) fn add_writes(&mut self, batch: &BatchReport) {
        self.writes.add(batch);
        for r in &batch.rejected {
            self.add_rejection(r.into());
        }
    }

    /// Adds a department job's writes and rejections.
    pub(crate) fn add_department(&mut self, result: &DepartmentResult) {
        self.achieved.add_users(&result.achieved);
        self.writes.written += result.written;
        self.writes.unchanged += result.unchanged;
        self.writes.rejected += result.rejected.len() as u64;
        for r in &result.rejected {
            self.add_rejection(r.clone());
        }
    }

    fn add_rejection(&mut self, rejection: RejectedObject) {
        if self.rejections.len() < MAX_REJECTIONS {
            self.rejections.push(rejection);
        }
    }

    /// A department that failed in the run has been written since (a replay).
    pub(crate) fn mark_recovered(&mut self, unit: Uuid, result: &DepartmentResult) {
        let Some(failed) = self
            .failed_departments
            .iter_mut()
            .find(|f| f.unit == unit && f.recovered_at.is_none())
        else {
            return;
        };
        failed.recovered_at = Some(Utc::now());
        self.achieved.users_recovered += written_users(result);
        self.add_department(result);
        self.departments_done += 1;
        if self.state == RunState::PartlyFailed
            && self
                .failed_departments
                .iter()
                .all(|f| f.recovered_at.is_some())
        {
            self.state = RunState::Succeeded;
            self.error_class = None;
        }
    }

    /// Users that wait in dead-lettered department jobs (not recovered yet).
    pub fn users_waiting(&self) -> u64 {
        self.failed_departments
            .iter()
            .filter(|f| f.recovered_at.is_none())
            .map(|f| f.users)
            .sum()
    }

    /// A note with the time.
    pub(crate) fn note(&mut self, text: impl AsRef<str>) {
        self.notes.push(format!(
            "{}: {}",
            Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
            text.as_ref()
        ));
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// One line for `orgsync runs`.
    pub fn line(&self) -> String {
        let summary = self.summary.map_or_else(String::new, |s| {
            format!(
                "users +{} ~{} -{} | departments +{} ~{} -{}",
                s.users.create,
                s.users.update + s.users.reactivate,
                s.users.deactivate,
                s.departments.create,
                s.departments.update + s.departments.reactivate,
                s.departments.deactivate
            )
        });
        format!(
            "{:<34} {:<8} {:<10} {:<20} {}",
            self.run_id,
            self.cvr,
            self.state.as_str(),
            self.enqueued_at.format("%Y-%m-%d %H:%M:%S"),
            summary
        )
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "run {} ({} {})", self.run_id, self.cvr, self.customer);
        let _ = writeln!(out, "state:        {}", self.state);
        if let Some(error) = &self.error {
            let _ = writeln!(out, "why:          {error}");
        }
        if let Some(class) = self.error_class {
            let _ = writeln!(
                out,
                "error class:  {class} ({} scope): {}",
                class.scope().as_str(),
                class.action()
            );
        }
        if let Some(call) = &self.sts_failure {
            let _ = writeln!(
                out,
                "STS call:     {} at {} failed from {} to {}: {}",
                call.operation,
                call.endpoint,
                call.first_at.to_rfc3339(),
                call.last_at.to_rfc3339(),
                call.answer
            );
            let ids: Vec<String> = call
                .transaction_ids
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = writeln!(out, "transactions: {}", ids.join(", "));
        }
        let trigger = match &self.trigger {
            Trigger::Schedule { fire } => format!("schedule (fire {})", fire.to_rfc3339()),
            Trigger::Manual { by } => format!("manual, by {by}"),
        };
        let _ = writeln!(out, "trigger:      {trigger}");
        let _ = writeln!(out, "enqueued:     {}", self.enqueued_at.to_rfc3339());
        if let Some(at) = self.started_at {
            let _ = writeln!(out, "started:      {}", at.to_rfc3339());
        }
        if let Some(at) = self.finished_at {
            let _ = writeln!(out, "finished:     {}", at.to_rfc3339());
        }
        let d = &self.durations;
        let ms =
            |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{:.1} s", v as f64 / 1000.0));
        let _ = writeln!(
            out,
            "durations:    read {}, plan {}, departments {}, users {}, finish {}, total {}",
            ms(d.read_ms),
            ms(d.plan_ms),
            ms(d.departments_ms),
            ms(d.users_ms),
            ms(d.finish_ms),
            ms(d.total_ms)
        );
        if let Some(progress) = self.read_progress.filter(|p| !p.done) {
            let _ = writeln!(out, "reading:      {}", progress_text(&progress));
        }
        if let Some(source) = self.source {
            let _ = writeln!(
                out,
                "STS:          {} active units, {} active users, {} calls",
                source.units, source.users, self.sts_calls
            );
        }
        if let Some(s) = &self.summary {
            let _ = writeln!(
                out,
                "departments:  {} created, {} updated, {} reactivated, {} deactivated, {} unchanged",
                s.departments.create,
                s.departments.update,
                s.departments.reactivate,
                s.departments.deactivate,
                s.departments.unchanged
            );
            let _ = writeln!(
                out,
                "users:        {} created, {} updated, {} reactivated, {} deactivated, {} unchanged, {} kept (outside the domains)",
                s.users.create,
                s.users.update,
                s.users.reactivate,
                s.users.deactivate,
                s.users.unchanged,
                s.kept_outside_domains
            );
        }
        if self.summary.is_some() && self.fanned_out_at.is_some() {
            let a = &self.achieved;
            let _ = writeln!(
                out,
                "achieved:     departments {} created, {} updated, {} reactivated, {} deactivated; users {} created, {} updated, {} reactivated, {} deactivated",
                a.departments.create,
                a.departments.update,
                a.departments.reactivate,
                a.departments.deactivate,
                a.users.create,
                a.users.update,
                a.users.reactivate,
                a.users.deactivate
            );
            let waiting = self.users_waiting();
            if waiting > 0 || a.users_recovered > 0 {
                let _ = writeln!(
                    out,
                    "              {waiting} users wait in dead-lettered department jobs; {} written by replays since",
                    a.users_recovered
                );
            }
        }
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "skipped:      {}", parts.join(", "));
        }
        let _ = writeln!(
            out,
            "target:       {} written, {} already in place, {} rejected",
            self.writes.written, self.writes.unchanged, self.writes.rejected
        );
        let _ = writeln!(
            out,
            "department jobs: {} of {} done, {} failed",
            self.departments_done,
            self.departments_total,
            self.failed_departments.len()
        );
        for f in &self.failed_departments {
            let status = f.recovered_at.map_or_else(
                || "FAILED".to_owned(),
                |at| format!("recovered {}", at.to_rfc3339()),
            );
            let class = f.error_class.map(|c| format!(" [{c}]")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {status}: {} ({}) job {}, {} users{class}: {}",
                f.title, f.unit, f.job_id, f.users, f.error
            );
        }
        if let Some(held) = &self.held {
            let label = if self.state == RunState::Released {
                "was held:    "
            } else {
                "HELD:        "
            };
            let _ = writeln!(
                out,
                "{label} {} deactivations ({} departments, {} users): {}",
                held.deactivations,
                held.departments.len(),
                held.users.len(),
                held.reason
            );
            if !held.unread.is_empty() {
                let _ = writeln!(
                    out,
                    "              {} of them UNREAD, not absent: the partial read may have missed them (release needs --include-unread)",
                    held.unread.len()
                );
            }
            const SHOWN: usize = 50;
            let mark = |unread: bool| if unread { " [unread]" } else { "" };
            for d in held.departments.iter().take(SHOWN) {
                let _ = writeln!(
                    out,
                    "  deactivate department {} ({}){}",
                    d.fields.title,
                    d.external_id,
                    mark(held.is_unread_department(d))
                );
            }
            for u in held.users.iter().take(SHOWN) {
                let _ = writeln!(
                    out,
                    "  deactivate user {} ({} {}){}",
                    u.fields.user_name,
                    u.fields.first_name.as_deref().unwrap_or(""),
                    u.fields.last_name.as_deref().unwrap_or(""),
                    mark(held.is_unread_user(u))
                );
            }
            let more = held.departments.len().saturating_sub(SHOWN)
                + held.users.len().saturating_sub(SHOWN);
            if more > 0 {
                let _ = writeln!(
                    out,
                    "  and {more} more (`orgsync runs show {} --format json` lists all)",
                    self.run_id
                );
            }
            if self.state == RunState::Held {
                let _ = writeln!(
                    out,
                    "              check them, then: orgsync runs release {}{}",
                    self.run_id,
                    if held.unread.is_empty() {
                        ""
                    } else {
                        " (a new run reads the unread ones again; --include-unread deactivates them)"
                    }
                );
            }
        }
        if let Some(r) = &self.release {
            person_action(
                &mut out,
                "released:     ",
                &r.by,
                r.at,
                r.applied,
                "applied",
                "no longer needed",
                &r.skipped,
                &r.rejected,
            );
        }
        if let Some(r) = &self.revert {
            person_action(
                &mut out,
                "reverted:     ",
                &r.by,
                r.at,
                r.applied,
                "reactivated",
                "skipped",
                &r.skipped,
                &r.rejected,
            );
        }
        for r in &self.rejections {
            let _ = writeln!(out, "rejected:     {}: {}", r.external_id, r.message);
        }
        for issue in &self.issues {
            let _ = writeln!(out, "issue:        {issue}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note:         {note}");
        }
        out
    }
}
