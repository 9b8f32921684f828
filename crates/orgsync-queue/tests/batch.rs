//! Batches against the Redis at 127.0.0.1:6379: the completion job runs exactly once, after
//! every child is terminal, whatever way each child ended. The SIGKILL test re-invokes this
//! test executable as the worker to kill (`ORGSYNC_QUEUE_BATCH_CHILD_PREFIX` set).

// Helpers outside #[test] functions unwrap too: a panic is the failure message here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{REDIS_URL, TestQueue, wait_until};
use orgsync_queue::{
    BatchStatus, Job, JobContext, JobError, JobId, JobState, NewBatch, NewJob, QueueConfig,
    QueueError, QueueHandle, RetryPolicy, WorkerOptions, class,
};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "ORGSYNC_QUEUE_BATCH_CHILD_PREFIX";
const CHILD_TEST: &str = "child_worker_entry_point_runs_only_when_spawned_by_the_batch_kill_test";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Department {
    n: u32,
}
impl Job for Department {
    const JOB_TYPE: &'static str = "batch_department";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FinishRun {
    run: String,
}
impl Job for FinishRun {
    const JOB_TYPE: &'static str = "batch_finish_run";
}

/// What the handlers saw.
#[derive(Default)]
struct Seen {
    /// Children whose handler reached a terminal outcome (success or permanent failure).
    terminal: AtomicUsize,
    /// Failed attempts that were retried.
    retried: AtomicUsize,
    /// Per completion run: how many children were terminal when it started.
    completions: Mutex<Vec<usize>>,
    /// The batch ids the children saw in their context.
    batches: Mutex<HashSet<Option<String>>>,
}

fn department(n: u32) -> NewJob {
    NewJob::new(&Department { n }).unwrap()
}

fn finish(run: &str) -> NewJob {
    NewJob::new(&FinishRun { run: run.into() }).unwrap()
}

fn batch(id: &str, children: Vec<NewJob>) -> NewBatch {
    NewBatch {
        id: id.into(),
        children,
        on_complete: finish(id),
        retention: Duration::from_secs(3600),
    }
}

fn options() -> WorkerOptions {
    WorkerOptions::fast_for_tests().retry(RetryPolicy::exponential(
        3,
        Duration::from_millis(100),
        2.0,
        Duration::from_millis(20),
    ))
}

/// Children: `fail(n)` says whether child `n` fails for good; children with `n % 3 == 1`
/// fail once, retriably, before they succeed.
fn department_handler(
    seen: Arc<Seen>,
    fail: Arc<dyn Fn(u32) -> bool + Send + Sync>,
) -> impl Fn(Department, JobContext) -> futures::future::BoxFuture<'static, Result<(), JobError>> + Clone
{
    move |job: Department, ctx: JobContext| {
        let (seen, fail) = (seen.clone(), fail.clone());
        Box::pin(async move {
            seen.batches.lock().unwrap().insert(ctx.batch.clone());
            if job.n % 3 == 1 && ctx.attempt == 1 && ctx.replay_of.is_none() {
                seen.retried.fetch_add(1, Ordering::SeqCst);
                return Err(JobError::retriable("transport", "STS timed out"));
            }
            seen.terminal.fetch_add(1, Ordering::SeqCst);
            if fail(job.n) {
                return Err(JobError::permanent("fault", "unit is gone"));
            }
            Ok(())
        })
    }
}

fn finish_handler(
    seen: Arc<Seen>,
) -> impl Fn(FinishRun) -> futures::future::BoxFuture<'static, Result<(), JobError>> + Clone {
    move |_job: FinishRun| {
        let seen = seen.clone();
        Box::pin(async move {
            let terminal = seen.terminal.load(Ordering::SeqCst);
            seen.completions.lock().unwrap().push(terminal);
            Ok(())
        })
    }
}

async fn status(queue: &QueueHandle, id: &str) -> BatchStatus {
    queue.batch(id).await.unwrap().unwrap()
}

