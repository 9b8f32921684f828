//! Snoozes: a handler that finds what it needs busy asks to run again later without spending
//! an attempt (`JobError::snooze`), bounded by the worker's `max_snooze`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestQueue, wait_until};
use orgsync_queue::{
    ErrorLogQuery, Job, JobContext, JobError, JobState, NewJob, RetryPolicy, WorkerOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NeedsLock {
    n: u32,
}
impl Job for NeedsLock {
    const JOB_TYPE: &'static str = "needs_lock";
}

fn options(max_attempts: u32, max_snooze: Duration) -> WorkerOptions {
    let mut options = WorkerOptions::fast_for_tests().retry(RetryPolicy::exponential(
        max_attempts,
        Duration::from_millis(100),
        2.0,
        Duration::ZERO,
    ));
    options.max_snooze = max_snooze;
    options
}

/// What the handler answers: a 100 ms snooze while busy, else success.
fn outcome(busy: &AtomicBool, ctx: &JobContext) -> Result<(), JobError> {
    if busy.load(Ordering::SeqCst) {
        return Err(JobError::snooze(
            "run.busy",
            format!(
                "run-1 holds the customer (attempt {}, snoozed {} ms so far)",
                ctx.attempt,
                ctx.snoozed.as_millis()
            ),
            Duration::from_millis(100),
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snoozed_job_runs_again_without_spending_attempts_and_is_listed_while_it_waits() {
    let t = TestQueue::new("snooze").await;
    let busy = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    // Two attempts only: without snoozes, busy for a second would dead-letter it.
    let (stop, join) = spawn_worker!(
        t.queue,
        NeedsLock,
        options(2, Duration::from_secs(30)),
        2,
        {
            let (busy, runs) = (busy.clone(), runs.clone());
            move |_job: NeedsLock, ctx: JobContext| {
                let (busy, runs) = (busy.clone(), runs.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    outcome(&busy, &ctx)
                }
            }
        }
    );
    let id = t
        .queue
        .enqueue(
            NewJob::new(&NeedsLock { n: 1 })
                .unwrap()
                .customer("29189846")
                .run("run-2"),
        )
        .await
        .unwrap()
        .job_id()
        .clone();

    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            let id = id.clone();
            async move { q.job(&id).await.unwrap().unwrap().snoozes >= 5 }
        })
        .await
    );
    let waiting = t.queue.job(&id).await.unwrap().unwrap();
    assert_eq!(waiting.attempts, 0, "{waiting:?}");
    assert!(matches!(
        waiting.state,
        JobState::Retrying | JobState::Waiting | JobState::Running
    ));
    assert!(waiting.snoozed_ms >= 500, "{waiting:?}");
    assert!(
        waiting
            .last_snooze
            .as_deref()
            .unwrap()
            .contains("run-1 holds the customer (attempt 1,"),
        "every run is still attempt 1: {waiting:?}"
    );
    // Listed with the retrying jobs (the dashboard's and `queue jobs --state retrying`'s list).
    assert!(
        wait_until(Duration::from_secs(5), || {
            let q = q.clone();
            let id = id.clone();
            async move {
                q.jobs_in_state(JobState::Retrying, Some("29189846"), Some("run-2"), 10)
                    .await
                    .unwrap()
                    .iter()
                    .any(|j| j.job_id == id)
            }
        })
        .await
    );
    // A snooze is no failure: no error-log line, no failed attempt.
    assert!(
        t.queue
            .error_log(&ErrorLogQuery::default())
            .await
            .unwrap()
            .is_empty()
    );

    busy.store(false, Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            let id = id.clone();
            async move { q.job(&id).await.unwrap().unwrap().state == JobState::Succeeded }
        })
        .await
    );
    let done = t.queue.job(&id).await.unwrap().unwrap();
    assert_eq!(done.attempts, 0, "{done:?}");
    assert!(done.attempt_log.is_empty());
    let stats = t.queue.stats().await.unwrap();
    let s = stats
        .job_types
        .iter()
        .find(|s| s.job_type == NeedsLock::JOB_TYPE)
        .unwrap();
    assert_eq!(s.failed_attempts, 0);
    assert_eq!(s.dead, 0);
    assert_eq!(s.snoozes, u64::from(done.snoozes));
    assert_eq!(runs.load(Ordering::SeqCst) as u32, done.snoozes + 1);
    let mut text = String::new();
    orgsync_queue::metrics::render_prometheus(&stats, &mut text);
    assert!(
        text.contains(&format!(
            "orgsync_queue_snoozes_total{{job_type=\"needs_lock\"}} {}\n",
            done.snoozes
        )),
        "{text}"
    );
    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_busy_for_longer_than_its_snooze_limit_fails_as_usual_and_says_why() {
    let t = TestQueue::new("snooze-limit").await;
    let busy = Arc::new(AtomicBool::new(true));
    let runs = Arc::new(AtomicUsize::new(0));
    // 100 ms snoozes, 500 ms in total: five snoozes, then ordinary attempts (two).
    let (stop, join) = spawn_worker!(
        t.queue,
        NeedsLock,
        options(2, Duration::from_millis(500)),
        2,
        {
            let (busy, runs) = (busy.clone(), runs.clone());
            move |_job: NeedsLock, ctx: JobContext| {
                let (busy, runs) = (busy.clone(), runs.clone());
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    outcome(&busy, &ctx)
                }
            }
        }
    );
    let id = t
        .queue
        .enqueue(NewJob::new(&NeedsLock { n: 2 }).unwrap())
        .await
        .unwrap()
        .job_id()
        .clone();
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let q = q.clone();
            let id = id.clone();
            async move { q.job(&id).await.unwrap().unwrap().state == JobState::Dead }
        })
        .await,
        "a job busy for ever is dead-lettered once its snooze limit and attempts are spent"
    );
    let dead = t.queue.dead_letter(&id).await.unwrap();
    assert_eq!(dead.snoozes, 5, "{dead:?}");
    assert_eq!(dead.snoozed_ms, 500);
    assert_eq!(dead.attempts, 2, "both attempts spent after the limit");
    assert_eq!(dead.final_error_class.as_deref(), Some("run.busy"));
    assert_eq!(dead.attempt_log.len(), 2);
    for attempt in &dead.attempt_log {
        assert!(
            attempt.message.contains(
                "(busy for longer than the snooze limit: snoozed 500ms in total, the limit is 500ms; counted as a failed attempt)"
            ),
            "{attempt:?}"
        );
        assert!(attempt.retriable);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 7);
    stop();
    join.await.unwrap();
    t.cleanup().await;
}
