//! Run state through the queue crate's state API: the names of what a run keeps, in one place.
//! (The queue crate maps them to Redis keys; nothing here knows those.)

use std::time::Duration;

use orgsync_model::plan::{DepartmentItem, UserItem};
use orgsync_model::validate::SourceCounts;
use orgsync_queue::{LockAttempt, QueueError, QueueHandle};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::report::RunReport;

const RUNS: &str = "runs";

/// What `FinishRun` needs from `SyncCustomer`, stored under the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FinishData {
    /// Department deactivations (deepest first), when not held.
    pub(crate) departments: Vec<DepartmentItem>,
    /// User deactivations, when not held.
    pub(crate) users: Vec<UserItem>,
    /// The units of the fan-out, with their titles.
    pub(crate) units: Vec<(Uuid, String)>,
    /// Deactivations the plan's guards held (written once, here, rather than read back from the
    /// report, which has several writers).
    #[serde(default)]
    pub(crate) held: Option<orgsync_model::plan::Held>,
    /// The snapshot's counts: the next run's baseline once this run is trusted.
    pub(crate) counts: Option<SourceCounts>,
    /// Whether the counts may become the baseline (no partial read, no source drop).
    pub(crate) counts_trusted: bool,
}

/// A department job's result, stored under the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DepartmentResult {
    /// Users written per action (from the provisioning log's entries).
    #[serde(default)]
    pub(crate) achieved: orgsync_model::plan::ActionCounts,
    pub(crate) written: u64,
    pub(crate) unchanged: u64,
    pub(crate) rejected: Vec<crate::report::RejectedObject>,
}

/// Told when a run ends (and when an ended run changes its final state: a replay that turns
/// `partly_failed` into `succeeded`, a release). Support tickets and alerts hang here. Called
/// on its own task: a slow or failing observer never delays or fails a job.
#[async_trait::async_trait]
pub trait RunObserver: Send + Sync + std::fmt::Debug + 'static {
    /// `report` has just reached a final state (or changed from one final state to another).
    async fn run_ended(&self, report: &RunReport);
}

/// The run-state store of one queue.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    pub(crate) queue: QueueHandle,
    pub(crate) report_retention: Duration,
    pub(crate) data_ttl: Duration,
    pub(crate) observer: Option<std::sync::Arc<dyn RunObserver>>,
}

/// Decodes stored JSON; data that does not decode (written by another version, damaged) is an
/// error naming what it was, never mistaken for absent data.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, QueueError> {
    serde_json::from_slice(bytes)
        .map_err(|e| QueueError::Protocol(format!("the stored {what} cannot be read: {e}")))
}

fn lock_name(cvr: &str) -> String {
    format!("run-lock:{cvr}")
}

impl Store {
    /// Tells the observer (if any) that `report` ended, on its own task.
    pub(crate) fn notify_ended(&self, report: &RunReport) {
        if let Some(observer) = self.observer.clone() {
            let report = report.clone();
            tokio::spawn(async move { observer.run_ended(&report).await });
        }
    }

    pub(crate) async fn save_report(&self, report: &RunReport) -> Result<(), QueueError> {
        let json = serde_json::to_string(report).unwrap_or_default();
        self.queue
            .put_record(
                RUNS,
                &report.run_id,
                &report.cvr,
                &json,
                self.report_retention,
            )
            .await
    }

    pub(crate) async fn report(&self, run_id: &str) -> Result<Option<RunReport>, QueueError> {
        self.queue
            .get_record(RUNS, run_id)
            .await?
            .map(|json| decode(json.as_bytes(), &format!("report of run {run_id}")))
            .transpose()
    }

