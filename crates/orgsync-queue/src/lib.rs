//! orgsync-queue: a persistent job queue on apalis 1.0 and Redis Streams — enqueue (with
//! idempotency keys and run-after times), batches with a completion job, workers with
//! retries and backoff, a dead-letter queue, an error log, replay and delete (audited),
//! stats, and a small run-state store (locks, values, maps, records). No other orgsync crate is
//! needed or known here; Redis key names stay private to this crate.
//!
//! ```no_run
//! use apalis::prelude::*;
//! use orgsync_queue::{Job, JobContext, JobError, NewJob, QueueConfig, QueueHandle, WorkerOptions};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct SyncCustomer { cvr: String }
//! impl Job for SyncCustomer { const JOB_TYPE: &'static str = "sync_customer"; }
//!
//! async fn sync_customer(job: SyncCustomer, ctx: JobContext) -> Result<(), JobError> {
//!     let _ = (job.cvr, ctx.attempt);
//!     Ok(())
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let queue = QueueHandle::connect(QueueConfig::new("redis://127.0.0.1:6379", "orgsync")).await?;
//! queue.enqueue(NewJob::new(&SyncCustomer { cvr: "29189846".into() })?
//!     .customer("29189846")
//!     .idempotency_key("sync:2026-11-22:29189846")).await?;
//!
//! let q = queue.clone();
//! Monitor::new()
//!     .register(move |_restarts| {
//!         let backend = q.backend::<SyncCustomer>(WorkerOptions::default());
//!         WorkerBuilder::new(backend.worker_name().to_owned())
//!             .backend(backend)
//!             .concurrency(8)
//!             .build(sync_customer)
//!     })
//!     .run_with_signal(orgsync_queue::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

mod backend;
mod batch;
pub mod cli;
mod client;
mod config;
mod connection;
mod dashboard;
mod error;
mod keys;
pub mod metrics;
mod model;
mod object_log;
#[cfg(test)]
mod script_tests;
mod scripts;
mod state;

pub use backend::{QueueBackend, QueueLayer, QueueService, manual_signal, shutdown_signal};
pub use batch::{BatchEnqueued, BatchStatus, NewBatch};
pub use client::{QueueHandle, current_user};
pub use config::{Backoff, QueueConfig, RedisTopology, RetryPolicy, SHUTDOWN_POLL, WorkerOptions};
pub use dashboard::{AuditPage, DeadLetterFacets, DeadLetterPage, Facet, HourCount};
pub use error::{BoxDynError, JobError, QueueError, class, mask_url};
pub use model::{
    ATTEMPT_DURATION_BUCKETS_MS, AttemptRecord, AuditEntry, DeadLetterFilter, DeathNotice,
    DurationHistogram, Enqueued, ErrorLogEntry, ErrorLogQuery, Job, JobContext, JobId, JobRecord,
    JobState, JobTypeStats, NewJob, QueueStats, Replayed, WorkerInfo,
};
pub use object_log::{ObjectLogEntry, StoredLogEntry};
pub use state::{LockAttempt, SharedRelease};