async fn wait_for_completions(seen: &Arc<Seen>, n: usize, timeout: Duration) -> bool {
    wait_until(timeout, || {
        let seen = seen.clone();
        async move { seen.completions.lock().unwrap().len() >= n }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_children_that_succeed_run_the_completion_job_once_after_all_fifty() {
    let t = TestQueue::new("batch-fifty").await;
    let seen = Arc::new(Seen::default());
    let enqueued = t
        .queue
        .enqueue_batch(batch("run-50", (0..50).map(department).collect()))
        .await
        .unwrap();
    assert!(enqueued.created);
    assert_eq!(enqueued.children.len(), 50);
    assert_eq!(
        (enqueued.status.total, enqueued.status.pending),
        (50, 50),
        "no worker yet"
    );
    assert!(enqueued.status.completion_job.is_none());

    let handler = department_handler(seen.clone(), Arc::new(|_| false));
    let (stop_d, join_d) = spawn_worker!(t.queue, Department, options(), 8, handler);
    let (stop_f, join_f) = spawn_worker!(
        t.queue,
        FinishRun,
        options(),
        2,
        finish_handler(seen.clone())
    );
    assert!(wait_for_completions(&seen, 1, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *seen.completions.lock().unwrap(),
        [50],
        "exactly once, after all 50"
    );
    assert!(
        seen.retried.load(Ordering::SeqCst) > 0,
        "some children retried"
    );
    let s = status(&t.queue, "run-50").await;
    assert_eq!((s.total, s.pending, s.succeeded), (50, 0, 50));
    assert!(s.dead.is_empty());
    assert!(s.completed_at.is_some_and(|c| c >= s.created_at));
    let completion = t
        .queue
        .job(s.completion_job.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(completion.job_type, "batch_finish_run");
    assert_eq!(completion.state, JobState::Succeeded);
    let child = t.queue.job(&enqueued.children[0]).await.unwrap().unwrap();
    assert_eq!(child.batch.as_deref(), Some("run-50"));
    assert_eq!(
        *seen.batches.lock().unwrap(),
        HashSet::from([Some("run-50".to_owned())]),
        "every child saw its batch in its context"
    );
    stop_d();
    stop_f();
    join_d.await.unwrap();
    join_f.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_children_still_complete_the_batch_once_and_a_replayed_child_does_not_count_again() {
    let t = TestQueue::new("batch-dead").await;
    let seen = Arc::new(Seen::default());
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let fail = Arc::new(move |n: u32| n % 5 == 0 && !h.load(Ordering::SeqCst));
    let enqueued = t
        .queue
        .enqueue_batch(batch("run-dead", (0..20).map(department).collect()))
        .await
        .unwrap();
    let (stop_d, join_d) = spawn_worker!(
        t.queue,
        Department,
        options(),
        4,
        department_handler(seen.clone(), fail)
    );
    let (stop_f, join_f) = spawn_worker!(
        t.queue,
        FinishRun,
        options(),
        2,
        finish_handler(seen.clone())
    );
    assert!(wait_for_completions(&seen, 1, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(*seen.completions.lock().unwrap(), [20]);
    let s = status(&t.queue, "run-dead").await;
    assert_eq!((s.total, s.pending, s.succeeded), (20, 0, 16));
    let dead: HashSet<JobId> = s.dead.iter().cloned().collect();
    let expected: HashSet<JobId> = [0, 5, 10, 15]
        .iter()
        .map(|&i| enqueued.children[i].clone())
        .collect();
    assert_eq!(dead, expected, "the batch lists its dead children");
    assert_eq!(s.dead.len(), 4);

    healed.store(true, Ordering::SeqCst);
    let replayed = t.queue.replay(&s.dead[0], "ops").await.unwrap();
    let q = t.queue.clone();
    let new_job = replayed.new_job.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (q, id) = (q.clone(), new_job.clone());
            async move {
                q.job(&id)
                    .await
                    .unwrap()
                    .is_some_and(|j| j.state == JobState::Succeeded)
            }
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.completions.lock().unwrap().len(),
        1,
        "no second completion"
    );
    let after = status(&t.queue, "run-dead").await;
    assert_eq!(after, s, "the replay changed nothing on the batch");
    let replay = t.queue.job(&replayed.new_job).await.unwrap().unwrap();
    assert_eq!(
        replay.batch.as_deref(),
        Some("run-dead"),
        "a replay keeps its batch"
    );
    stop_d();
    stop_f();
    join_d.await.unwrap();
    join_f.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueueing_the_same_batch_twice_returns_the_first_and_enqueues_nothing() {
    let t = TestQueue::new("batch-twice").await;
    let first = t
        .queue
        .enqueue_batch(batch("run-x", (0..5).map(department).collect()))
        .await
        .unwrap();
    let second = t
        .queue
        .enqueue_batch(batch("run-x", (10..17).map(department).collect()))
        .await
        .unwrap();
    assert!(first.created);
    assert!(!second.created);
    assert_eq!(second.children, first.children);
    assert_eq!(second.status, first.status);
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(stats.job_types.len(), 1, "no completion job yet");
    assert_eq!(stats.job_types[0].waiting, 5, "no new jobs");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_children_enqueues_its_completion_job_at_once() {
    let t = TestQueue::new("batch-empty").await;
    let enqueued = t
        .queue
        .enqueue_batch(batch("run-empty", Vec::new()))
        .await
        .unwrap();
    assert!(enqueued.created && enqueued.children.is_empty());
    let s = &enqueued.status;
    assert_eq!((s.total, s.pending, s.succeeded), (0, 0, 0));
    assert!(s.completed_at.is_some());
    let completion = t
        .queue
        .job(s.completion_job.as_ref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(completion.state, JobState::Waiting);
    assert_eq!(completion.payload["run"], "run-empty");
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(stats.job_types[0].job_type, "batch_finish_run");
    assert_eq!(stats.job_types[0].waiting, 1);
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_whose_idempotency_key_is_held_join_as_the_holding_job() {
    let t = TestQueue::new("batch-idem").await;
    let seen = Arc::new(Seen::default());
    let done = t
        .queue
        .enqueue(department(0).idempotency_key("dept:a"))
        .await
        .unwrap()
        .job_id()
        .clone();
    let (stop, join) = spawn_worker!(
        t.queue,
        Department,
        options(),
        2,
        department_handler(seen.clone(), Arc::new(|_| false))
    );
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (q, id) = (q.clone(), done.clone());
            async move { q.job(&id).await.unwrap().unwrap().state == JobState::Succeeded }
        })
        .await
    );
    stop();
    join.await.unwrap();
    let waiting = t
        .queue
        .enqueue(department(3).idempotency_key("dept:b"))
        .await
        .unwrap()
        .job_id()
        .clone();

    let enqueued = t
        .queue
        .enqueue_batch(batch(
            "run-idem",
            vec![
                department(0).idempotency_key("dept:a"),
                department(3).idempotency_key("dept:b"),
                department(6).idempotency_key("dept:c"),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(enqueued.children[0], done, "the succeeded holder");
    assert_eq!(enqueued.children[1], waiting, "the waiting holder");
    let s = &enqueued.status;
    assert_eq!(
        (s.total, s.succeeded, s.pending),
        (3, 1, 2),
        "the succeeded holder counts at once"
    );
    let joined = t.queue.job(&waiting).await.unwrap().unwrap();
    assert_eq!(joined.batch.as_deref(), Some("run-idem"));

    // A job pending in one batch cannot join another.
    let err = t
        .queue
        .enqueue_batch(batch(
            "run-other",
            vec![department(9), department(6).idempotency_key("dept:c")],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::BatchConflict { .. }), "{err}");
    assert!(t.queue.batch("run-other").await.unwrap().is_none());
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(stats.job_types[0].waiting, 2, "nothing of run-other");

    let (stop_d, join_d) = spawn_worker!(
        t.queue,
        Department,
        options(),
        2,
        department_handler(seen.clone(), Arc::new(|_| false))
    );
    let (stop_f, join_f) = spawn_worker!(
        t.queue,
        FinishRun,
        options(),
        2,
        finish_handler(seen.clone())
    );
    assert!(wait_for_completions(&seen, 1, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.completions.lock().unwrap().len(), 1);
    let s = status(&t.queue, "run-idem").await;
    assert_eq!((s.total, s.succeeded, s.pending), (3, 3, 0));
    stop_d();
    stop_f();
    join_d.await.unwrap();
    join_f.await.unwrap();
    t.cleanup().await;
}

fn runs_key(prefix: &str) -> String {
    format!("{prefix}:test:runs")
}

async fn test_conn() -> redis::aio::ConnectionManager {
    let client = redis::Client::open(REDIS_URL).unwrap();
    redis::aio::ConnectionManager::new(client).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker_entry_point_runs_only_when_spawned_by_the_batch_kill_test() {
    let Ok(prefix) = std::env::var(CHILD_ENV) else {
        return;
    };
    let queue = QueueHandle::connect(QueueConfig::new(REDIS_URL, &prefix))
        .await
        .unwrap();
    let conn = test_conn().await;
    let key = Arc::new(runs_key(&prefix));
    let handler = move |_job: Department, ctx: JobContext| {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move {
            let _: i64 = conn.hincr(&*key, ctx.job_id.as_str(), 1).await.unwrap();
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok::<(), JobError>(())
        }
    };
    let (_stop, join) = spawn_worker!(queue, Department, options(), 3, handler);
    // Runs until the parent kills this process.
    join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_abandoned_by_a_worker_killed_with_sigkill_still_complete_the_batch() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let t = TestQueue::new("batch-kill").await;
    let seen = Arc::new(Seen::default());
    let enqueued = t
        .queue
        .enqueue_batch(batch("run-kill", (0..3).map(department).collect()))
        .await
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &t.prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let conn = test_conn().await;
    let key = runs_key(&t.prefix);
    let started = wait_until(Duration::from_secs(30), || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move { conn.hlen::<_, usize>(&key).await.unwrap() == 3 }
    })
    .await;
    assert!(started, "the child never started its 3 jobs");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // max_orphaned = 1: the first worker death abandons a job.
    let abandon_at_once = WorkerOptions {
        max_orphaned: 1,
        ..options()
    };
    let handler = department_handler(seen.clone(), Arc::new(|_| false));
    let (stop_d, join_d) = spawn_worker!(t.queue, Department, abandon_at_once, 2, handler);
    let (stop_f, join_f) = spawn_worker!(
        t.queue,
        FinishRun,
        options(),
        2,
        finish_handler(seen.clone())
    );
    assert!(wait_for_completions(&seen, 1, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen.completions.lock().unwrap().len(), 1);
    assert_eq!(
        seen.terminal.load(Ordering::SeqCst),
        0,
        "abandoned, not run again"
    );
    let s = status(&t.queue, "run-kill").await;
    assert_eq!((s.total, s.pending, s.succeeded), (3, 0, 0));
    let dead: HashSet<JobId> = s.dead.iter().cloned().collect();
    assert_eq!(dead, enqueued.children.iter().cloned().collect());
    for id in &s.dead {
        let record = t.queue.job(id).await.unwrap().unwrap();
        assert_eq!(record.final_error_class.as_deref(), Some(class::ABANDONED));
        assert_eq!(record.orphaned, 1);
    }
    stop_d();
    stop_f();
    join_d.await.unwrap();
    join_f.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_thousand_three_hundred_children_enqueue_in_one_call_and_all_count_down() {
    const N: u32 = 4_300;
    let t = TestQueue::new("batch-4300").await;
    let seen = Arc::new(Seen::default());
    let enqueued = t
        .queue
        .enqueue_batch(batch(
            "run-big",
            (0..N).map(|n| department(n * 3)).collect(),
        ))
        .await
        .unwrap();
    assert_eq!(enqueued.children.len(), N as usize);
    let distinct: HashSet<&JobId> = enqueued.children.iter().collect();
    assert_eq!(distinct.len(), N as usize);
    assert_eq!(enqueued.status.pending, u64::from(N));
    let handler = department_handler(seen.clone(), Arc::new(|_| false));
    let (stop_d, join_d) = spawn_worker!(t.queue, Department, options(), 32, handler);
    let (stop_f, join_f) = spawn_worker!(
        t.queue,
        FinishRun,
        options(),
        2,
        finish_handler(seen.clone())
    );
    assert!(wait_for_completions(&seen, 1, Duration::from_secs(120)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*seen.completions.lock().unwrap(), [N as usize]);
    let s = status(&t.queue, "run-big").await;
    assert_eq!((s.total, s.pending, s.succeeded), (4_300, 0, 4_300));
    stop_d();
    stop_f();
    join_d.await.unwrap();
    join_f.await.unwrap();
    t.cleanup().await;
}
