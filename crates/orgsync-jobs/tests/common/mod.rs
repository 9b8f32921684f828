//! The pipeline's test app: real Redis (own key prefix), the STS simulator in-process, an SQLite
//! target in a temporary directory (behind a wrapper that can fail one department's writes with a
//! 401, as a target that revoked our token would), and a worker running the real handlers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orgsync_jobs::pipeline::{Pipeline, PipelineOptions};
use orgsync_jobs::report::{RunReport, Trigger};
use orgsync_jobs::sources::{
    Customer, ProgressSender, ReadProgress, SourceError, SourceRead, Sources,
};
use orgsync_jobs::worker::WorkerSettings;
use orgsync_model::ids::{Cvr, UnitId, UserId};
use orgsync_model::plan::{DepartmentItem, UserItem};
use orgsync_model::policy::Policy;
use orgsync_model::snapshot::Snapshot;
use orgsync_model::target::{TargetDepartment, TargetState, TargetUser};
use orgsync_model::testing::{small_tree, snapshot, unit, user as sts_user};
use orgsync_queue::{QueueConfig, QueueHandle};
use orgsync_sts::client::StsClient;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts_sim::server::{SimOptions, Simulator};
use orgsync_target::scim::{ScimOptions, ScimTarget};
use orgsync_target::sqlite::{SqliteOptions, SqliteTarget};
use orgsync_target::testing::ScimServer;
use orgsync_target::{Capabilities, Health, Target, TargetError, WriteOutcome};
use secrecy::SecretString;

pub const CVR: &str = "11111111";

pub fn cvr() -> Cvr {
    Cvr::parse(CVR).unwrap()
}

/// A target that fails every user write whose primary department is the armed unit.
#[derive(Debug)]
pub struct FaultyTarget {
    pub inner: Arc<dyn Target>,
    pub fail_department: Mutex<Option<UnitId>>,
    pub fail_deactivations: std::sync::atomic::AtomicBool,
    pub reject_deactivations: std::sync::atomic::AtomicBool,
    /// Every user write fails with a 401 (the target revoked our token): every department
    /// job of a run dies.
    pub fail_users: std::sync::atomic::AtomicBool,
    /// Added to every user write (a slow target keeps a run going for a while).
    pub write_delay: Mutex<Duration>,
}

#[async_trait]
impl Target for FaultyTarget {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn health(&self) -> Result<Health, TargetError> {
        self.inner.health().await
    }
    async fn read_state(&self) -> Result<TargetState, TargetError> {
        self.inner.read_state().await
    }
    async fn find_user(
        &self,
        external_id: UserId,
        user_name: &str,
    ) -> Result<Option<TargetUser>, TargetError> {
        self.inner.find_user(external_id, user_name).await
    }
    async fn find_department(
        &self,
        external_id: UnitId,
    ) -> Result<Option<TargetDepartment>, TargetError> {
        self.inner.find_department(external_id).await
    }
    async fn write_department(&self, item: &DepartmentItem) -> Result<WriteOutcome, TargetError> {
        self.inner.write_department(item).await
    }
    async fn write_user(&self, item: &UserItem) -> Result<WriteOutcome, TargetError> {
        if item.action == orgsync_model::plan::Action::Deactivate
            && self
                .fail_deactivations
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(TargetError::Unauthorized {
                status: 403,
                detail: "deactivations refused (test fault)".to_owned(),
            });
        }
        if item.action == orgsync_model::plan::Action::Deactivate
            && self
                .reject_deactivations
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(TargetError::Rejected {
                object: item.fields.user_name.clone(),
                status: 409,
                scim_type: Some("mutability".to_owned()),
                detail: "this user is locked by an administrator (test fault)".to_owned(),
            });
        }
        let delay = *self.write_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let armed = *self.fail_department.lock().unwrap();
        let all = self.fail_users.load(std::sync::atomic::Ordering::SeqCst);
        if all || (armed.is_some() && armed == item.fields.primary_department) {
            return Err(TargetError::Unauthorized {
                status: 401,
                detail: "token revoked (test fault)".to_owned(),
            });
        }
        self.inner.write_user(item).await
    }
    async fn set_memberships(
        &self,
        user: UserId,
        departments: &BTreeSet<UnitId>,
    ) -> Result<WriteOutcome, TargetError> {
        self.inner.set_memberships(user, departments).await
    }
}

