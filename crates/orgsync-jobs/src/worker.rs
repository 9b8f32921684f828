//! `orgsync worker`: one apalis worker per job type, with the pipeline as shared data and a retry
//! policy per job type.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use orgsync_queue::{DeathNotice, JobContext, JobError, RetryPolicy, WorkerOptions};

use crate::pipeline::Pipeline;
use crate::{FinishRun, SyncCustomer, SyncDepartment};

/// How many jobs of each type one worker process runs at once, and their retry policies.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// `SyncCustomer` jobs at once (each reads a whole municipality; default 2).
    pub customers: usize,
    /// `SyncDepartment` jobs at once (default 8).
    pub departments: usize,
    /// `FinishRun` jobs at once (default 2).
    pub finishes: usize,
    /// Queue options for `SyncCustomer` (default: 5 attempts, 1 min then ×4: an STS outage
    /// of about 1.5 hours is waited out). A `SyncCustomer` is cancelled when the worker stops
    /// (its STS read with it) and handed back without spending an attempt
    /// (`cancel_on_shutdown`): a read may take many minutes, and another worker starts it
    /// over under the same run (it takes the run's lock again).
    pub customer_options: WorkerOptions,
    /// Queue options for `SyncDepartment` (default: 6 attempts, 30 s then ×2: the longest
    /// wait, 8 min, stays well inside the run lock's hour).
    pub department_options: WorkerOptions,
    /// Queue options for `FinishRun` (default: 8 attempts, 10 s then ×2).
    pub finish_options: WorkerOptions,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        let jitter = |d: u64| Duration::from_secs(d);
        WorkerSettings {
            customers: 2,
            departments: 8,
            finishes: 2,
            customer_options: WorkerOptions::default()
                .retry(RetryPolicy::exponential(
                    5,
                    Duration::from_secs(60),
                    4.0,
                    jitter(15),
                ))
                .cancel_on_shutdown(true),
            department_options: WorkerOptions::default().retry(RetryPolicy::exponential(
                6,
                Duration::from_secs(30),
                2.0,
                jitter(10),
            )),
            finish_options: WorkerOptions::default().retry(RetryPolicy::exponential(
                8,
                Duration::from_secs(10),
                2.0,
                jitter(5),
            )),
        }
    }
}

impl WorkerSettings {
    /// Short queue intervals and quick retries, for tests.
    pub fn fast_for_tests() -> WorkerSettings {
        let fast = WorkerOptions::fast_for_tests();
        WorkerSettings {
            customer_options: fast.clone().cancel_on_shutdown(true),
            department_options: fast.clone(),
            finish_options: fast,
            ..WorkerSettings::default()
        }
    }
}

async fn sync_customer(
    job: SyncCustomer,
    ctx: JobContext,
    pipeline: Data<Arc<Pipeline>>,
) -> Result<(), JobError> {
    pipeline.sync_customer(job, ctx).await
}

async fn sync_department(
    job: SyncDepartment,
    ctx: JobContext,
    pipeline: Data<Arc<Pipeline>>,
) -> Result<(), JobError> {
    pipeline.sync_department(job, ctx).await
}

async fn finish_run(
    job: FinishRun,
    ctx: JobContext,
    pipeline: Data<Arc<Pipeline>>,
) -> Result<(), JobError> {
    pipeline.finish_run(job, ctx).await
}

async fn death_notice(
    notice: DeathNotice,
    _ctx: JobContext,
    pipeline: Data<Arc<Pipeline>>,
) -> Result<(), JobError> {
    pipeline.job_died(notice).await
}

/// Runs the workers (one per job type, and one for the queue's death notices) until `shutdown`
/// resolves; running jobs finish first (their results are recorded), except a running
/// `SyncCustomer`, which is cancelled (its STS read stops) and handed back, and fetched jobs
/// that did not start are handed back.
pub async fn run(
    pipeline: Arc<Pipeline>,
    settings: WorkerSettings,
    shutdown: impl Future<Output = std::io::Result<()>> + Send + 'static,
) -> Result<(), WorkerError> {
    let queue = pipeline.queue().clone();
    let (q1, q2, q3, q4) = (queue.clone(), queue.clone(), queue.clone(), queue);
    let (p1, p2, p3, p4) = (
        pipeline.clone(),
        pipeline.clone(),
        pipeline.clone(),
        pipeline,
    );
    let s = Arc::new(settings);
    let (s1, s2, s3, s4) = (s.clone(), s.clone(), s.clone(), s);
    Monitor::new()
        .register(move |_restarts| {
            let backend = q1.backend::<SyncCustomer>(s1.customer_options.clone());
            WorkerBuilder::new(backend.worker_name().to_owned())
                .backend(backend)
                .concurrency(s1.customers.max(1))
                .data(p1.clone())
                .build(sync_customer)
        })
        .register(move |_restarts| {
            let backend = q2.backend::<SyncDepartment>(s2.department_options.clone());
            WorkerBuilder::new(backend.worker_name().to_owned())
                .backend(backend)
                .concurrency(s2.departments.max(1))
                .data(p2.clone())
                .build(sync_department)
        })
        .register(move |_restarts| {
            let backend = q3.backend::<FinishRun>(s3.finish_options.clone());
            WorkerBuilder::new(backend.worker_name().to_owned())
                .backend(backend)
                .concurrency(s3.finishes.max(1))
                .data(p3.clone())
                .build(finish_run)
        })
        .register(move |_restarts| {
            // Ending a run whose SyncCustomer or FinishRun died is quick Redis work; the
            // finish options' retries cover a Redis hiccup.
            let backend = q4.backend::<DeathNotice>(s4.finish_options.clone());
            WorkerBuilder::new(backend.worker_name().to_owned())
                .backend(backend)
                .concurrency(1)
                .data(p4.clone())
                .build(death_notice)
        })
        .run_with_signal(shutdown)
        .await
        .map_err(|e| WorkerError(e.to_string()))
}

/// The workers stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("the workers stopped: {0}")]
pub struct WorkerError(String);
