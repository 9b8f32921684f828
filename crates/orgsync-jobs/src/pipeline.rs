//! The pipeline's handlers and the operations the CLI shares with them: enqueue a run, plan
//! (dry run), read reports and progress.
//!
//! One run of one customer:
//! - `SyncCustomer` takes the customer's run lock, reads STS, validates, reads the target, plans
//!   once, writes the departments (and the user renames, so a freed user name is free before any
//!   department job creates a user with it), stores each department's slice of the plan and the
//!   deactivations under the run, and enqueues one `SyncDepartment` per department with user
//!   changes as a queue *batch* whose completion job is `FinishRun`.
//! - `SyncDepartment` writes its slice (upserts that compare before writing).
//! - The queue enqueues `FinishRun` atomically when the last child is terminal (succeeded or
//!   dead): it applies the deactivations unless the plan's guards or a failed child hold them,
//!   writes the report and releases the lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use orgsync_model::error_class::ErrorClass;
use orgsync_model::ids::{Cvr, UnitId};
use orgsync_model::plan::{Action, HoldReason, Plan, UserItem};
use orgsync_model::validate::{SourceCounts, validate};
use orgsync_queue::{
    BatchStatus, DeathNotice, Job, JobContext, JobError, JobId, JobState, LockAttempt, NewBatch,
    NewJob, QueueError, QueueHandle,
};
use orgsync_target::Target;
use orgsync_target::batch::{write_departments, write_users};
use tracing::{info, warn};
use uuid::Uuid;

use crate::provisioning::{self, LogAction, ProvisioningEntry, ProvisioningLog};
use crate::report::{FailedDepartment, RunReport, RunState, Trigger};
use crate::sources::{Customer, ReadProgress, SourceError, SourceRead, Sources, TargetOpen};
use crate::store::{DepartmentResult, FinishData, Store};
use crate::{FinishRun, SyncCustomer, SyncDepartment};

/// How runs behave.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// How long run reports are kept (default 90 days).
    pub report_retention: Duration,
    /// How long a run's plan slices and results are kept for its department jobs and replays
    /// (default 7 days). A department job replayed later does nothing and says so.
    pub data_ttl: Duration,
    /// The customer's run lock expires this long after a job of the run last extended it
    /// (default 1 hour, longer than the longest department retry delay); a running job
    /// extends it every third of this.
    pub lock_ttl: Duration,
    /// While a run reads STS, its report's `read_progress` is updated at most this often
    /// (default 1 s).
    pub progress_interval: Duration,
    /// A replayed department job that finds the customer busy (a new run, a `FinishRun` or a
    /// release holds it) snoozes this long, or until the holder's lock expires if sooner, and
    /// tries again without spending an attempt (default 15 s; the worker's `max_snooze`
    /// bounds the total).
    pub busy_snooze: Duration,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            report_retention: Duration::from_secs(90 * 24 * 3600),
            data_ttl: Duration::from_secs(7 * 24 * 3600),
            lock_ttl: Duration::from_secs(60 * 60),
            progress_interval: Duration::from_secs(1),
            busy_snooze: Duration::from_secs(15),
        }
    }
}

/// Why a pipeline operation (not a job) failed, for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Redis.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// STS or the target.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Not a CVR number.
    #[error("{0:?} is not a CVR number (8 digits)")]
    InvalidCvr(String),
    /// No customer file has this CVR.
    #[error(
        "no customer has CVR {cvr} (configured: {known}); add a file under customers/ in the configuration directory (see `orgsync config check`)"
    )]
    UnknownCustomer {
        /// The CVR asked for.
        cvr: String,
        /// The configured CVRs, for the message.
        known: String,
    },
    /// The snapshot was refused.
    #[error("{0}")]
    InvalidSnapshot(String),
    /// No report for this run id (never existed or past its retention).
    #[error(
        "no run {run_id} under the Redis key prefix {prefix:?} (unknown, or past the retention period; `orgsync runs` lists them, and --config chooses the installation)"
    )]
    UnknownRun {
        /// The run id asked for.
        run_id: String,
        /// Where it was looked for.
        prefix: String,
    },
    /// The operation does not fit the run's state.
    #[error("{0}")]
    State(String),
    /// A release without `include_unread` of a run holding deactivations of objects its partial
    /// read may not have read.
    #[error(
        "run {run_id} holds {} deactivations of objects its partial STS read may not have read ({users} users, {departments} departments, marked [unread] in `orgsync runs show {run_id}`): they are unread, not absent, and may still be in STS; a new run reads them again (`orgsync sync`), or release with --include-unread to deactivate them anyway",
        users + departments
    )]
    UnreadHeld {
        /// The run.
        run_id: String,
        /// Unread users among the held deactivations.
        users: usize,
        /// Unread departments among the held deactivations.
        departments: usize,
    },
}

/// A run that was enqueued (or found already enqueued for the same fire).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnqueuedRun {
    /// The run id.
    pub run_id: String,
    /// The `SyncCustomer` job.
    pub job_id: String,
    /// `true`: the same fire was enqueued before (by another scheduler process); nothing new.
    pub duplicate: bool,
}

/// A run as `sync --wait` follows it.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The report so far.
    pub report: RunReport,
    /// The department fan-out, once it exists.
    pub batch: Option<BatchStatus>,
}

impl Progress {
    /// Department jobs terminal / total.
    pub fn departments(&self) -> (u64, u64) {
        match &self.batch {
            Some(b) => (b.total - b.pending, b.total),
            None => (0, self.report.departments_total),
        }
    }
}

/// A new run id: `<cvr>-<UTC yyyymmddThhmmss>-<4 hex>`, sortable per customer and readable.
pub fn new_run_id(cvr: &Cvr, at: chrono::DateTime<Utc>, suffix: &str) -> String {
    format!("{}-{}-{suffix}", cvr.as_str(), at.format("%Y%m%dT%H%M%S"))
}

fn random_suffix() -> String {
    format!("{:04x}", rand::random::<u16>())
}

/// The pipeline: its store, where data comes from, and its options.
#[derive(Debug)]
pub struct Pipeline {
    store: Store,
    sources: Arc<dyn Sources>,
    options: PipelineOptions,
    log: ProvisioningLog,
}

/// Keeps extending a run lock while a job works; stops when dropped.
pub(crate) struct Heartbeat(tokio::task::JoinHandle<()>);