    pub(crate) async fn reports(
        &self,
        cvr: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunReport>, QueueError> {
        Ok(self
            .queue
            .list_records(RUNS, cvr, limit)
            .await?
            .iter()
            .filter_map(
                |json| match decode::<RunReport>(json.as_bytes(), "run report") {
                    Ok(report) => Some(report),
                    Err(e) => {
                        tracing::warn!("a run report is left out of the list: {e}");
                        None
                    }
                },
            )
            .collect())
    }

    pub(crate) async fn try_lock(
        &self,
        cvr: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, QueueError> {
        self.queue.try_lock(&lock_name(cvr), owner, ttl).await
    }

    pub(crate) async fn extend_lock(
        &self,
        cvr: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        self.queue.extend_lock(&lock_name(cvr), owner, ttl).await
    }

    pub(crate) async fn release_lock(&self, cvr: &str, owner: &str) -> Result<bool, QueueError> {
        self.queue.release_lock(&lock_name(cvr), owner).await
    }

    /// The customer's run lock shared by a group (a run's replays), `holder` one of them.
    pub(crate) async fn try_shared_lock(
        &self,
        cvr: &str,
        group: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LockAttempt, QueueError> {
        self.queue
            .try_shared_lock(&lock_name(cvr), group, holder, ttl)
            .await
    }

    pub(crate) async fn extend_shared_lock(
        &self,
        cvr: &str,
        group: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        self.queue
            .extend_shared_lock(&lock_name(cvr), group, holder, ttl)
            .await
    }

    pub(crate) async fn release_shared_lock(
        &self,
        cvr: &str,
        group: &str,
        holder: &str,
    ) -> Result<orgsync_queue::SharedRelease, QueueError> {
        self.queue
            .release_shared_lock(&lock_name(cvr), group, holder)
            .await
    }

    pub(crate) async fn lock_owner(&self, cvr: &str) -> Result<Option<String>, QueueError> {
        self.queue.lock_owner(&lock_name(cvr)).await
    }

    /// The customer's newest started run.
    pub(crate) async fn current_run(&self, cvr: &str) -> Result<Option<String>, QueueError> {
        Ok(self
            .queue
            .get_value(&format!("current-run:{cvr}"))
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub(crate) async fn set_current_run(&self, cvr: &str, run_id: &str) -> Result<(), QueueError> {
        self.queue
            .put_value(&format!("current-run:{cvr}"), run_id.as_bytes(), None)
            .await
    }

    /// The last trusted run's source counts (the source-drop guard's baseline).
    pub(crate) async fn last_counts(&self, cvr: &str) -> Result<Option<SourceCounts>, QueueError> {
        self.queue
            .get_value(&format!("last-counts:{cvr}"))
            .await?
            .map(|v| decode(&v, &format!("source counts of {cvr}")))
            .transpose()
    }

    /// The target (for people: `the SQLite file PATH`) the customer's runs last wrote to, as
    /// the run that opened it recorded: the baseline's counts are about that target.
    pub(crate) async fn baseline_target(&self, cvr: &str) -> Result<Option<String>, QueueError> {
        Ok(self
            .queue
            .get_value(&format!("baseline-target:{cvr}"))
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub(crate) async fn set_baseline_target(
        &self,
        cvr: &str,
        target: &str,
    ) -> Result<(), QueueError> {
        self.queue
            .put_value(&format!("baseline-target:{cvr}"), target.as_bytes(), None)
            .await
    }

    /// Forgets the baseline: the next run is a first run again (`runs accept-empty`).
    pub(crate) async fn clear_last_counts(&self, cvr: &str) -> Result<(), QueueError> {
        self.queue.delete_value(&format!("last-counts:{cvr}")).await
    }

    pub(crate) async fn set_last_counts(
        &self,
        cvr: &str,
        counts: &SourceCounts,
    ) -> Result<(), QueueError> {
        let json = serde_json::to_vec(counts).unwrap_or_default();
        self.queue
            .put_value(&format!("last-counts:{cvr}"), &json, None)
            .await
    }

    pub(crate) async fn put_slices(
        &self,
        run_id: &str,
        slices: &[(String, Vec<u8>)],
    ) -> Result<(), QueueError> {
        self.queue
            .put_map_fields(&format!("run-slices:{run_id}"), slices, self.data_ttl)
            .await
    }

    pub(crate) async fn slice(
        &self,
        run_id: &str,
        unit: Uuid,
    ) -> Result<Option<Vec<UserItem>>, QueueError> {
        self.queue
            .get_map_field(&format!("run-slices:{run_id}"), &unit.to_string())
            .await?
            .map(|v| decode(&v, &format!("plan of department {unit} in run {run_id}")))
            .transpose()
    }

    /// The department jobs of a run: unit → job id.
    pub(crate) async fn put_department_jobs(
        &self,
        run_id: &str,
        jobs: &[(String, Vec<u8>)],
    ) -> Result<(), QueueError> {
        self.queue
            .put_map_fields(&format!("run-jobs:{run_id}"), jobs, self.data_ttl)
            .await
    }

    pub(crate) async fn department_job(
        &self,
        run_id: &str,
        unit: Uuid,
    ) -> Result<Option<String>, QueueError> {
        Ok(self
            .queue
            .get_map_field(&format!("run-jobs:{run_id}"), &unit.to_string())
            .await?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub(crate) async fn put_finish(
        &self,
        run_id: &str,
        data: &FinishData,
    ) -> Result<(), QueueError> {
        let json = serde_json::to_vec(data).unwrap_or_default();
        self.queue
            .put_value(&format!("run-finish:{run_id}"), &json, Some(self.data_ttl))
            .await
    }

    pub(crate) async fn finish(&self, run_id: &str) -> Result<Option<FinishData>, QueueError> {
        self.queue
            .get_value(&format!("run-finish:{run_id}"))
            .await?
            .map(|v| decode(&v, &format!("deactivations of run {run_id}")))
            .transpose()
    }

    /// The run's department tree (what the dashboard draws), kept as long as the run's data.
    pub(crate) async fn put_tree(
        &self,
        run_id: &str,
        tree: &[orgsync_model::plan::TreeDepartment],
    ) -> Result<(), QueueError> {
        let json = serde_json::to_vec(tree).unwrap_or_default();
        self.queue
            .put_value(&format!("run-tree:{run_id}"), &json, Some(self.data_ttl))
            .await
    }

    pub(crate) async fn tree(
        &self,
        run_id: &str,
    ) -> Result<Option<Vec<orgsync_model::plan::TreeDepartment>>, QueueError> {
        self.queue
            .get_value(&format!("run-tree:{run_id}"))
            .await?
            .map(|v| decode(&v, &format!("department tree of run {run_id}")))
            .transpose()
    }

    pub(crate) async fn put_result(
        &self,
        run_id: &str,
        unit: Uuid,
        result: &DepartmentResult,
    ) -> Result<(), QueueError> {
        let json = serde_json::to_vec(result).unwrap_or_default();
        self.queue
            .put_map_fields(
                &format!("run-results:{run_id}"),
                &[(unit.to_string(), json)],
                self.data_ttl,
            )
            .await
    }

    /// How many departments of the run have stored their result (written their users).
    pub(crate) async fn results_count(&self, run_id: &str) -> Result<u64, QueueError> {
        self.queue.map_len(&format!("run-results:{run_id}")).await
    }

    pub(crate) async fn result(
        &self,
        run_id: &str,
        unit: Uuid,
    ) -> Result<Option<DepartmentResult>, QueueError> {
        self.queue
            .get_map_field(&format!("run-results:{run_id}"), &unit.to_string())
            .await?
            .map(|v| decode(&v, &format!("result of department {unit} in run {run_id}")))
            .transpose()
    }
}

impl Store {
    /// Writes a new report unless one exists (two schedulers enqueueing the same fire).
    pub(crate) async fn create_report(&self, report: &RunReport) -> Result<(), QueueError> {
        self.with_report_lock(&report.run_id, async {
            if self.report(&report.run_id).await?.is_none() {
                self.save_report(report).await?;
            }
            Ok(())
        })
        .await
    }

    async fn with_report_lock<T>(
        &self,
        run_id: &str,
        work: impl std::future::Future<Output = Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        let name = format!("report-lock:{run_id}");
        let owner = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .queue
                .try_lock(&name, &owner, Duration::from_secs(30))
                .await?
            {
                LockAttempt::Acquired => break,
                LockAttempt::Held { .. } if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // A writer that died holding the lock: its 30 s expired or will; write anyway.
                LockAttempt::Held { .. } => break,
            }
        }
        let result = work.await;
        let _ = self.queue.release_lock(&name, &owner).await;
        result
    }

    /// Read-modify-write of a report under a short lock, for writers that may race (a replayed
    /// department job, `FinishRun`, a release). Returns the updated report, or `None` when the
    /// run is unknown.
    pub(crate) async fn update_report(
        &self,
        run_id: &str,
        change: impl FnOnce(&mut RunReport),
    ) -> Result<Option<RunReport>, QueueError> {
        self.with_report_lock(run_id, async {
            let Some(mut report) = self.report(run_id).await? else {
                return Ok(None);
            };
            let before = report.state;
            change(&mut report);
            self.save_report(&report).await?;
            if report.state != before && report.state.is_final() {
                self.notify_ended(&report);
            }
            Ok(Some(report))
        })
        .await
    }
}
