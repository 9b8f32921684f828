//! `QueueBackend<J>`: an apalis 1.0 `Backend` on Redis Streams with a consumer group, plus
//! the tower layer that records each job's outcome (success, retry, dead letter).
//!
//! Per worker there are five background tasks: the fetcher (one Lua call per batch, into a
//! bounded channel the worker polls), the starter (records, batched, that handlers begin:
//! only a started job counts as orphaned when its worker dies), the acker (batches outcomes
//! into one Lua call), the heartbeat (keeps the worker's pending entries fresh), and
//! maintenance (promotes due retries in chunks, takes over jobs of dead workers, prunes
//! history). Redis errors in any of them are logged and retried with backoff; the worker
//! itself never dies of them.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::prelude::{Extensions, Task, TaskBuilder, TaskId, WorkerContext};
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::AsyncCommands;
use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tower::{Layer, Service};

use crate::client::QueueHandle;
use crate::config::{SHUTDOWN_POLL, WorkerOptions};
use crate::error::{BoxDynError, JobError, QueueError, class, classify};
use crate::keys::GROUP;
use crate::model::{AttemptRecord, Job, JobContext, JobId, now_ms, parse_ms};
use crate::scripts;

const ACK_BATCH: usize = 256;
const PROMOTE_PER_CALL: u32 = 5_000;
const RECLAIM_PER_CALL: u32 = 200;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The apalis backend for job type `J`. Make one per worker (per process start) with
/// [`QueueHandle::backend`]; its name is unique, use it for the `WorkerBuilder`.
pub struct QueueBackend<J> {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Task<J>>,
    tx: Option<mpsc::Sender<Task<J>>>,
    ack_rx: Option<mpsc::Receiver<AckRequest>>,
    start_rx: Option<mpsc::Receiver<StartRequest>>,
    stop_tx: watch::Sender<bool>,
    fetcher: Option<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, ()>>,
    _job: PhantomData<J>,
}

impl<J> std::fmt::Debug for QueueBackend<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBackend")
            .field("job_type", &self.shared.job_type)
            .field("worker", &self.shared.consumer)
            .finish()
    }
}

struct Shared {
    handle: QueueHandle,
    options: WorkerOptions,
    job_type: &'static str,
    consumer: String,
    /// Stream entries this worker holds (fetched, not yet acknowledged): entry id -> job id.
    inflight: Mutex<HashMap<String, String>>,
    ack_tx: mpsc::Sender<AckRequest>,
    start_tx: mpsc::Sender<StartRequest>,
    wake: Notify,
    /// Since when this worker has reached Redis without an error (`None`: failing now).
    /// It takes over other workers' jobs only after reaching Redis for `orphan_after`, so
    /// that live workers coming back from the same outage have sent a heartbeat first.
    redis_ok_since: Mutex<Option<Instant>>,
}

#[derive(Debug, Serialize)]
struct Outcome {
    jid: String,
    eid: String,
    ok: bool,
    started_at: String,
    finished_at: String,
    attempt: u32,
    class: String,
    message: String,
    retry_ms: i64,
    /// `>= 0`: a snooze of this many ms (not a failure; `retry_ms` unused).
    snooze_ms: i64,
    log: String,
}

struct AckRequest {
    outcome: Outcome,
    reply: oneshot::Sender<String>,
}

struct StartRequest {
    eid: String,
    jid: String,
    /// `ok`, or `stale` when the entry is no longer this worker's.
    reply: oneshot::Sender<String>,
}

struct Fetched {
    eid: String,
    jid: String,
    payload: String,
    attempts: u32,
    customer: Option<String>,
    replay_of: Option<String>,
    enqueued_at: Option<DateTime<Utc>>,
    batch: Option<String>,
    snoozed_ms: u64,
}

impl<J: Job> QueueBackend<J> {
    pub(crate) fn new(handle: QueueHandle, options: WorkerOptions) -> Self {
        let capacity = options.prefetch.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (ack_tx, ack_rx) = mpsc::channel(ACK_BATCH * 4);
        let (start_tx, start_rx) = mpsc::channel(ACK_BATCH * 4);
        let (stop_tx, _) = watch::channel(false);
        let consumer = format!(
            "{}-{}-{}-{}",
            host_name(),
            std::process::id(),
            J::JOB_TYPE,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            shared: Arc::new(Shared {
                handle,
                options,
                job_type: J::JOB_TYPE,
                consumer,
                inflight: Mutex::new(HashMap::new()),
                ack_tx,
                start_tx,
                wake: Notify::new(),
                redis_ok_since: Mutex::new(Some(Instant::now())),
            }),
            rx,
            tx: Some(tx),
            ack_rx: Some(ack_rx),
            start_rx: Some(start_rx),
            stop_tx,
            fetcher: None,
            closing: None,
            _job: PhantomData,
        }
    }