/// How a job holds the customer's run lock.
enum LockHold {
    /// Alone, as `owner` (a run's id, `release:…`).
    Owner { owner: String },
    /// As `holder`, one of the replays of a run sharing the lock as `group` (`replay:<run>`).
    Shared { group: String, holder: String },
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn job_error(error: &SourceError) -> JobError {
    JobError::message(error.class.as_str(), error.retriable, error.message.clone())
        .not_before(error.retry_not_before)
}

/// A job failure of the pipeline's own, with its class.
pub(crate) fn failure(class: ErrorClass, retriable: bool, message: impl Into<String>) -> JobError {
    JobError::message(class.as_str(), retriable, message)
}

/// The `guard.target_lost` failure: not retriable (a person restores the target or accepts
/// an empty one), naming the target and what the last trusted run read.
fn target_lost(cvr: &Cvr, target: &str, how: &str, baseline: SourceCounts) -> JobError {
    failure(
        ErrorClass::GuardTargetLost,
        false,
        format!(
            "{target} {how}, but the last trusted run read {} units and {} users for it; nothing was written. Restore it and replay this job, or, if it is meant to start empty, run `orgsync runs accept-empty {cvr}` first",
            baseline.units, baseline.users
        ),
    )
}

pub(crate) fn queue_error(error: QueueError) -> JobError {
    let retriable = error.is_retriable();
    JobError::from_error(ErrorClass::QueueUnavailable.as_str(), retriable, &error)
}

/// The class a job error carries (its stable name, set by [`job_error`], [`failure`] or the
/// queue itself).
pub(crate) fn class_of(error: &JobError) -> ErrorClass {
    error.class().parse().unwrap_or(ErrorClass::Unclassified)
}

/// Target writes in flight for one job: the target's own limit.
pub(crate) fn concurrency(target: &dyn Target) -> usize {
    target.capabilities().max_in_flight.max(1)
}

fn elapsed_ms(since: Instant) -> Option<u64> {
    Some(u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX))
}

impl Pipeline {
    /// A pipeline on `queue`.
    pub fn new(
        queue: QueueHandle,
        sources: Arc<dyn Sources>,
        options: PipelineOptions,
    ) -> Arc<Pipeline> {
        Self::with_observer(queue, sources, options, None)
    }

    /// A pipeline whose ended runs are told to `observer` (support tickets).
    pub fn with_observer(
        queue: QueueHandle,
        sources: Arc<dyn Sources>,
        options: PipelineOptions,
        observer: Option<Arc<dyn crate::store::RunObserver>>,
    ) -> Arc<Pipeline> {
        Arc::new(Pipeline {
            log: ProvisioningLog::new(queue.clone(), options.report_retention),
            store: Store {
                queue,
                report_retention: options.report_retention,
                data_ttl: options.data_ttl,
                observer,
            },
            sources,
            options,
        })
    }

    /// The provisioning log (per object: what each run did and why).
    pub fn provisioning(&self) -> &ProvisioningLog {
        &self.log
    }

    /// Appends to the provisioning log; a failure is the queue's (retriable) error.
    async fn log(&self, cvr: &str, entries: &[ProvisioningEntry]) -> Result<(), JobError> {
        self.log.append(cvr, entries).await.map_err(queue_error)?;
        Ok(())
    }

    /// The queue.
    pub fn queue(&self) -> &QueueHandle {
        &self.store.queue
    }

    pub(crate) fn customer(&self, cvr: &str) -> Result<Customer, PipelineError> {
        let parsed = Cvr::parse(cvr).map_err(|_| PipelineError::InvalidCvr(cvr.to_owned()))?;
        self.sources.customer(&parsed).ok_or_else(|| {
            if let Some(problem) = self.sources.customer_problem(&parsed) {
                return PipelineError::Source(SourceError::config(problem));
            }
            let known: Vec<String> = self
                .sources
                .customers()
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect();
            PipelineError::UnknownCustomer {
                cvr: cvr.to_owned(),
                known: if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
            }
        })
    }

    fn unknown_run(&self, run_id: &str) -> PipelineError {
        PipelineError::UnknownRun {
            run_id: run_id.to_owned(),
            prefix: self.store.queue.config().key_prefix.clone(),
        }
    }

    /// Enqueues a run of `cvr`. With a `fire` (the scheduler), the enqueue is idempotent per
    /// customer and fire time across scheduler processes; `delay` postpones the start (jitter).
    pub async fn enqueue_run(
        &self,
        cvr: &str,
        trigger: Trigger,
        delay: Duration,
    ) -> Result<EnqueuedRun, PipelineError> {
        let customer = self.customer(cvr)?;
        let (run_id, idempotency_key) = match &trigger {
            Trigger::Schedule { fire } => (
                new_run_id(&customer.cvr, *fire, "s"),
                Some(format!(
                    "sync:{}:{}",
                    customer.cvr.as_str(),
                    fire.timestamp()
                )),
            ),
            Trigger::Manual { .. } => (
                new_run_id(&customer.cvr, Utc::now(), &random_suffix()),
                None,
            ),
        };
        let job = SyncCustomer {
            cvr: customer.cvr.as_str().to_owned(),
            run_id: run_id.clone(),
        };
        let mut new = NewJob::new(&job)?
            .customer(customer.cvr.as_str())
            .run(&run_id)
            .notify_on_death();
        if let Some(key) = idempotency_key {
            new = new.idempotency_key(key);
        }
        if !delay.is_zero() {
            new = new.run_after(delay);
        }
        // The report exists before the job can start, so a fast worker never misses it; a second
        // scheduler enqueueing the same fire finds it and leaves it alone.
        let report = RunReport::queued(&run_id, customer.cvr.as_str(), &customer.name, trigger);
        self.store.create_report(&report).await?;
        let enqueued = self.store.queue.enqueue(new).await?;
        if !enqueued.is_duplicate() {
            let job_id = enqueued.job_id().as_str().to_owned();
            self.store
                .update_report(&run_id, |r| {
                    r.job_id.get_or_insert(job_id);
                })
                .await?;
        }
        Ok(EnqueuedRun {
            run_id,
            job_id: enqueued.job_id().as_str().to_owned(),
            duplicate: enqueued.is_duplicate(),
        })
    }

    /// A run's report.
    pub async fn report(&self, run_id: &str) -> Result<RunReport, PipelineError> {
        let mut report = self
            .store
            .report(run_id)
            .await?
            .ok_or_else(|| self.unknown_run(run_id))?;
        self.live_figures(&mut report).await?;
        Ok(report)
    }

    /// While the department jobs run, a report's `departments_done` is how many have stored
    /// their result so far (`FinishRun` writes the final figure): `runs show` and the
    /// dashboard count up instead of showing 0 until the end.
    async fn live_figures(&self, report: &mut RunReport) -> Result<(), PipelineError> {
        if matches!(report.state, RunState::Users | RunState::Finishing) {
            report.departments_done = self
                .store
                .results_count(&report.run_id)
                .await?
                .min(report.departments_total);
        }
        Ok(())
    }