#[derive(Debug)]
pub struct TestSources {
    pub policy: Mutex<Policy>,
    pub sts: ClientOptions,
    pub target: Arc<FaultyTarget>,
}

#[async_trait]
impl Sources for TestSources {
    fn customer(&self, cvr: &Cvr) -> Option<Customer> {
        let policy = self.policy.lock().unwrap().clone();
        (cvr == &policy.cvr).then(|| Customer {
            cvr: cvr.clone(),
            name: "Test Kommune".to_owned(),
            policy,
        })
    }

    fn customers(&self) -> Vec<Cvr> {
        vec![self.policy.lock().unwrap().cvr.clone()]
    }

    async fn read_snapshot(&self, cvr: &Cvr) -> Result<SourceRead, SourceError> {
        let (progress, _) = tokio::sync::watch::channel(ReadProgress::default());
        self.read_snapshot_with_progress(cvr, progress).await
    }

    async fn read_snapshot_with_progress(
        &self,
        cvr: &Cvr,
        progress: ProgressSender,
    ) -> Result<SourceRead, SourceError> {
        let client = StsClient::new(cvr.clone(), &self.sts, SystemLimits::new(0.0)).unwrap();
        let read = client
            .read_snapshot_observed(|p| {
                progress.send_replace(ReadProgress {
                    calls: p.calls,
                    objects: p.objects,
                    remaining_estimate: p.remaining_estimate,
                    paging: p.paging,
                    done: p.done,
                });
            })
            .await
            .map_err(|e| SourceError {
                class: e.class(),
                retriable: e.is_retriable(),
                retry_not_before: None,
                message: e.to_string(),
                sts_failure: client.failed_call().map(Box::new),
            })?;
        Ok(SourceRead {
            snapshot: read.snapshot,
            calls: read.calls,
            issues: read.issues.iter().map(ToString::to_string).collect(),
        })
    }

    async fn target(&self, _cvr: &Cvr) -> Result<Arc<dyn Target>, SourceError> {
        Ok(self.target.clone())
    }
}

/// Records every ended run the pipeline reports (what support tickets receive).
#[derive(Debug, Default)]
pub struct RecordingObserver(pub Mutex<Vec<RunReport>>);

#[async_trait]
impl orgsync_jobs::RunObserver for RecordingObserver {
    async fn run_ended(&self, report: &RunReport) {
        self.0.lock().unwrap().push(report.clone());
    }
}

/// A running worker (`orgsync_jobs::worker::run`).
type WorkerHandle = tokio::task::JoinHandle<Result<(), orgsync_jobs::worker::WorkerError>>;

pub struct TestApp {
    pub observed: Arc<RecordingObserver>,
    pub queue: QueueHandle,
    sqlite: Option<SqliteTarget>,
    pub scim: Option<ScimServer>,
    pub sim: Simulator,
    pub sources: Arc<TestSources>,
    pub pipeline: Arc<Pipeline>,
    stop: Option<Box<dyn FnOnce() + Send>>,
    worker: Option<tokio::task::JoinHandle<Result<(), orgsync_jobs::worker::WorkerError>>>,
    /// Further workers (as in further worker processes), from `add_workers`.
    extra_workers: Vec<(Box<dyn FnOnce() + Send>, WorkerHandle)>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// An app writing to an SQLite target.
    pub async fn start(snapshot: Snapshot, policy: Policy) -> TestApp {
        Self::start_on(snapshot, policy, false).await
    }

    /// An app writing to a real scim2-server.
    pub async fn start_scim(snapshot: Snapshot, policy: Policy) -> TestApp {
        Self::start_on(snapshot, policy, true).await
    }

    async fn start_on(snapshot: Snapshot, policy: Policy, scim: bool) -> TestApp {
        Self::start_with(
            snapshot,
            policy,
            scim,
            QueueConfig::new("redis://127.0.0.1:6379", ""),
        )
        .await
    }