    /// The unique worker name (host, pid, job type, random suffix).
    pub fn worker_name(&self) -> &str {
        &self.shared.consumer
    }

    fn start(&mut self) {
        let (Some(tx), Some(ack_rx), Some(start_rx)) =
            (self.tx.take(), self.ack_rx.take(), self.start_rx.take())
        else {
            return;
        };
        *self
            .shared
            .redis_ok_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        tracing::info!(
            worker.name = %self.shared.consumer,
            job.type = self.shared.job_type,
            "worker {} started for job type {}",
            self.shared.consumer,
            self.shared.job_type
        );
        tokio::spawn(ack_loop(AckContext::new(&self.shared), ack_rx));
        tokio::spawn(start_loop(AckContext::new(&self.shared), start_rx));
        tokio::spawn(heartbeat_loop(
            self.shared.clone(),
            self.stop_tx.subscribe(),
        ));
        tokio::spawn(maintenance_loop(
            self.shared.clone(),
            self.stop_tx.subscribe(),
        ));
        self.fetcher = Some(tokio::spawn(fetch_loop::<J>(
            self.shared.clone(),
            tx,
            self.stop_tx.subscribe(),
        )));
    }
}

impl<J> Drop for QueueBackend<J> {
    fn drop(&mut self) {
        let _ = self.stop_tx.send(true);
    }
}

impl<J: Job> Backend for QueueBackend<J> {
    type Task = Task<J>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.tx.is_some() {
            self.start();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.rx.poll_recv(cx).map(|task| task.map(Ok))
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            let _ = self.stop_tx.send(true);
            self.rx.close();
            let fetcher = self.fetcher.take();
            let shared = self.shared.clone();
            self.closing = Some(Box::pin(async move {
                if let Some(fetcher) = fetcher {
                    let _ = fetcher.await;
                }
                shared.hand_back_and_leave().await;
            }));
        }
        match self.closing.as_mut() {
            Some(fut) => fut.as_mut().poll(cx).map(|()| Ok(())),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<J: Job> BackendConfig for QueueBackend<J> {
    type Args = J;
    type Id = String;
    type Kind = Ephemeral;
    type Config = WorkerOptions;
    type Layer = QueueLayer;

    fn config(&self) -> &Self::Config {
        &self.shared.options
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        QueueLayer {
            shared: self.shared.clone(),
            worker: worker.clone(),
        }
    }
}

/// Tower layer the backend puts around the worker's service: records every outcome in
/// Redis (acknowledge, schedule the retry, or dead-letter) before the job counts as done.
#[derive(Clone)]
pub struct QueueLayer {
    shared: Arc<Shared>,
    worker: WorkerContext,
}

impl std::fmt::Debug for QueueLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueLayer")
            .field("worker", &self.shared.consumer)
            .finish()
    }
}

impl<S> Layer<S> for QueueLayer {
    type Service = QueueService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QueueService {
            inner,
            shared: self.shared.clone(),
            worker: self.worker.clone(),
        }
    }
}

/// The service made by [`QueueLayer`].
#[derive(Clone)]
pub struct QueueService<S> {
    inner: S,
    shared: Arc<Shared>,
    worker: WorkerContext,
}

impl<S> std::fmt::Debug for QueueService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueService")
            .field("worker", &self.shared.consumer)
            .finish()
    }
}