    /// Reports, newest first, of one customer or all.
    pub async fn reports(
        &self,
        cvr: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunReport>, PipelineError> {
        if let Some(cvr) = cvr {
            Cvr::parse(cvr).map_err(|_| PipelineError::InvalidCvr(cvr.to_owned()))?;
        }
        let mut reports = self.store.reports(cvr, limit).await?;
        for report in &mut reports {
            self.live_figures(report).await?;
        }
        Ok(reports)
    }

    /// A run's report and fan-out.
    ///
    /// A run whose `SyncCustomer` or `FinishRun` job is in the dead-letter queue without having
    /// said so (its worker died on every attempt) is marked failed here, naming the job.
    pub async fn progress(&self, run_id: &str) -> Result<Progress, PipelineError> {
        let mut report = self.report(run_id).await?;
        let batch = self.store.queue.batch(run_id).await?;
        if !report.state.is_final() {
            let jobs = report.job_id.iter().cloned().chain(
                batch
                    .iter()
                    .filter_map(|b| b.completion_job.as_ref().map(|j| j.as_str().to_owned())),
            );
            for job in jobs.collect::<Vec<_>>() {
                let Some(record) = self.store.queue.job(&JobId::new(job.clone())).await? else {
                    continue;
                };
                if record.state != JobState::Dead {
                    continue;
                }
                let error = format!(
                    "job {job} ({}) is in the dead-letter queue: {}; deactivations were not applied. Fix the cause, then `orgsync dlq replay {job}`",
                    record.job_type,
                    record.last_error.unwrap_or_default()
                );
                if let Some(updated) = self
                    .store
                    .update_report(run_id, |r| {
                        if !r.state.is_final() {
                            r.state = RunState::Failed;
                            r.error = Some(error);
                            r.finished_at = Some(Utc::now());
                        }
                    })
                    .await?
                {
                    report = updated;
                }
                let _ = self.store.release_lock(&report.cvr, run_id).await;
                break;
            }
        }
        Ok(Progress { report, batch })
    }

    /// The departments a run synced, parents first, with the users of each (see
    /// [`orgsync_model::plan::department_tree`]); `None` when the run never got to planning or
    /// its data has expired (kept as long as its fan-out data).
    pub async fn department_tree(
        &self,
        run_id: &str,
    ) -> Result<Option<Vec<orgsync_model::plan::TreeDepartment>>, PipelineError> {
        Ok(self.store.tree(run_id).await?)
    }

    /// The run holding the customer's lock, if any.
    pub async fn active_run(&self, cvr: &str) -> Result<Option<String>, PipelineError> {
        Ok(self.store.lock_owner(cvr).await?)
    }

    /// A dry run: reads STS and the target, validates against the last trusted counts and plans.
    /// Writes nothing.
    pub async fn plan(&self, cvr: &str) -> Result<Plan, PipelineError> {
        let customer = self.customer(cvr)?;
        let read = self.sources.read_snapshot(&customer.cvr).await?;
        let previous = self.store.last_counts(customer.cvr.as_str()).await?;
        let valid = validate(read.snapshot, &customer.policy, previous)
            .map_err(|invalid| PipelineError::InvalidSnapshot(invalid.to_string()))?;
        let state = self.sources.target_state(&customer.cvr).await?;
        Ok(orgsync_model::plan::plan(
            &valid,
            &state,
            &customer.policy,
            orgsync_model::time::danish_date(&Utc::now()),
        ))
    }

    /// Extends the customer's run lock (held by `owner`) every third of its lifetime until the
    /// returned guard is dropped.
    pub(crate) fn heartbeat(&self, cvr: &str, owner: &str) -> Heartbeat {
        self.keep_held(
            cvr,
            LockHold::Owner {
                owner: owner.to_owned(),
            },
        )
    }

    /// Renews `hold` of the customer's run lock every third of its TTL until dropped: the one
    /// heartbeat of every job that holds the lock, alone or as one of a run's replays.
    fn keep_held(&self, cvr: &str, hold: LockHold) -> Heartbeat {
        let store = self.store.clone();
        let cvr = cvr.to_owned();
        let ttl = self.options.lock_ttl;
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let renewed = match &hold {
                    LockHold::Owner { owner } => store.extend_lock(&cvr, owner, ttl).await,
                    LockHold::Shared { group, holder } => {
                        store.extend_shared_lock(&cvr, group, holder, ttl).await
                    }
                };
                let owner = match &hold {
                    LockHold::Owner { owner } => owner,
                    LockHold::Shared { group, .. } => group,
                };
                match renewed {
                    Ok(true) => {}
                    Ok(false) => warn!(
                        customer.cvr = %cvr, lock.owner = %owner,
                        "{owner} no longer holds the run lock of {cvr} (it expired); a newer run supersedes it"
                    ),
                    Err(e) => {
                        warn!(customer.cvr = %cvr, lock.owner = %owner, "cannot extend the run lock: {e}")
                    }
                }
            }
        }))
    }

    /// Reads the customer's STS while a task records the read's progress in the run's report
    /// (the latest figure, at most once per `progress_interval`, only while the run is
    /// `reading`). The recorder has stopped, its last write done, when this returns, so no
    /// stale report is written over a later one. Returns the read and its last progress figure
    /// (marked done), if the source reported any.
    async fn read_recording_progress(
        &self,
        cvr: &Cvr,
        run_id: &str,
        expected: Option<SourceCounts>,
    ) -> (Result<SourceRead, SourceError>, Option<ReadProgress>) {
        let (sender, mut receiver) = tokio::sync::watch::channel(ReadProgress::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let store = self.store.clone();
        let interval = self.options.progress_interval;
        let (run, mut watched) = (run_id.to_owned(), receiver.clone());
        let recorder = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(interval) => {}
                }
                if !watched.has_changed().unwrap_or(false) {
                    continue;
                }
                let progress = *watched.borrow_and_update();
                let recorded = store
                    .update_report(&run, |r| {
                        if r.state == RunState::Reading {
                            r.read_progress = Some(progress);
                        }
                    })
                    .await;
                if let Err(e) = recorded {
                    warn!(run.id = %run, "cannot record the read's progress: {e}");
                }
            }
        });
        let read = self
            .sources
            .read_snapshot_expecting(cvr, sender, expected)
            .await;
        let _ = stop.send(());
        let _ = recorder.await;
        let last = *receiver.borrow_and_update();
        let last = (last != ReadProgress::default()).then_some(ReadProgress { done: true, ..last });
        (read, last)
    }

    /// The lock's lifetime.
    pub(crate) fn lock_ttl(&self) -> Duration {
        self.options.lock_ttl
    }

    /// `SyncCustomer`.
    pub async fn sync_customer(&self, job: SyncCustomer, ctx: JobContext) -> Result<(), JobError> {
        let started = Instant::now();
        let run_id = job.run_id.clone();
        let mut report = match self.store.report(&run_id).await.map_err(queue_error)? {
            Some(report) => report,
            None => RunReport::queued(
                &run_id,
                &job.cvr,
                &job.cvr,
                Trigger::Manual {
                    by: "unknown".to_owned(),
                },
            ),
        };
        let customer = match self.customer(&job.cvr) {
            Ok(customer) => customer,
            Err(e) => {
                let message = e.to_string();
                let _ = self
                    .store
                    .update_report(&run_id, |r| {
                        if !r.state.is_final() {
                            r.state = RunState::Failed;
                            r.error = Some(message.clone());
                            r.error_class = Some(ErrorClass::ConfigInvalid);
                            r.finished_at = Some(Utc::now());
                        }
                    })
                    .await;
                return Err(failure(ErrorClass::ConfigInvalid, false, message));
            }
        };
        let cvr = customer.cvr.as_str().to_owned();
        report.job_id = Some(ctx.job_id.as_str().to_owned());
        if report.state.is_final() {
            if ctx.replay_of.is_none() || report.state != RunState::Failed {
                info!(customer.cvr = %cvr, run.id = %run_id, "run {run_id} has ended ({}); nothing to do", report.state);
                return Ok(());
            }
            // A replay of a failed run: run it again, unless a newer run has started.
            let current = self.store.current_run(&cvr).await.map_err(queue_error)?;
            if let Some(newer) = current.filter(|c| *c != run_id) {
                let text = format!(
                    "replay job {} did nothing: run {newer} of {cvr} started since; it decides",
                    ctx.job_id
                );
                warn!(customer.cvr = %cvr, run.id = %run_id, "{text}");
                self.store
                    .update_report(&run_id, |r| r.note(&text))
                    .await
                    .map_err(queue_error)?;
                return Ok(());
            }
            report.state = RunState::Queued;
            report.error = None;
            report.finished_at = None;
            report.note(format!(
                "run again by replay job {} (of {})",
                ctx.job_id,
                ctx.replay_of
                    .as_ref()
                    .map(|j| j.as_str())
                    .unwrap_or_default()
            ));
        }
        if self
            .store
            .queue
            .batch(&run_id)
            .await
            .map_err(queue_error)?
            .is_some()
        {
            let text = format!(
                "SyncCustomer job {} did nothing: run {run_id} already fanned out; its FinishRun decides (replay that one if it is dead)",
                ctx.job_id
            );
            if ctx.replay_of.is_some() {
                warn!(customer.cvr = %cvr, run.id = %run_id, "{text}");
                self.store
                    .update_report(&run_id, |r| r.note(&text))
                    .await
                    .map_err(queue_error)?;
            } else {
                info!(customer.cvr = %cvr, run.id = %run_id, "{text}");
            }
            return Ok(());
        }

        // The customer's run lock: one run at a time.
        match self
            .store
            .try_lock(&cvr, &run_id, self.options.lock_ttl)
            .await
            .map_err(queue_error)?
        {
            LockAttempt::Acquired => {}
            LockAttempt::Held { owner, .. } if owner == run_id => {}
            LockAttempt::Held { owner, ttl_left } => {
                let message = format!(
                    "not started: run {owner} of {cvr} is still active (its lock expires in {} s unless it keeps working); this run was refused",
                    ttl_left.as_secs()
                );
                warn!(customer.cvr = %cvr, run.id = %run_id, "{message}");
                report.state = RunState::Refused;
                report.error = Some(message);
                report.finished_at = Some(Utc::now());
                self.store.save_report(&report).await.map_err(queue_error)?;
                self.store.notify_ended(&report);
                return Ok(());
            }
        }
        let _heartbeat = self.heartbeat(&cvr, &run_id);
        let result = self
            .sync_customer_locked(&customer, &mut report, &ctx, started)
            .await;
        if let Err(error) = &result {
            // Nothing beyond what was verified was written; let the next attempt (or run) in.
            let _ = self.store.release_lock(&cvr, &run_id).await;
            let last = ctx.attempt >= ctx.max_attempts || !error.is_retriable();
            let message = if last {
                format!(
                    "{} (attempt {} of {}); nothing was deactivated",
                    error.summary(),
                    ctx.attempt,
                    ctx.max_attempts
                )
            } else {
                format!(
                    "attempt {} of {} failed, will retry: {}",
                    ctx.attempt,
                    ctx.max_attempts,
                    error.summary()
                )
            };
            let total_ms = elapsed_ms(started);
            let class = class_of(error);
            let sts_failure = report.sts_failure.take();
            // Never downgrade a report that has ended meanwhile.
            let _ = self
                .store
                .update_report(&run_id, |r| {
                    if r.state.is_final() {
                        return;
                    }
                    r.error = Some(message);
                    r.error_class = Some(class);
                    if let Some(call) = sts_failure {
                        match &mut r.sts_failure {
                            Some(earlier) => earlier.merge(*call),
                            None => r.sts_failure = Some(call),
                        }
                    }
                    if last {
                        r.state = RunState::Failed;
                        r.finished_at = Some(Utc::now());
                        r.durations.total_ms = total_ms;
                    } else {
                        r.state = RunState::Queued;
                    }
                })
                .await;
        }
        result
    }

    async fn sync_customer_locked(
        &self,
        customer: &Customer,
        report: &mut RunReport,
        ctx: &JobContext,
        started: Instant,
    ) -> Result<(), JobError> {
        let cvr = customer.cvr.as_str();
        let run_id = report.run_id.clone();
        self.store
            .set_current_run(cvr, &run_id)
            .await
            .map_err(queue_error)?;
        report.state = RunState::Reading;
        report.read_progress = None;
        report.error = None;
        report.error_class = None;
        report.started_at.get_or_insert_with(Utc::now);
        self.store.save_report(report).await.map_err(queue_error)?;
        info!(customer.cvr = %cvr, run.id = %run_id, job.attempt = ctx.attempt, "run {run_id}: reading STS");

        // 1. Read, bounded by the last trusted run's size.
        let previous = self.store.last_counts(cvr).await.map_err(queue_error)?;
        let (read, progress) = self
            .read_recording_progress(&customer.cvr, &run_id, previous)
            .await;
        report.read_progress = progress;
        let read = read.map_err(|e| {
            report.sts_failure = e.sts_failure.clone();
            job_error(&e)
        })?;
        if let Some(partial) = &read.snapshot.partial {
            // A read cut short by an outage is done again as a whole, like one that fails at
            // the start; only a read that stays partial after every attempt (or fails in a way a
            // new read repeats) is planned, and then holds what it could not verify.
            if partial.is_retriable() && ctx.attempt < ctx.max_attempts {
                return Err(failure(
                    ErrorClass::StsPartialRead,
                    true,
                    format!(
                        "the STS read was incomplete ({partial}); the whole read is done again"
                    ),
                ));
            }
            report.note(if partial.is_retriable() {
                format!(
                    "the STS read stayed incomplete through all {} attempts: planned from the partial read, its deactivations held",
                    ctx.max_attempts
                )
            } else {
                format!(
                    "the STS read was incomplete in a way a new read repeats ({}): planned from the partial read, its deactivations held",
                    partial.class()
                )
            });
        }
        report.durations.read_ms = elapsed_ms(started);
        report.sts_calls = read.calls;
        let counts = SourceCounts::of(&read.snapshot);
        report.source = Some(counts);
        report.issues = read.issues.clone();

        // 2. Validate.
        let plan_started = Instant::now();
        let valid = validate(read.snapshot, &customer.policy, previous).map_err(|invalid| {
            report
                .issues
                .extend(invalid.issues.iter().map(|i| i.message.clone()));
            failure(
                ErrorClass::StsBadData,
                false,
                format!("{invalid}; nothing was written"),
            )
        })?;
        report
            .issues
            .extend(valid.issues().iter().map(|i| i.message.clone()));
        let counts_trusted = valid.source_drop().is_none() && valid.snapshot().partial.is_none();
        let titles: BTreeMap<UnitId, String> = valid
            .snapshot()
            .units
            .iter()
            .map(|u| (u.uuid, u.name.clone()))
            .collect();

        // 3. Plan against the target.
        let (target, baseline) = self.open_run_target(&customer.cvr, previous).await?;
        let state = target
            .read_state()
            .await
            .map_err(|e| job_error(&SourceError::target(&e)))?;
        let today = orgsync_model::time::danish_date(&Utc::now());
        let plan = orgsync_model::plan::plan(&valid, &state, &customer.policy, today);
        self.check_target_kept(&customer.cvr, baseline, &state, &plan)
            .await?;
        let tree = orgsync_model::plan::department_tree(&valid, &state, &customer.policy, today);
        drop(state);
        self.store
            .put_tree(&run_id, &tree)
            .await
            .map_err(queue_error)?;
        report.durations.plan_ms = elapsed_ms(plan_started);
        report.summary = Some(plan.summary);
        report.skipped = plan
            .skipped
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), *v))
            .collect();
        report.held = plan.held.clone();
        let skipped: Vec<ProvisioningEntry> = plan
            .skipped_users
            .iter()
            .map(|s| ProvisioningEntry::skipped(&run_id, cvr, s))
            .collect();

        // 4. Split the plan: departments now, user renames now, users per department, and
        //    deactivations for FinishRun.
        let (department_deactivations, department_writes): (Vec<_>, Vec<_>) = plan
            .departments
            .into_iter()
            .partition(|i| i.action == Action::Deactivate);
        let mut now_users: Vec<UserItem> = Vec::new();
        let mut user_deactivations: Vec<UserItem> = Vec::new();
        let mut slices: BTreeMap<UnitId, Vec<UserItem>> = BTreeMap::new();
        for item in plan.users {
            let renames = item
                .changes
                .as_ref()
                .is_some_and(|c| c.contains_key("user_name"));
            match (item.action, item.fields.primary_department) {
                (Action::Deactivate, _) => user_deactivations.push(item),
                (_, _) if renames => now_users.push(item),
                (_, Some(unit)) => slices.entry(unit).or_default().push(item),
                (_, None) => now_users.push(item),
            }
        }
        let units: Vec<(Uuid, String)> = slices
            .keys()
            .map(|u| (u.0, titles.get(u).cloned().unwrap_or_default()))
            .collect();
        let encoded: Vec<(String, Vec<u8>)> = slices
            .iter()
            .map(|(unit, items)| {
                (
                    unit.0.to_string(),
                    serde_json::to_vec(items).unwrap_or_default(),
                )
            })
            .collect();
        self.store
            .put_slices(&run_id, &encoded)
            .await
            .map_err(queue_error)?;
        self.store
            .put_finish(
                &run_id,
                &FinishData {
                    held: plan.held.clone(),
                    departments: department_deactivations,
                    users: user_deactivations,
                    units: units.clone(),
                    counts: Some(counts),
                    counts_trusted,
                },
            )
            .await
            .map_err(queue_error)?;

        // 5. Departments (parents first), then the renames.
        report.state = RunState::Departments;
        self.store.save_report(report).await.map_err(queue_error)?;
        let departments_started = Instant::now();
        let concurrency = concurrency(target.as_ref());
        let written = write_departments(target.as_ref(), &department_writes, concurrency)
            .await
            .map_err(|e| job_error(&SourceError::target(&e)))?;
        report.add_writes(&written);
        let mut entries =
            provisioning::department_writes(&run_id, cvr, &department_writes, &written);
        let written = write_users(target.as_ref(), &now_users, concurrency)
            .await
            .map_err(|e| job_error(&SourceError::target(&e)))?;
        report.add_writes(&written);
        entries.extend(provisioning::user_writes(
            &run_id, cvr, &now_users, &written,
        ));
        report.achieved = Default::default();
        report.achieved.add(&entries);
        entries.extend(skipped);
        self.log(cvr, &entries).await?;
        report.durations.departments_ms = elapsed_ms(departments_started);

        // 6. Fan out. The batch is atomic and idempotent per run id.
        report.state = RunState::Users;
        report.departments_total = units.len() as u64;
        report.fanned_out_at = Some(Utc::now());
        self.store.save_report(report).await.map_err(queue_error)?;
        let mut children = Vec::with_capacity(units.len());
        for (unit, _) in &units {
            let child = SyncDepartment {
                run_id: run_id.clone(),
                unit: *unit,
            };
            children.push(
                NewJob::new(&child)
                    .map_err(queue_error)?
                    .customer(cvr)
                    .idempotency_key(format!("run:{run_id}:department:{unit}")),
            );
        }
        let finish = NewJob::new(&FinishRun {
            run_id: run_id.clone(),
        })
        .map_err(queue_error)?
        .customer(cvr)
        .idempotency_key(format!("run:{run_id}:finish"))
        .notify_on_death();
        let batch = self
            .store
            .queue
            .enqueue_batch(NewBatch {
                id: run_id.clone(),
                children,
                on_complete: finish,
                // Longer than any run: a batch that expires never enqueues its FinishRun.
                retention: self
                    .options
                    .data_ttl
                    .max(Duration::from_secs(2 * 24 * 3600)),
            })
            .await
            .map_err(queue_error)?;
        // Which job is which department's, for the report of a department that did not write.
        let jobs: Vec<(String, Vec<u8>)> = units
            .iter()
            .zip(&batch.children)
            .map(|((unit, _), job)| (unit.to_string(), job.as_str().as_bytes().to_vec()))
            .collect();
        // Best effort: the fan-out has happened, so this job must not fail (and unlock) now.
        if let Err(e) = self.store.put_department_jobs(&run_id, &jobs).await {
            warn!(customer.cvr = %cvr, run.id = %run_id, "cannot record the department jobs of the run: {e}");
        }
        info!(
            customer.cvr = %cvr, run.id = %run_id, duration_ms = started.elapsed().as_millis() as u64,
            "run {run_id}: departments written, {} department jobs enqueued", units.len()
        );
        Ok(())
    }

    /// The customer's target at a run's start, and the baseline it is checked against. A
    /// missing target is created only when no trusted run has read objects for the customer
    /// into this target (a first run, or a target the configuration names anew); otherwise it
    /// was lost, and the run fails with `guard.target_lost` rather than creating everything
    /// again.
    async fn open_run_target(
        &self,
        cvr: &Cvr,
        previous: Option<SourceCounts>,
    ) -> Result<(Arc<dyn Target>, Option<SourceCounts>), JobError> {
        let here = self.sources.describe_target(cvr);
        let known = self
            .store
            .baseline_target(cvr.as_str())
            .await
            .map_err(queue_error)?;
        // A baseline recorded before targets were recorded is taken to be this target's.
        let same = known.as_deref().is_none_or(|known| known == here);
        if !same {
            info!(customer.cvr = %cvr, "the configuration names another target than the last run's ({} then, {here} now): it is filled as a new one", known.as_deref().unwrap_or_default());
        }
        let baseline = previous.filter(|c| same && c.units + c.users > 0);
        match self
            .sources
            .open_target(cvr, baseline.is_none())
            .await
            .map_err(|e| job_error(&e))?
        {
            TargetOpen::Opened(target) => Ok((target, baseline)),
            TargetOpen::Missing => Err(target_lost(
                cvr,
                &here,
                "does not exist",
                baseline.unwrap_or(SourceCounts { units: 0, users: 0 }),
            )),
        }
    }

    /// A target that holds nothing of the customer while the last trusted run read objects for
    /// it, and the plan would create them all again, was lost (deleted, replaced, wiped): the
    /// run fails with `guard.target_lost` before writing anything. A target that passes becomes
    /// the one the baseline is about.
    async fn check_target_kept(
        &self,
        cvr: &Cvr,
        baseline: Option<SourceCounts>,
        state: &orgsync_model::target::TargetState,
        plan: &Plan,
    ) -> Result<(), JobError> {
        let here = self.sources.describe_target(cvr);
        if let Some(baseline) = baseline {
            let empty = state.departments.is_empty() && state.users.is_empty();
            let creates = plan.summary.departments.create + plan.summary.users.create;
            if empty && creates > 0 {
                return Err(target_lost(
                    cvr,
                    &here,
                    "holds nothing of this customer",
                    baseline,
                ));
            }
        }
        self.store
            .set_baseline_target(cvr.as_str(), &here)
            .await
            .map_err(queue_error)
    }

    /// `SyncDepartment`.
    pub async fn sync_department(
        &self,
        job: SyncDepartment,
        ctx: JobContext,
    ) -> Result<(), JobError> {
        let run_id = job.run_id.as_str();
        let unit = job.unit;
        let Some(report) = self.store.report(run_id).await.map_err(queue_error)? else {
            warn!(run.id = %run_id, unit.uuid = %unit, "run {run_id} is unknown (past its retention?); department {unit} does nothing");
            return Ok(());
        };
        let cvr = report.cvr.clone();
        // Superseded: a newer run of the customer has started; its plan decides. (FinishRun
        // counts a department without a result as failed, so this never passes for success.)
        let current = self.store.current_run(&cvr).await.map_err(queue_error)?;
        if let Some(newer) = current.filter(|c| c != run_id) {
            return self
                .did_nothing(
                    run_id,
                    unit,
                    format!(
                        "department job for {unit} (job {}) did nothing: run {run_id} was superseded by run {newer}",
                        ctx.job_id
                    ),
                )
                .await;
        }
        // The run lock. While the run is active it is the run's (taken again if it lapsed) and
        // only FinishRun releases it. A replay after the run ended shares it with the run's
        // other replays (see `replay_department`).
        if report.state.is_final() {
            return self.replay_department(&report, unit, &ctx).await;
        }
        match self
            .store
            .try_lock(&cvr, run_id, self.options.lock_ttl)
            .await
            .map_err(queue_error)?
        {
            LockAttempt::Acquired => {}
            LockAttempt::Held { owner, .. } if owner == run_id => {}
            LockAttempt::Held { owner, .. } => {
                return self
                    .did_nothing(
                        run_id,
                        unit,
                        format!(
                            "department job for {unit} (job {}) did nothing: {owner} holds {cvr}",
                            ctx.job_id
                        ),
                    )
                    .await;
            }
        }
        let heartbeat = self.heartbeat(&cvr, run_id);
        let result = self.write_department(&report, unit, &ctx).await;
        drop(heartbeat);
        // The run may have ended meanwhile (this was a replay racing FinishRun): then the lock
        // this job may have taken again is released here.
        if self
            .store
            .report(run_id)
            .await
            .map_err(queue_error)?
            .is_some_and(|r| r.state.is_final())
        {
            let _ = self.store.release_lock(&cvr, run_id).await;
        }
        result
    }

    /// A replay of a department job after its run ended. Its write holds the customer's lock
    /// shared by the run's replays (group `replay:<run>`, this job one of its holders), so the
    /// replays of one run never wait for each other, while a new run, a `FinishRun` or a
    /// release (other owners) excludes them and is excluded by them. The last replay to end
    /// frees the lock; a replay that crashed stops renewing its hold, which then expires with
    /// the lock's TTL. When someone else holds the customer, the job snoozes (no attempt spent)
    /// and tries again.
    async fn replay_department(
        &self,
        report: &RunReport,
        unit: Uuid,
        ctx: &JobContext,
    ) -> Result<(), JobError> {
        let cvr = report.cvr.as_str();
        let group = format!("replay:{}", report.run_id);
        let holder = ctx.job_id.as_str();
        match self
            .store
            .try_shared_lock(cvr, &group, holder, self.options.lock_ttl)
            .await
            .map_err(queue_error)?
        {
            LockAttempt::Acquired => {}
            LockAttempt::Held { owner, ttl_left } => {
                // The run is being finished or released, or a newer run is working: later.
                let delay = self
                    .options
                    .busy_snooze
                    .min(ttl_left)
                    .max(Duration::from_millis(50));
                return Err(JobError::snooze(
                    ErrorClass::RunBusy.as_str(),
                    format!(
                        "{owner} holds {cvr}; this replay waits {} ms and tries again without spending an attempt",
                        delay.as_millis()
                    ),
                    delay,
                ));
            }
        }
        let heartbeat = self.keep_held(
            cvr,
            LockHold::Shared {
                group: group.clone(),
                holder: holder.to_owned(),
            },
        );
        let result = self.write_department(report, unit, ctx).await;
        drop(heartbeat);
        let _ = self.store.release_shared_lock(cvr, &group, holder).await;
        result
    }

    /// A department job that does nothing says so: in the log and in the run's notes.
    async fn did_nothing(&self, run_id: &str, unit: Uuid, text: String) -> Result<(), JobError> {
        warn!(run.id = %run_id, unit.uuid = %unit, "{text}");
        self.store
            .update_report(run_id, |r| r.note(&text))
            .await
            .map_err(queue_error)?;
        Ok(())
    }

    async fn write_department(
        &self,
        report: &RunReport,
        unit: Uuid,
        ctx: &JobContext,
    ) -> Result<(), JobError> {
        let run_id = report.run_id.as_str();
        let Some(items) = self.store.slice(run_id, unit).await.map_err(queue_error)? else {
            return self
                .did_nothing(
                    run_id,
                    unit,
                    format!(
                        "department job for {unit} (job {}) did nothing: the run's stored plan has expired; the next run syncs these users",
                        ctx.job_id
                    ),
                )
                .await;
        };
        let cvr = Cvr::parse(&report.cvr)
            .map_err(|e| failure(ErrorClass::ConfigInvalid, false, e.to_string()))?;
        let target = self.sources.target(&cvr).await.map_err(|e| job_error(&e))?;
        let concurrency = concurrency(target.as_ref());
        let written = write_users(target.as_ref(), &items, concurrency)
            .await
            .map_err(|e| job_error(&SourceError::target(&e)))?;
        let entries = provisioning::user_writes(run_id, &report.cvr, &items, &written);
        self.log(&report.cvr, &entries).await?;
        let mut achieved = crate::report::Achieved::default();
        achieved.add(&entries);
        let result = DepartmentResult {
            achieved: achieved.users,
            written: written.written,
            unchanged: written.unchanged,
            rejected: written.rejected.iter().map(Into::into).collect(),
        };
        self.store
            .put_result(run_id, unit, &result)
            .await
            .map_err(queue_error)?;
        // A replay after the run ended: the report learns that this department is complete.
        if ctx.replay_of.is_some() || report.state.is_final() {
            let job_id = ctx.job_id.as_str().to_owned();
            let replay_of = ctx.replay_of.as_ref().map(|id| id.as_str().to_owned());
            self.store
                .update_report(run_id, |r| {
                    if !r.state.is_final() {
                        return; // FinishRun will count it
                    }
                    r.mark_recovered(unit, &result);
                    r.note(format!(
                        "department {unit} completed by job {job_id}{}: {} users written, {} unchanged, {} rejected",
                        replay_of.map(|o| format!(" (replay of {o})")).unwrap_or_default(),
                        result.written,
                        result.unchanged,
                        result.rejected.len()
                    ));
                })
                .await
                .map_err(queue_error)?;
        }
        info!(
            customer.cvr = %report.cvr, run.id = %run_id, unit.uuid = %unit,
            "department {unit}: {} users, {} written, {} unchanged, {} rejected",
            items.len(), written.written, written.unchanged, written.rejected.len()
        );
        Ok(())
    }

    /// `FinishRun`. On its last attempt (or a permanent error) the report says the run failed
    /// and which job to replay.
    pub async fn finish_run(&self, job: FinishRun, ctx: JobContext) -> Result<(), JobError> {
        let result = self.finish_run_inner(&job, ctx.replay_of.is_some()).await;
        if let Err(error) = &result {
            if ctx.attempt >= ctx.max_attempts || !error.is_retriable() {
                let message = format!(
                    "finishing failed: {}; deactivations were not applied. Fix the cause, then `orgsync dlq replay {}`",
                    error.summary(),
                    ctx.job_id
                );
                let mut cvr = None;
                let class = class_of(error);
                let _ = self
                    .store
                    .update_report(&job.run_id, |r| {
                        cvr = Some(r.cvr.clone());
                        if !r.state.is_final() {
                            r.state = RunState::Failed;
                            r.error = Some(message);
                            r.error_class = Some(class);
                            r.finished_at = Some(Utc::now());
                        }
                    })
                    .await;
                if let Some(cvr) = cvr {
                    let _ = self.store.release_lock(&cvr, &job.run_id).await;
                }
            }
        }
        result
    }

    /// The queue's [`DeathNotice`] of a `SyncCustomer` or `FinishRun` job: a run whose job
    /// died without its handler ending the run (workers killed during the last attempt, a
    /// payload that no longer decodes, a panic) would otherwise stay `reading` or `users` for
    /// ever. Ends it as failed, naming the dead letter, and releases its lock. A run that has
    /// ended (the handler saw its last attempt) is left alone; a replay of the dead letter
    /// still runs it.
    pub async fn job_died(&self, notice: DeathNotice) -> Result<(), JobError> {
        let Some(run_id) = notice.run.as_deref() else {
            return Ok(());
        };
        let record = self
            .store
            .queue
            .job(&notice.job_id)
            .await
            .map_err(queue_error)?;
        let class = record
            .as_ref()
            .and_then(|r| r.final_error_class.as_deref())
            .and_then(|c| c.parse::<ErrorClass>().ok())
            .unwrap_or(ErrorClass::Unclassified);
        let why = record
            .as_ref()
            .and_then(|r| r.last_error.clone())
            .unwrap_or_else(|| "no error was recorded".to_owned());
        let message = format!(
            "the {} job {} was dead-lettered ({class}: {why}); nothing was deactivated. Fix the cause, then `orgsync dlq replay {}`",
            notice.job_type, notice.job_id, notice.job_id
        );
        let mut ended = None;
        self.store
            .update_report(run_id, |r| {
                if r.state.is_final() {
                    return;
                }
                r.state = RunState::Failed;
                r.error = Some(message.clone());
                r.error_class = Some(class);
                r.finished_at = Some(Utc::now());
                if notice.job_type == SyncCustomer::JOB_TYPE {
                    r.job_id = Some(notice.job_id.as_str().to_owned());
                }
                ended = Some(r.clone());
            })
            .await
            .map_err(queue_error)?;
        let Some(report) = ended else {
            return Ok(());
        };
        warn!(customer.cvr = %report.cvr, run.id = %run_id, "run {run_id} failed: {message}");
        // Owner-checked: only this run's lock is released.
        let _ = self.store.release_lock(&report.cvr, run_id).await;
        self.store.notify_ended(&report);
        Ok(())
    }

    async fn finish_run_inner(&self, job: &FinishRun, replay: bool) -> Result<(), JobError> {
        let started = Instant::now();
        let finish_started_at = Utc::now();
        let run_id = job.run_id.as_str();
        let Some(report) = self.store.report(run_id).await.map_err(queue_error)? else {
            warn!(run.id = %run_id, "run {run_id} is unknown (past its retention?); nothing to finish");
            return Ok(());
        };
        let cvr = report.cvr.clone();
        let customer = Cvr::parse(&cvr)
            .map_err(|e| failure(ErrorClass::ConfigInvalid, false, e.to_string()))?;
        // A replay of a FinishRun that failed for good finishes the run now (or holds its
        // deactivations, when a newer run has started since).
        let replayed_failure = replay && report.state == RunState::Failed;
        if report.state.is_final() && !replayed_failure {
            let _ = self.store.release_lock(&cvr, run_id).await;
            return Ok(());
        }
        let Some(finish) = self.store.finish(run_id).await.map_err(queue_error)? else {
            return Err(failure(
                ErrorClass::RunExpired,
                false,
                format!("run {run_id}: its stored plan has expired; nothing was deactivated"),
            ));
        };

        // Still this customer's run? A newer run (started after this one's lock lapsed) decides.
        let current = self.store.current_run(&cvr).await.map_err(queue_error)?;
        let superseded = match current.filter(|c| c != run_id) {
            Some(newer) => Some(newer),
            // Ours: take the lock again if it lapsed; someone else's: they decide.
            None => match self
                .store
                .try_lock(&cvr, run_id, self.options.lock_ttl)
                .await
                .map_err(queue_error)?
            {
                LockAttempt::Acquired => None,
                LockAttempt::Held { owner, .. } if owner == run_id => None,
                LockAttempt::Held { owner, .. } => Some(owner),
            },
        };
        let _heartbeat = superseded.is_none().then(|| self.heartbeat(&cvr, run_id));
        // `runs show` says `finishing` while the deactivations are applied and the report is
        // written (it said `users` until the end).
        if superseded.is_none() {
            self.store
                .update_report(run_id, |r| {
                    if !r.state.is_final() {
                        r.state = RunState::Finishing;
                    }
                })
                .await
                .map_err(queue_error)?;
        }

        // What the department jobs did: a department without a stored result did not write its
        // users (dead-lettered, or it did nothing), so it counts as failed.
        let batch = self.store.queue.batch(run_id).await.map_err(queue_error)?;
        let mut dead: BTreeMap<Uuid, (String, String, Option<ErrorClass>)> = BTreeMap::new();
        for id in batch.iter().flat_map(|b| b.dead.iter()) {
            if let Some(record) = self.store.queue.job(id).await.map_err(queue_error)? {
                if let Ok(d) = serde_json::from_value::<SyncDepartment>(record.payload.clone()) {
                    let class = record
                        .final_error_class
                        .or(record.last_error_class)
                        .map(|c| c.parse().unwrap_or(ErrorClass::Unclassified));
                    dead.insert(
                        d.unit,
                        (
                            id.as_str().to_owned(),
                            record.last_error.unwrap_or_default(),
                            class,
                        ),
                    );
                }
            }
        }
        let mut results = Vec::new();
        let mut failed = Vec::new();
        for (unit, title) in &finish.units {
            match self
                .store
                .result(run_id, *unit)
                .await
                .map_err(queue_error)?
            {
                Some(result) => results.push(result),
                None => {
                    let (job_id, error, error_class) = match dead.remove(unit) {
                        Some(dead) => dead,
                        None => (
                            self.store
                                .department_job(run_id, *unit)
                                .await
                                .map_err(queue_error)?
                                .unwrap_or_default(),
                            "the department job did not write its users (see the notes)".to_owned(),
                            None,
                        ),
                    };
                    let users = self
                        .store
                        .slice(run_id, *unit)
                        .await
                        .map_err(queue_error)?
                        .map_or(0, |items| items.len() as u64);
                    failed.push(FailedDepartment {
                        unit: *unit,
                        title: title.clone(),
                        job_id,
                        error,
                        error_class,
                        users,
                        recovered_at: None,
                    });
                }
            }
        }

        // Deactivations: held by the plan's guards, because a department failed, or because a
        // newer run supersedes this one.
        let mut plan = Plan {
            cvr: customer.clone(),
            departments: finish.departments.clone(),
            users: finish.users.clone(),
            skipped: BTreeMap::new(),
            skipped_users: Vec::new(),
            // (An older version kept the guards' hold only in the report.)
            held: finish.held.clone().or_else(|| report.held.clone()),
            summary: report.summary.unwrap_or_default(),
            issues: Vec::new(),
        };
        if !failed.is_empty() {
            let names: Vec<String> = failed
                .iter()
                .map(|f| format!("{} ({})", f.title, f.unit))
                .collect();
            plan.hold_deactivations(
                HoldReason::RunFailed,
                &format!(
                    "{} department job(s) failed: {}; their users are unread, not absent",
                    failed.len(),
                    names.join(", ")
                ),
            );
        }
        if replayed_failure {
            plan.hold_deactivations(
                HoldReason::Replayed,
                "the run was finished by a replay, later than planned: release re-checks each deactivation against the target as it is now",
            );
        }
        if let Some(newer) = &superseded {
            plan.hold_deactivations(
                HoldReason::Superseded,
                &format!("run {newer} of {cvr} started before this run finished; it decides"),
            );
        }
        let held = plan.held.clone();
        let mut deactivation_writes = None;
        if held.is_none() && !plan.is_empty() {
            let target = self
                .sources
                .target(&customer)
                .await
                .map_err(|e| job_error(&e))?;
            let concurrency = concurrency(target.as_ref());
            let users = write_users(target.as_ref(), &plan.users, concurrency)
                .await
                .map_err(|e| job_error(&SourceError::target(&e)))?;
            let departments = write_departments(target.as_ref(), &plan.departments, concurrency)
                .await
                .map_err(|e| job_error(&SourceError::target(&e)))?;
            let mut entries = provisioning::user_writes(run_id, &cvr, &plan.users, &users);
            entries.extend(provisioning::department_writes(
                run_id,
                &cvr,
                &plan.departments,
                &departments,
            ));
            self.log(&cvr, &entries).await?;
            deactivation_writes = Some((users, departments, entries));
        }
        if let Some(held) = &held {
            let mut entries: Vec<ProvisioningEntry> = held
                .users
                .iter()
                .map(|u| ProvisioningEntry::user(run_id, &cvr, u, LogAction::Held))
                .chain(
                    held.departments
                        .iter()
                        .map(|d| ProvisioningEntry::department(run_id, &cvr, d, LogAction::Held)),
                )
                .collect();
            for e in &mut entries {
                e.reason = Some(held.reason.clone());
            }
            self.log(&cvr, &entries).await?;
        }
        if superseded.is_none()
            && finish.counts_trusted
            && let Some(counts) = &finish.counts
        {
            self.store
                .set_last_counts(&cvr, counts)
                .await
                .map_err(queue_error)?;
        }

        let n_failed = failed.len();
        let updated = self
            .store
            .update_report(run_id, |r| {
                for result in &results {
                    r.add_department(result);
                }
                if let Some((users, departments, entries)) = &deactivation_writes {
                    r.add_writes(users);
                    r.add_writes(departments);
                    r.achieved.add(entries);
                }
                r.departments_done = results.len() as u64;
                r.failed_departments = failed;
                r.held = held.clone();
                if let (Some(summary), Some(h)) = (r.summary.as_mut(), &held) {
                    summary.held = h.deactivations;
                    summary.users.deactivate = 0;
                    summary.departments.deactivate = 0;
                }
                r.state = if held.is_some() {
                    RunState::Held
                } else if n_failed > 0 {
                    RunState::PartlyFailed
                } else {
                    RunState::Succeeded
                };
                let failed_class = r.failed_departments.iter().find_map(|f| f.error_class);
                r.error_class = match &held {
                    // Held only because department jobs died: what killed them is the news.
                    Some(h) if h.reasons == [HoldReason::RunFailed] => {
                        failed_class.or(Some(ErrorClass::GuardHeld))
                    }
                    Some(h) => Some(ErrorClass::of_hold(&h.reasons)),
                    None if n_failed > 0 => failed_class.or(Some(ErrorClass::Unclassified)),
                    None => None,
                };
                if replayed_failure {
                    r.note(format!("finished by a replay of FinishRun: {}", r.state));
                    r.error = None;
                }
                r.durations.users_ms = r.fanned_out_at.map(|at| {
                    u64::try_from((finish_started_at - at).num_milliseconds()).unwrap_or(0)
                });
                r.durations.finish_ms = elapsed_ms(started);
                r.finished_at = Some(Utc::now());
                r.durations.total_ms = r
                    .started_at
                    .map(|s| u64::try_from((Utc::now() - s).num_milliseconds()).unwrap_or(0));
            })
            .await
            .map_err(queue_error)?;
        if superseded.is_none() {
            let _ = self.store.release_lock(&cvr, run_id).await;
        }
        // A replay that wrote its result while this job was counting: recorded now.
        let mut updated = updated;
        if let Some(r) = &updated {
            let mut late = Vec::new();
            for f in &r.failed_departments {
                if let Some(result) = self
                    .store
                    .result(run_id, f.unit)
                    .await
                    .map_err(queue_error)?
                {
                    late.push((f.unit, result));
                }
            }
            if !late.is_empty() {
                updated = self
                    .store
                    .update_report(run_id, |r| {
                        for (unit, result) in &late {
                            r.mark_recovered(*unit, result);
                        }
                    })
                    .await
                    .map_err(queue_error)?;
            }
        }
        if let Some(r) = updated {
            if r.state == RunState::Held {
                warn!(
                    customer.cvr = %cvr, run.id = %run_id,
                    "run {run_id} of {cvr} is HELD: {}; release with `orgsync runs release {run_id}`",
                    r.held.as_ref().map(|h| h.reason.as_str()).unwrap_or_default()
                );
            } else {
                info!(customer.cvr = %cvr, run.id = %run_id, "run {run_id} of {cvr} ended: {} ({n_failed} failed departments)", r.state);
            }
        }
        Ok(())
    }

    /// For [`crate::release`].
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// For [`crate::release`].
    pub(crate) fn sources(&self) -> &Arc<dyn Sources> {
        &self.sources
    }
}