    /// An app writing to an SQLite target, with its queue on the Redis `redis` describes
    /// (Sentinel, Cluster); the key prefix is the test's own.
    pub async fn start_on_redis(snapshot: Snapshot, policy: Policy, redis: QueueConfig) -> TestApp {
        Self::start_with(snapshot, policy, false, redis).await
    }

    async fn start_with(
        snapshot: Snapshot,
        policy: Policy,
        scim: bool,
        mut redis: QueueConfig,
    ) -> TestApp {
        redis.key_prefix = format!("test-jobs-{}", uuid::Uuid::new_v4().simple());
        let queue = QueueHandle::connect(redis).await.unwrap();
        let sim = Simulator::start(vec![snapshot], SimOptions::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (inner, sqlite, scim): (Arc<dyn Target>, _, _) = if scim {
            let server = ScimServer::start(CVR).await;
            let options = ScimOptions::new(
                server.base_url.parse().unwrap(),
                SecretString::from(orgsync_target::testing::TOKEN.to_owned()),
                cvr(),
                policy.mappings,
            );
            (
                Arc::new(ScimTarget::new(options).unwrap()),
                None,
                Some(server),
            )
        } else {
            let sqlite = SqliteTarget::open(SqliteOptions {
                path: dir.path().join("target.sqlite"),
                cvr: cvr(),
                mappings: policy.mappings,
            })
            .await
            .unwrap();
            (Arc::new(sqlite.clone()), Some(sqlite), None)
        };
        let sts = ClientOptions {
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            call_timeout: Duration::from_secs(20),
            max_attempts: 2,
            ..ClientOptions::for_sim(sim.base_url())
        };
        let sources = Arc::new(TestSources {
            policy: Mutex::new(policy),
            sts,
            target: Arc::new(FaultyTarget {
                inner,
                fail_department: Mutex::new(None),
                fail_deactivations: std::sync::atomic::AtomicBool::new(false),
                reject_deactivations: std::sync::atomic::AtomicBool::new(false),
                fail_users: std::sync::atomic::AtomicBool::new(false),
                write_delay: Mutex::new(Duration::ZERO),
            }),
        });
        let observed = Arc::new(RecordingObserver::default());
        let pipeline = Pipeline::with_observer(
            queue.clone(),
            sources.clone(),
            PipelineOptions {
                progress_interval: Duration::from_millis(100),
                busy_snooze: Duration::from_millis(200),
                ..PipelineOptions::default()
            },
            Some(observed.clone()),
        );
        let (signal, stop) = orgsync_queue::manual_signal();
        let worker = tokio::spawn(orgsync_jobs::worker::run(
            pipeline.clone(),
            WorkerSettings::fast_for_tests(),
            signal,
        ));
        TestApp {
            observed,
            queue,
            sqlite,
            scim,
            sim,
            sources,
            pipeline,
            stop: Some(Box::new(stop)),
            worker: Some(worker),
            extra_workers: Vec::new(),
            _dir: dir,
        }
    }

    /// Starts `n` more workers on the same queue and pipeline (as more worker processes
    /// would), each with the default settings' concurrency per job type.
    pub fn add_workers(&mut self, n: usize) {
        for _ in 0..n {
            let (signal, stop) = orgsync_queue::manual_signal();
            let worker = tokio::spawn(orgsync_jobs::worker::run(
                self.pipeline.clone(),
                WorkerSettings::fast_for_tests(),
                signal,
            ));
            self.extra_workers.push((Box::new(stop), worker));
        }
    }

    /// Every user write fails (401) while `fail` holds.
    pub fn fail_users(&self, fail: bool) {
        self.sources
            .target
            .fail_users
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// The SQLite target's file (for changes "by hand").
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self._dir.path().join("target.sqlite")
    }

    pub fn sqlite(&self) -> &SqliteTarget {
        self.sqlite.as_ref().expect("an SQLite app")
    }

    pub fn fail_department(&self, unit: Option<UnitId>) {
        *self.sources.target.fail_department.lock().unwrap() = unit;
    }

    pub fn fail_deactivations(&self, fail: bool) {
        self.sources
            .target
            .fail_deactivations
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn reject_deactivations(&self, reject: bool) {
        self.sources
            .target
            .reject_deactivations
            .store(reject, std::sync::atomic::Ordering::SeqCst);
    }

    /// Delays every user write by `delay`.
    pub fn slow_writes(&self, delay: Duration) {
        *self.sources.target.write_delay.lock().unwrap() = delay;
    }

    pub fn set_policy(&self, change: impl FnOnce(&mut Policy)) {
        change(&mut self.sources.policy.lock().unwrap());
    }

    /// Enqueues a run and waits until it has ended.
    pub async fn sync(&self) -> RunReport {
        let run = self
            .pipeline
            .enqueue_run(
                CVR,
                Trigger::Manual {
                    by: "test".to_owned(),
                },
                Duration::ZERO,
            )
            .await
            .unwrap();
        self.wait(&run.run_id).await
    }

    pub async fn wait(&self, run_id: &str) -> RunReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let report = self.pipeline.report(run_id).await.unwrap();
            // Ended, and its lock released (FinishRun writes the report just before that).
            if report.state.is_final()
                && self
                    .pipeline
                    .active_run(&report.cvr)
                    .await
                    .unwrap()
                    .as_deref()
                    != Some(run_id)
            {
                return report;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not end within 60 s: {}",
                report.to_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The run's report once `done` holds for it (a replay works in the background).
    pub async fn report_when(&self, run_id: &str, done: impl Fn(&RunReport) -> bool) -> RunReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let report = self.pipeline.report(run_id).await.unwrap();
            if done(&report) {
                return report;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the report never got there: {}",
                report.to_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn state(&self) -> TargetState {
        self.sources.target.inner.read_state().await.unwrap()
    }

    /// Tells the worker to stop (as SIGTERM does) and waits until it has; returns how long
    /// that took.
    pub async fn stop_worker(&mut self) -> Duration {
        let started = std::time::Instant::now();
        if let Some(stop) = self.stop.take() {
            stop();
        }
        if let Some(worker) = self.worker.take() {
            worker.await.unwrap().unwrap();
        }
        started.elapsed()
    }

    /// Starts a new worker (after [`TestApp::stop_worker`]).
    pub fn start_worker(&mut self) {
        let (signal, stop) = orgsync_queue::manual_signal();
        self.worker = Some(tokio::spawn(orgsync_jobs::worker::run(
            self.pipeline.clone(),
            WorkerSettings::fast_for_tests(),
            signal,
        )));
        self.stop = Some(Box::new(stop));
    }

    /// Stops the worker and deletes the test's keys.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
        let extra: Vec<_> = self.extra_workers.drain(..).collect();
        let mut joins = Vec::new();
        for (stop, worker) in extra {
            stop();
            joins.push(worker);
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
        for worker in joins {
            let _ = worker.await;
        }
        self.queue.purge_all_keys().await.unwrap();
    }
}

/// Kommune (1) with Økonomi (2), Skole (3), Kantine (4) under Skole, and Arkiv (5); six
/// people, Eva outside the customer's domains.
pub fn fixture() -> Snapshot {
    let mut units = small_tree();
    units.push(unit(5, "Arkiv", Some(1)));
    snapshot(
        units,
        vec![
            sts_user(1, "Anne Hansen", "anne@kommune.dk", &[2]),
            sts_user(2, "Bo Jensen", "bo@kommune.dk", &[3]),
            sts_user(3, "Carl Nielsen", "carl@kommune.dk", &[4]),
            sts_user(4, "Dorthe Berg", "dorthe@kommune.dk", &[3, 2]),
            sts_user(5, "Eva Lund", "eva@andet-firma.dk", &[4]),
            sts_user(6, "Finn Holm", "finn@kommune.dk", &[5]),
        ],
    )
}

/// A user in the target, by external id.
pub fn user(state: &TargetState, id: UserId) -> Option<&TargetUser> {
    state.users.iter().find(|u| u.external_id == Some(id))
}

/// A department in the target, by external id.
pub fn department(state: &TargetState, id: UnitId) -> Option<&TargetDepartment> {
    state.departments.iter().find(|d| d.external_id == Some(id))
}