impl<S, J> Service<Task<J>> for QueueService<S>
where
    S: Service<Task<J>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxDynError> + Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let job = task.data().get::<JobContext>().cloned();
        // One span per job (an error tracker's transaction): everything the handler logs
        // carries the job, its customer and its run.
        let span = match &job {
            Some(job) => tracing::info_span!(
                "job",
                job.id = %job.job_id,
                job.type = job.job_type,
                job.attempt = job.attempt,
                customer.cvr = job.customer.as_deref().unwrap_or(""),
                run.id = job.run_id.as_deref().unwrap_or(""),
            ),
            None => tracing::Span::none(),
        };
        let fut = span.in_scope(|| self.inner.call(task));
        let shared = self.shared.clone();
        let worker = self.worker.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                if let Some(job) = &job
                    && !shared.start(job).await
                {
                    // Taken over by another worker meanwhile (or this worker is stopping): the
                    // handler does not run here and no outcome is recorded.
                    let error = JobError::message(
                        "not_started",
                        true,
                        format!(
                            "job {} was not started by worker {}",
                            job.job_id, job.worker
                        ),
                    );
                    return Err(Box::new(error) as BoxDynError);
                }
                let started = Utc::now();
                let handler = AssertUnwindSafe(fut).catch_unwind();
                let result = if shared.options.cancel_on_shutdown {
                    tokio::select! {
                        result = handler => result,
                        () = stopping(&worker) => {
                            // The handler's future is dropped here: what it was doing stops.
                            // No outcome is recorded: the entry stays this worker's until
                            // `poll_close` hands it back, with no attempt spent.
                            if let Some(job) = &job {
                                tracing::info!(
                                    job.id = %job.job_id,
                                    job.type = job.job_type,
                                    "job {} ({}) was cancelled because the worker stops; it is handed back to the queue",
                                    job.job_id,
                                    job.job_type
                                );
                            }
                            let error = JobError::message(
                                "job.interrupted",
                                true,
                                "cancelled because the worker stops; handed back",
                            );
                            return Err(Box::new(error) as BoxDynError);
                        }
                    }
                } else {
                    handler.await
                };
                let finished = Utc::now();
                let (failure, ret) = match result {
                    Ok(Ok(response)) => (None, Ok(response)),
                    Ok(Err(e)) => {
                        let e: BoxDynError = e.into();
                        (Some(classify(&e)), Err(e))
                    }
                    Err(panic) => {
                        let text = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".to_owned());
                        let error = JobError::message(
                            class::PANICKED,
                            true,
                            format!("handler panicked: {text}"),
                        );
                        (Some(error.clone()), Err(Box::new(error) as BoxDynError))
                    }
                };
                if let Some(job) = job {
                    shared
                        .complete(&job, started, finished, failure.as_ref())
                        .await;
                }
                ret
            },
            span,
        ))
    }
}

