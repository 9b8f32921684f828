//! Batches (fan-in): children enqueued together and one completion job that the queue
//! enqueues exactly once, inside the same script that makes the last child terminal.
//!
//! The countdown lives in the Lua helper `batch_terminal` (`src/scripts.rs`), which every
//! path that makes a job `succeeded` or `dead` calls. A child counts once: only a removal
//! from the batch's pending set counts, so a replayed child (a new job, never a member) or
//! a second terminal report cannot count again.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::client::{QueueHandle, ScriptJob};
use crate::error::QueueError;
use crate::model::{JobId, NewJob, parse_ms};
use crate::scripts;

/// A batch to enqueue: children, and the job to run once every child is terminal
/// (succeeded, or dead for any reason).
#[derive(Debug, Clone)]
pub struct NewBatch {
    /// The caller's id, e.g. the run id; unique per batch. A second `enqueue_batch` with
    /// the same id (within `retention`) enqueues nothing.
    pub id: String,
    /// The children; may be empty.
    pub children: Vec<NewJob>,
    /// Enqueued exactly once when every child is terminal (at once when there are none).
    pub on_complete: NewJob,
    /// How long the batch record is kept after creation (every batch key expires then; a
    /// child that finishes later does not count down any more).
    pub retention: Duration,
}

/// What [`QueueHandle::enqueue_batch`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchEnqueued {
    /// False: a batch with this id already existed, nothing was enqueued.
    pub created: bool,
    /// The children's job ids, in the order given (the existing ones when `!created`). A
    /// child whose idempotency key was held has the holder's id.
    pub children: Vec<JobId>,
    /// The batch right after the call.
    pub status: BatchStatus,
}

/// A batch's progress.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchStatus {
    /// The caller's id.
    pub id: String,
    /// Distinct child jobs.
    pub total: u64,
    /// Children not yet terminal.
    pub pending: u64,
    /// Children that succeeded.
    pub succeeded: u64,
    /// Children that were dead-lettered, in order of death.
    pub dead: Vec<JobId>,
    /// The completion job once enqueued.
    pub completion_job: Option<JobId>,
    /// When the batch was enqueued.
    pub created_at: DateTime<Utc>,
    /// When the last child became terminal (and the completion job was enqueued).
    pub completed_at: Option<DateTime<Utc>>,
}

/// The completion job as stored on the batch: enqueued later, by whichever script makes
/// the last child terminal, with the idempotency TTL in force now.
#[derive(Serialize)]
struct StoredCompletion<'a> {
    #[serde(flatten)]
    job: ScriptJob<'a>,
    idem_ttl: u64,
}

impl QueueHandle {
    /// Enqueues a batch in one atomic script call, however many children (~4,300 tested).
    ///
    /// If batch `id` exists, returns it (`created: false`) and enqueues nothing, so a
    /// retried parent job never duplicates children. Otherwise enqueues every child
    /// (recording the batch id on its job), stores the batch with every child pending and
    /// stores `on_complete`; with no children, `on_complete` is enqueued at once.
    ///
    /// A child whose idempotency key is already held joins as the job holding it: counted
    /// at once as succeeded when that job succeeded, as dead when it is dead, replayed or
    /// no longer stored, else pending (and from now on a child of this batch). When the
    /// holder is still pending in another batch the call fails with
    /// [`QueueError::BatchConflict`] and writes nothing: a job belongs to one batch.
    pub async fn enqueue_batch(&self, batch: NewBatch) -> Result<BatchEnqueued, QueueError> {
        if batch.id.is_empty() {
            return Err(QueueError::InvalidName {
                kind: "batch",
                name: batch.id,
                rule: "must not be empty",
            });
        }
        let idem_ttl = self.idempotency_ttl_ms();
        let children: Vec<ScriptJob<'_>> = batch.children.iter().map(ScriptJob::new).collect();
        let encode = |e: serde_json::Error| QueueError::Protocol(format!("encoding batch: {e}"));
        let children_json = serde_json::to_string(&children).map_err(encode)?;
        let completion_json = serde_json::to_string(&StoredCompletion {
            job: ScriptJob::new(&batch.on_complete),
            idem_ttl,
        })
        .map_err(encode)?;
        let retention = u64::try_from(batch.retention.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut conn = self.conn.clone();
        let (outcome, ids): (String, Vec<String>) = scripts::ENQUEUE_BATCH
            .key(self.keys.types())
            .arg(self.keys.prefix())
            .arg(idem_ttl)
            .arg(&batch.id)
            .arg(retention)
            .arg(children_json)
            .arg(completion_json)
            .invoke_async(&mut conn)
            .await?;
        let created = match outcome.as_str() {
            "created" => true,
            "exists" => false,
            "conflict" => {
                let mut ids = ids.into_iter();
                return Err(QueueError::BatchConflict {
                    batch: batch.id,
                    job_id: ids.next().unwrap_or_default(),
                    other_batch: ids.next().unwrap_or_default(),
                });
            }
            other => {
                return Err(QueueError::Protocol(format!(
                    "enqueue_batch replied {other}"
                )));
            }
        };
        let status = self.batch(&batch.id).await?.ok_or_else(|| {
            QueueError::Protocol(format!(
                "batch {} expired right after it was enqueued (retention {:?})",
                batch.id, batch.retention
            ))
        })?;
        Ok(BatchEnqueued {
            created,
            children: ids.into_iter().map(JobId::new).collect(),
            status,
        })
    }

    /// A batch's progress; `None` when there is no such batch (or it is past its retention).
    pub async fn batch(&self, id: &str) -> Result<Option<BatchStatus>, QueueError> {
        let mut conn = self.conn.clone();
        let (hash, pending, dead): (HashMap<String, String>, u64, Vec<String>) = redis::pipe()
            .atomic()
            .hgetall(self.keys.batch(id))
            .scard(self.keys.batch_pending(id))
            .lrange(self.keys.batch_dead(id), 0, -1)
            .query_async(&mut conn)
            .await?;
        if hash.is_empty() {
            return Ok(None);
        }
        let number = |k: &str| hash.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let created_at = hash
            .get("created_at")
            .and_then(|t| parse_ms(t))
            .ok_or_else(|| QueueError::Protocol(format!("batch {id} has no creation time")))?;
        Ok(Some(BatchStatus {
            id: id.to_owned(),
            total: number("total"),
            pending,
            succeeded: number("succeeded"),
            dead: dead.into_iter().map(JobId::new).collect(),
            completion_job: hash.get("completion_job").cloned().map(JobId::new),
            created_at,
            completed_at: hash.get("completed_at").and_then(|t| parse_ms(t)),
        }))
    }
}