/// Resolves once `worker` is told to stop (checked every [`SHUTDOWN_POLL`]).
async fn stopping(worker: &WorkerContext) {
    while !worker.is_shutting_down() {
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
}

impl Shared {
    fn inflight(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records in Redis that the handler of `job` begins, and waits until Redis has it.
    /// False when the entry is no longer this worker's (the handler must not run) or the
    /// worker is stopping.
    async fn start(&self, job: &JobContext) -> bool {
        let (reply, answer) = oneshot::channel();
        let request = StartRequest {
            eid: job.entry_id.clone(),
            jid: job.job_id.to_string(),
            reply,
        };
        if self.start_tx.send(request).await.is_err() {
            return false;
        }
        match answer.await.as_deref() {
            Ok("ok") => true,
            Ok(_) => {
                tracing::warn!(
                    worker.name = %self.consumer,
                    job.id = %job.job_id,
                    "job {} was taken over by another worker before it started here; not running it",
                    job.job_id
                );
                self.inflight().remove(&job.entry_id);
                false
            }
            Err(_) => false,
        }
    }

    fn redis_ok(&self) {
        let mut since = self
            .redis_ok_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.is_none() {
            *since = Some(Instant::now());
        }
    }

    fn redis_failed(&self) {
        *self
            .redis_ok_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Whether this worker has reached Redis without an error for at least `orphan_after`.
    fn may_take_over(&self) -> bool {
        self.redis_ok_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|since| since.elapsed() >= self.options.orphan_after)
    }

    /// Records one outcome and waits until Redis has it.
    async fn complete(
        &self,
        job: &JobContext,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        failure: Option<&JobError>,
    ) {
        // A snooze within the job type's limit waits without spending an attempt; beyond the
        // limit it is an ordinary failed attempt that says so.
        let over_limit;
        let mut snooze = None;
        let failure = match failure {
            Some(error) => match error.snooze_for() {
                Some(delay) if job.snoozed + delay <= self.options.max_snooze => {
                    snooze = Some(delay);
                    Some(error)
                }
                Some(_) => {
                    over_limit = error.snooze_limit_reached(job.snoozed, self.options.max_snooze);
                    Some(&over_limit)
                }
                None => Some(error),
            },
            None => None,
        };
        if let (Some(delay), Some(error)) = (snooze, failure) {
            let mut outcome = self.failure_outcome(job, started, finished, error, -1);
            outcome.snooze_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            tracing::info!(
                job.id = %job.job_id,
                job.type = job.job_type,
                customer.cvr = job.customer.as_deref().unwrap_or(""),
                run.id = job.run_id.as_deref().unwrap_or(""),
                job.attempt = job.attempt,
                error.class = error.class(),
                "job {} ({}) is snoozed for {delay:?} without spending attempt {} (waited {:?} in snoozes before): {error}",
                job.job_id,
                job.job_type,
                job.attempt,
                job.snoozed
            );
            self.send_outcome(outcome).await;
            return;
        }
        let outcome = match failure {
            None => Outcome {
                jid: job.job_id.to_string(),
                eid: job.entry_id.clone(),
                ok: true,
                started_at: started.timestamp_millis().to_string(),
                finished_at: finished.timestamp_millis().to_string(),
                attempt: job.attempt,
                class: String::new(),
                message: String::new(),
                retry_ms: -1,
                snooze_ms: -1,
                log: String::new(),
            },
            Some(error) => {
                let retry_ms = if error.is_retriable() && job.attempt < job.max_attempts {
                    let delay = self
                        .options
                        .retry
                        .delay_after(job.attempt)
                        .max(error.retry_not_before().unwrap_or_default());
                    i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
                } else {
                    -1
                };
                self.failure_outcome(job, started, finished, error, retry_ms)
            }
        };
        let state = if outcome.ok {
            "succeeded"
        } else if outcome.retry_ms >= 0 {
            "retry"
        } else {
            "dead"
        };
        match failure {
            Some(error) if state == "dead" => tracing::warn!(
                job.id = %job.job_id,
                job.type = job.job_type,
                customer.cvr = job.customer.as_deref().unwrap_or(""),
                run.id = job.run_id.as_deref().unwrap_or(""),
                job.attempt = job.attempt,
                error.class = error.class(),
                "job {} ({}) failed on attempt {} and went to the dead-letter queue: {error}",
                job.job_id,
                job.job_type,
                job.attempt
            ),
            Some(error) => tracing::info!(
                job.id = %job.job_id,
                job.type = job.job_type,
                customer.cvr = job.customer.as_deref().unwrap_or(""),
                run.id = job.run_id.as_deref().unwrap_or(""),
                job.attempt = job.attempt,
                error.class = error.class(),
                "job {} ({}) failed on attempt {}, will retry: {error}",
                job.job_id,
                job.job_type,
                job.attempt
            ),
            None => {}
        }
        self.send_outcome(outcome).await;
    }

    fn failure_outcome(
        &self,
        job: &JobContext,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        error: &JobError,
        retry_ms: i64,
    ) -> Outcome {
        let record = AttemptRecord {
            attempt: job.attempt,
            started_at: started,
            finished_at: finished,
            class: error.class().to_owned(),
            retriable: error.is_retriable(),
            message: error.summary().to_owned(),
            chain: error.chain().to_vec(),
            worker: self.consumer.clone(),
        };
        Outcome {
            jid: job.job_id.to_string(),
            eid: job.entry_id.clone(),
            ok: false,
            started_at: started.timestamp_millis().to_string(),
            finished_at: finished.timestamp_millis().to_string(),
            attempt: job.attempt,
            class: error.class().to_owned(),
            message: error.chain().join(": "),
            retry_ms,
            snooze_ms: -1,
            log: serde_json::to_string(&record).unwrap_or_default(),
        }
    }

    async fn send_outcome(&self, outcome: Outcome) {
        let eid = outcome.eid.clone();
        let (reply, answer) = oneshot::channel();
        if self
            .ack_tx
            .send(AckRequest { outcome, reply })
            .await
            .is_err()
        {
            tracing::error!(
                worker.name = %self.consumer,
                "the result recorder of worker {} has stopped; the job will be taken over by another worker",
                self.consumer
            );
            return;
        }
        if let Ok(state) = answer.await
            && state == "stale"
        {
            tracing::warn!(
                worker.name = %self.consumer,
                "entry {eid} was taken over by another worker before its result was recorded; result dropped"
            );
        }
        self.inflight().remove(&eid);
    }

    async fn register(&self) -> Result<(), QueueError> {
        let keys = &self.handle.keys;
        let mut conn = self.handle.conn.clone();
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.stream(self.job_type))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created
            && e.code() != Some("BUSYGROUP")
        {
            return Err(e.into());
        }
        let now = now_ms();
        let heartbeat_ms =
            i64::try_from(self.options.heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
        let _: () = redis::pipe()
            .hset_multiple(
                keys.worker(&self.consumer),
                &[
                    ("type", self.job_type.to_owned()),
                    ("pid", std::process::id().to_string()),
                    ("host", host_name()),
                    ("started_at", now.to_string()),
                    ("heartbeat_ms", heartbeat_ms.to_string()),
                ],
            )
            .ignore()
            .sadd(keys.types(), self.job_type)
            .ignore()
            .zadd(keys.workers(), &self.consumer, now)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn fetch(&self, count: usize) -> Result<Vec<Fetched>, QueueError> {
        let mut conn = self.handle.conn.clone();
        let reply: Vec<String> = scripts::FETCH
            .key(self.handle.keys.types())
            .arg(self.handle.keys.prefix())
            .arg(self.job_type)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(count)
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::new();
        if reply.first().map(String::as_str) != Some("jobs") {
            return Ok(out);
        }
        for row in reply[1..].chunks(9) {
            let [
                eid,
                jid,
                payload,
                attempts,
                customer,
                replay_of,
                enqueued_at,
                batch,
                snoozed_ms,
            ] = row
            else {
                return Err(QueueError::Protocol("short fetch row".into()));
            };
            out.push(Fetched {
                eid: eid.clone(),
                jid: jid.clone(),
                payload: payload.clone(),
                attempts: attempts.parse().unwrap_or(0),
                customer: Some(customer.clone()).filter(|c| !c.is_empty()),
                replay_of: Some(replay_of.clone()).filter(|r| !r.is_empty()),
                enqueued_at: parse_ms(enqueued_at),
                batch: Some(batch.clone()).filter(|b| !b.is_empty()),
                snoozed_ms: snoozed_ms.parse().unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn context(&self, row: &Fetched) -> JobContext {
        JobContext {
            job_id: JobId::new(row.jid.clone()),
            job_type: self.job_type,
            attempt: row.attempts.saturating_add(1),
            max_attempts: self.options.retry.max_attempts.max(1),
            customer: row.customer.clone(),
            replay_of: row.replay_of.clone().map(JobId::new),
            batch: row.batch.clone(),
            enqueued_at: row.enqueued_at.unwrap_or_else(Utc::now),
            run_id: None,
            snoozed: Duration::from_millis(row.snoozed_ms),
            worker: self.consumer.clone(),
            entry_id: row.eid.clone(),
        }
    }

    async fn heartbeat(&self) -> Result<(), QueueError> {
        let eids: Vec<String> = self.inflight().keys().cloned().collect();
        let mut conn = self.handle.conn.clone();
        let mut call = scripts::HEARTBEAT.prepare_invoke();
        call.key(self.handle.keys.types())
            .arg(self.handle.keys.prefix())
            .arg(self.job_type)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(u64::try_from(self.options.orphan_after.as_millis()).unwrap_or(u64::MAX));
        for eid in &eids {
            call.arg(eid);
        }
        let kept: usize = call.invoke_async(&mut conn).await?;
        if kept < eids.len() {
            tracing::debug!(
                worker.name = %self.consumer,
                "{} of {} held entries were finished or taken over meanwhile",
                eids.len() - kept,
                eids.len()
            );
        }
        Ok(())
    }

    async fn promote(&self) -> Result<u64, QueueError> {
        let mut conn = self.handle.conn.clone();
        let moved: u64 = scripts::PROMOTE
            .key(self.handle.keys.types())
            .arg(self.handle.keys.prefix())
            .arg(self.job_type)
            .arg(PROMOTE_PER_CALL)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved)
    }

    async fn reclaim(&self) -> Result<u64, QueueError> {
        let mut conn = self.handle.conn.clone();
        let mut cursor = "0-0".to_owned();
        let mut total = 0u64;
        for _ in 0..50 {
            let (next, requeued, dead): (String, u64, u64) = scripts::RECLAIM
                .key(self.handle.keys.types())
                .arg(self.handle.keys.prefix())
                .arg(self.job_type)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(u64::try_from(self.options.orphan_after.as_millis()).unwrap_or(u64::MAX))
                .arg(self.options.max_orphaned.max(1))
                .arg(RECLAIM_PER_CALL)
                .arg(self.handle.config.error_log_max_len)
                .arg(&cursor)
                .invoke_async(&mut conn)
                .await?;
            if requeued + dead > 0 {
                tracing::warn!(
                    job.type = self.job_type,
                    "took over {requeued} jobs of workers that stopped sending heartbeats; {dead} of them went to the dead-letter queue as abandoned"
                );
            }
            total += requeued;
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        Ok(total)
    }

    async fn prune(&self) -> Result<(), QueueError> {
        let keys = &self.handle.keys;
        let mut conn = self.handle.conn.clone();
        let now = now_ms();
        let retention =
            i64::try_from(self.handle.config.succeeded_retention.as_millis()).unwrap_or(i64::MAX);
        let _: u64 = conn
            .zrembyscore(
                keys.succeeded(self.job_type),
                "-inf",
                now.saturating_sub(retention),
            )
            .await?;
        // Forget workers silent for an hour, once no entry is pending for them.
        let silent: Vec<String> = conn
            .zrangebyscore(keys.workers(), "-inf", now - 3_600_000)
            .await?;
        for name in silent {
            let worker_type: Option<String> = conn.hget(keys.worker(&name), "type").await?;
            if worker_type.as_deref().is_some_and(|t| t != self.job_type) {
                continue;
            }
            let pending: redis::streams::StreamPendingCountReply = conn
                .xpending_consumer_count(keys.stream(self.job_type), GROUP, "-", "+", 1, &name)
                .await?;
            if pending.ids.is_empty() {
                let _: redis::RedisResult<u64> = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(keys.stream(self.job_type))
                    .arg(GROUP)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await;
                let _: () = redis::pipe()
                    .zrem(keys.workers(), &name)
                    .ignore()
                    .del(keys.worker(&name))
                    .ignore()
                    .query_async(&mut conn)
                    .await?;
            }
        }
        Ok(())
    }

    async fn hand_back_and_leave(&self) {
        let held: Vec<(String, String)> = self
            .inflight()
            .iter()
            .map(|(e, j)| (e.clone(), j.clone()))
            .collect();
        let mut delay = Duration::from_millis(100);
        for _ in 0..5 {
            let mut conn = self.handle.conn.clone();
            let mut call = scripts::HAND_BACK.prepare_invoke();
            call.key(self.handle.keys.types())
                .arg(self.handle.keys.prefix())
                .arg(self.job_type)
                .arg(GROUP)
                .arg(&self.consumer);
            for (eid, jid) in &held {
                call.arg(eid).arg(jid);
            }
            match call.invoke_async::<u64>(&mut conn).await {
                Ok(n) => {
                    tracing::info!(
                        worker.name = %self.consumer,
                        "worker {} stopped; handed back {n} jobs it had not started",
                        self.consumer
                    );
                    self.inflight().clear();
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        worker.name = %self.consumer,
                        "could not hand back {} jobs on shutdown, retrying in {delay:?}: {e}",
                        held.len()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
        tracing::warn!(
            worker.name = %self.consumer,
            "gave up handing back {} jobs; live workers will take them over after {:?}",
            held.len(),
            self.options.orphan_after
        );
    }
}

/// What the acker needs; it holds no `Arc<Shared>` so it ends when the last sender goes.
struct AckContext {
    handle: QueueHandle,
    job_type: &'static str,
    consumer: String,
}

impl AckContext {
    fn new(shared: &Shared) -> Self {
        Self {
            handle: shared.handle.clone(),
            job_type: shared.job_type,
            consumer: shared.consumer.clone(),
        }
    }
}

async fn ack_loop(ctx: AckContext, mut rx: mpsc::Receiver<AckRequest>) {
    let retention =
        u64::try_from(ctx.handle.config.succeeded_retention.as_millis()).unwrap_or(u64::MAX);
    let mut batch: Vec<AckRequest> = Vec::with_capacity(ACK_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < ACK_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // Successes go as plain arguments (cheap for Lua), failures as one JSON array;
        // replies come back successes first.
        let (successes, failures): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| batch[i].outcome.ok);
        let failed: Vec<&Outcome> = failures.iter().map(|&i| &batch[i].outcome).collect();
        let json = match serde_json::to_string(&failed) {
            Ok(json) => json,
            Err(e) => {
                tracing::error!("could not encode job results: {e}");
                batch.clear();
                continue;
            }
        };
        let mut delay = Duration::from_millis(100);
        let replies: Vec<String> = loop {
            let mut conn = ctx.handle.conn.clone();
            let mut call = scripts::COMPLETE.prepare_invoke();
            call.key(ctx.handle.keys.types())
                .arg(ctx.handle.keys.prefix())
                .arg(ctx.job_type)
                .arg(GROUP)
                .arg(&ctx.consumer)
                .arg(retention.max(1))
                .arg(ctx.handle.config.error_log_max_len)
                .arg(&json);
            for &i in &successes {
                let o = &batch[i].outcome;
                call.arg(&o.jid)
                    .arg(&o.eid)
                    .arg(&o.started_at)
                    .arg(&o.finished_at)
                    .arg(if o.attempt > 1 { "1" } else { "0" });
            }
            let result: redis::RedisResult<Vec<String>> = call.invoke_async(&mut conn).await;
            match result {
                Ok(replies) => break replies,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // The stream or its group is gone (deleted, or Redis restarted without
                    // persistence): there is nothing left to acknowledge.
                    tracing::error!(
                        worker.name = %ctx.consumer,
                        "could not record the results of {} jobs: the stream of job type {} no longer exists",
                        batch.len(),
                        ctx.job_type
                    );
                    break vec!["stale".to_owned(); batch.len()];
                }
                Err(e) => {
                    tracing::warn!(
                        worker.name = %ctx.consumer,
                        "could not record the results of {} jobs in Redis, retrying in {delay:?}: {e}",
                        batch.len()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        };
        let mut answers: Vec<String> = vec![String::new(); batch.len()];
        for (&i, reply) in successes.iter().chain(failures.iter()).zip(replies) {
            answers[i] = reply;
        }
        for (request, answer) in batch.drain(..).zip(answers) {
            let _ = request.reply.send(answer);
        }
    }
}

async fn start_loop(ctx: AckContext, mut rx: mpsc::Receiver<StartRequest>) {
    let mut batch: Vec<StartRequest> = Vec::with_capacity(ACK_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < ACK_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut delay = Duration::from_millis(100);
        let replies: Vec<String> = loop {
            let mut conn = ctx.handle.conn.clone();
            let mut call = scripts::START.prepare_invoke();
            call.key(ctx.handle.keys.types())
                .arg(ctx.handle.keys.prefix())
                .arg(ctx.job_type)
                .arg(GROUP)
                .arg(&ctx.consumer);
            for request in &batch {
                call.arg(&request.eid).arg(&request.jid);
            }
            let result: redis::RedisResult<Vec<String>> = call.invoke_async(&mut conn).await;
            match result {
                Ok(replies) => break replies,
                Err(e) if e.code() == Some("NOGROUP") => {
                    break vec!["stale".to_owned(); batch.len()];
                }
                Err(e) => {
                    tracing::warn!(
                        worker.name = %ctx.consumer,
                        "could not record the start of {} jobs in Redis, retrying in {delay:?}: {e}",
                        batch.len()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        };
        for (request, reply) in batch.drain(..).zip(replies) {
            let _ = request.reply.send(reply);
        }
    }
}

async fn fetch_loop<J: Job>(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Task<J>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = Duration::from_millis(100);
    let mut registered = false;
    let mut failing = false;
    loop {
        if *stop.borrow() {
            break;
        }
        if !registered {
            match shared.register().await {
                Ok(()) => registered = true,
                Err(e) => {
                    shared.redis_failed();
                    log_redis_trouble(&shared, &mut failing, delay, &e);
                    if sleep_or_stop(delay, &mut stop).await {
                        break;
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let permit = tokio::select! {
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let want = (1 + tx.capacity()).min(shared.options.prefetch.max(1));
        let rows = match shared.fetch(want).await {
            Ok(rows) => rows,
            Err(e) => {
                drop(permit);
                if let QueueError::Redis(re) = &e
                    && re.code() == Some("NOGROUP")
                {
                    registered = false;
                    continue;
                }
                shared.redis_failed();
                log_redis_trouble(&shared, &mut failing, delay, &e);
                if sleep_or_stop(delay, &mut stop).await {
                    break;
                }
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        shared.redis_ok();
        if failing {
            tracing::info!(
                worker.name = %shared.consumer,
                "worker {} reached Redis again and resumes",
                shared.consumer
            );
            failing = false;
        }
        delay = Duration::from_millis(100);
        if rows.is_empty() {
            drop(permit);
            tokio::select! {
                () = tokio::time::sleep(shared.options.idle_poll) => {}
                () = shared.wake.notified() => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        {
            let mut inflight = shared.inflight();
            for row in &rows {
                inflight.insert(row.eid.clone(), row.jid.clone());
            }
        }
        let mut permit = Some(permit);
        for row in rows {
            let mut ctx = shared.context(&row);
            match serde_json::from_str::<J>(&row.payload) {
                Ok(args) => {
                    ctx.run_id = args.run_id();
                    let mut data = Extensions::new();
                    data.insert(ctx);
                    let task = TaskBuilder::new(args)
                        .task_id(TaskId::from_string(row.jid.clone()))
                        .attempt(usize::try_from(row.attempts).unwrap_or(usize::MAX))
                        .with_data(data)
                        .build();
                    match permit.take() {
                        Some(permit) => permit.send(task),
                        None => {
                            // The worker is closing: the entry stays in `inflight` and is
                            // handed back by `poll_close`.
                            let _ = tx.send(task).await;
                        }
                    }
                }
                Err(e) => {
                    let error = JobError::permanent(
                        class::UNDECODABLE,
                        format!(
                            "payload of job {} does not deserialise as job type `{}` (Rust type `{}`): {e}",
                            row.jid,
                            J::JOB_TYPE,
                            std::any::type_name::<J>()
                        ),
                    );
                    let now = Utc::now();
                    let outcome = shared.failure_outcome(&ctx, now, now, &error, -1);
                    tracing::warn!(
                        job.id = %row.jid,
                        job.type = J::JOB_TYPE,
                        error.class = class::UNDECODABLE,
                        "job {} went to the dead-letter queue: {error}",
                        row.jid
                    );
                    shared.send_outcome(outcome).await;
                }
            }
        }
    }
}

fn log_redis_trouble(shared: &Shared, failing: &mut bool, delay: Duration, e: &QueueError) {
    if *failing {
        tracing::debug!(worker.name = %shared.consumer, "Redis still unavailable: {e}");
    } else {
        tracing::warn!(
            worker.name = %shared.consumer,
            "worker {} cannot reach Redis at {}, retrying every {delay:?} up to {MAX_BACKOFF:?}: {e}",
            shared.consumer,
            shared.handle.redis_url_masked()
        );
        *failing = true;
    }
}

/// Sleeps; returns true when asked to stop meanwhile.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if sleep_or_stop(shared.options.heartbeat_interval, &mut stop).await {
            break;
        }
        match shared.heartbeat().await {
            Ok(()) => shared.redis_ok(),
            Err(e) => {
                shared.redis_failed();
                tracing::debug!(worker.name = %shared.consumer, "heartbeat failed: {e}");
            }
        }
    }
}

async fn maintenance_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let start = tokio::time::Instant::now();
    let mut next_reclaim = start + shared.options.reclaim_interval;
    let mut next_prune = start;
    loop {
        match shared.promote().await {
            Ok(moved) => {
                shared.redis_ok();
                if moved > 0 {
                    shared.wake.notify_one();
                }
            }
            Err(e) => {
                shared.redis_failed();
                tracing::debug!(worker.name = %shared.consumer, "promoting due jobs failed: {e}")
            }
        }
        let now = tokio::time::Instant::now();
        if now >= next_reclaim && shared.may_take_over() {
            next_reclaim = now + shared.options.reclaim_interval;
            match shared.reclaim().await {
                Ok(n) if n > 0 => shared.wake.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(worker.name = %shared.consumer, "taking over orphaned jobs failed: {e}")
                }
            }
        }
        if now >= next_prune {
            next_prune = now + PRUNE_EVERY;
            if let Err(e) = shared.prune().await {
                tracing::debug!(worker.name = %shared.consumer, "pruning history failed: {e}");
            }
        }
        if sleep_or_stop(shared.options.promote_interval, &mut stop).await {
            break;
        }
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
        .replace(
            |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'),
            "_",
        )
}

/// Waits for SIGTERM or Ctrl-C; pass to `Monitor::run_with_signal` so workers finish their
/// running jobs and hand back the ones they fetched but did not start.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// A future that resolves when `stop` is called; handy for tests and embedded use.
pub fn manual_signal() -> (
    impl Future<Output = std::io::Result<()>> + Send,
    impl FnOnce(),
) {
    let (tx, rx) = oneshot::channel::<()>();
    let fut = async move {
        let _ = rx.await;
        Ok(())
    };
    (fut, move || {
        let _ = tx.send(());
    })
}
