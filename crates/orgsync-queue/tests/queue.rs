//! Integration tests against the Redis at 127.0.0.1:6379, each with its own key prefix.

// Helpers outside #[test] functions unwrap too: a panic is the failure message here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{TestQueue, wait_until};
use orgsync_queue::{
    DeadLetterFilter, ErrorLogQuery, Job, JobContext, JobError, JobId, JobState, NewJob,
    QueueConfig, QueueError, QueueHandle, RetryPolicy, WorkerOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flaky {
    n: u32,
}
impl Job for Flaky {
    const JOB_TYPE: &'static str = "flaky";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Noop {
    n: u64,
}
impl Job for Noop {
    const JOB_TYPE: &'static str = "noop";
}

/// attempt, start time, replay_of
type Run = (u32, DateTime<Utc>, Option<JobId>);

fn fast(max_attempts: u32) -> WorkerOptions {
    WorkerOptions::fast_for_tests().retry(RetryPolicy::exponential(
        max_attempts,
        Duration::from_millis(150),
        2.0,
        Duration::from_millis(30),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_runs_n_times_with_backoff_then_dead_letter_and_replay_succeeds() {
    let t = TestQueue::new("retry").await;
    let fail = Arc::new(AtomicBool::new(true));
    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    let (f, r) = (fail.clone(), runs.clone());
    let handler = move |_job: Flaky, ctx: JobContext| {
        let (f, r) = (f.clone(), r.clone());
        async move {
            r.lock()
                .unwrap()
                .push((ctx.attempt, Utc::now(), ctx.replay_of.clone()));
            if f.load(Ordering::SeqCst) {
                Err(JobError::retriable(
                    "transport",
                    std::io::Error::other("STS timed out"),
                ))
            } else {
                Ok(())
            }
        }
    };
    let (stop, join) = spawn_worker!(t.queue, Flaky, fast(4), 2, handler);
    let enqueued = t
        .queue
        .enqueue(NewJob::new(&Flaky { n: 1 }).unwrap().customer("29189846"))
        .await
        .unwrap();
    let id = enqueued.job_id().clone();

    let q = t.queue.clone();
    let dead = wait_until(Duration::from_secs(15), || {
        let q = q.clone();
        async move {
            !q.dead_letters(&DeadLetterFilter::default())
                .await
                .unwrap()
                .is_empty()
        }
    })
    .await;
    assert!(dead, "job never reached the dead-letter queue");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        runs.lock().unwrap().len(),
        4,
        "ran exactly max_attempts times"
    );

    let letter = t.queue.dead_letter(&id).await.unwrap();
    assert_eq!(letter.state, JobState::Dead);
    assert_eq!(letter.customer.as_deref(), Some("29189846"));
    assert_eq!(letter.final_error_class.as_deref(), Some("transport"));
    assert_eq!(letter.attempt_log.len(), 4);
    let log = &letter.attempt_log;
    for (i, a) in log.iter().enumerate() {
        assert_eq!(a.attempt as usize, i + 1);
        assert_eq!(a.chain, vec!["STS timed out".to_owned()]);
    }
    // Gaps between attempts follow 150 ms * 2^(n-1) + up to 30 ms jitter, plus polling slack.
    for n in 1..4usize {
        let gap = (log[n].started_at - log[n - 1].finished_at).num_milliseconds();
        let expected = 150 * (1 << (n - 1));
        assert!(
            gap >= expected && gap <= expected + 30 + 700,
            "gap after attempt {n} was {gap} ms, expected about {expected} ms"
        );
    }
    let errors = t
        .queue
        .error_log(&ErrorLogQuery {
            customer: Some("29189846".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(errors.len(), 4);
    assert!(
        errors
            .iter()
            .all(|e| e.class == "transport" && e.job_id == id)
    );
    let in_range = t
        .queue
        .error_log(&ErrorLogQuery {
            since: Some(errors[1].time),
            until: Some(errors[2].time),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        in_range.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [2, 3]
    );
    let other_customer = ErrorLogQuery {
        customer: Some("87654321".into()),
        ..Default::default()
    };
    assert!(t.queue.error_log(&other_customer).await.unwrap().is_empty());

    fail.store(false, Ordering::SeqCst);
    let replayed = t.queue.replay(&id, "support-anna").await.unwrap();
    let q = t.queue.clone();
    let new_id = replayed.new_job.clone();
    let done = wait_until(Duration::from_secs(10), || {
        let (q, new_id) = (q.clone(), new_id.clone());
        async move {
            q.job(&new_id)
                .await
                .unwrap()
                .is_some_and(|j| j.state == JobState::Succeeded)
        }
    })
    .await;
    assert!(done, "replayed job did not succeed");
    let new_job = t.queue.job(&new_id).await.unwrap().unwrap();
    assert_eq!(new_job.replay_of.as_ref(), Some(&id));
    assert_eq!(new_job.replayed_by.as_deref(), Some("support-anna"));
    assert!(new_job.replayed_at.is_some());
    let last = runs.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.0, 1, "replay starts with fresh attempts");
    assert_eq!(last.2.as_ref(), Some(&id));
    let old = t.queue.job(&id).await.unwrap().unwrap();
    assert_eq!(old.state, JobState::Replayed);
    assert!(
        t.queue
            .dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let audit = t.queue.audit_log(10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].action, "replay");
    assert_eq!(audit[0].by, "support-anna");

    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_skips_the_remaining_attempts() {
    let t = TestQueue::new("permanent").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let handler = move |_job: Flaky| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(JobError::permanent("fault", "no service agreement for CVR"))
        }
    };
    let (stop, join) = spawn_worker!(t.queue, Flaky, fast(10), 2, handler);
    let id = t
        .queue
        .push(&Flaky { n: 2 })
        .await
        .unwrap()
        .job_id()
        .clone();
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (q, id) = (q.clone(), id.clone());
            async move { q.dead_letter(&id).await.is_ok() }
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let letter = t.queue.dead_letter(&id).await.unwrap();
    assert_eq!(letter.final_error_class.as_deref(), Some("fault"));
    assert!(!letter.attempt_log[0].retriable);
    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_twice_gives_one_job() {
    let t = TestQueue::new("idem").await;
    let first = t
        .queue
        .enqueue(
            NewJob::new(&Noop { n: 1 })
                .unwrap()
                .idempotency_key("sync:2026-11-22:42"),
        )
        .await
        .unwrap();
    let second = t
        .queue
        .enqueue(
            NewJob::new(&Noop { n: 2 })
                .unwrap()
                .idempotency_key("sync:2026-11-22:42"),
        )
        .await
        .unwrap();
    assert!(!first.is_duplicate());
    assert!(second.is_duplicate());
    assert_eq!(first.job_id(), second.job_id());
    let many = t
        .queue
        .enqueue_many(vec![
            NewJob::new(&Noop { n: 3 }).unwrap().idempotency_key("k2"),
            NewJob::new(&Noop { n: 4 }).unwrap().idempotency_key("k2"),
        ])
        .await
        .unwrap();
    assert!(!many[0].is_duplicate() && many[1].is_duplicate());
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(stats.job_types[0].waiting, 2, "one job per key");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_no_longer_deserialises_is_dead_on_its_first_attempt() {
    let t = TestQueue::new("deser").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let handler = move |_job: Flaky| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<(), JobError>(())
        }
    };
    let (stop, join) = spawn_worker!(t.queue, Flaky, fast(10), 2, handler);
    // An older release's payload: a field that no longer exists, the new one missing.
    let id = t
        .queue
        .enqueue(
            NewJob::raw("flaky", r#"{"department":"x"}"#)
                .unwrap()
                .customer("12345678"),
        )
        .await
        .unwrap()
        .job_id()
        .clone();
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (q, id) = (q.clone(), id.clone());
            async move { q.dead_letter(&id).await.is_ok() }
        })
        .await
    );
    let letter = t.queue.dead_letter(&id).await.unwrap();
    assert_eq!(letter.final_error_class.as_deref(), Some("job.undecodable"));
    assert_eq!(letter.attempt_log.len(), 1);
    let message = &letter.attempt_log[0].message;
    assert!(
        message.contains("`flaky`") && message.contains("Flaky"),
        "{message}"
    );
    assert!(message.contains("missing field `n`"), "{message}");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_is_a_clear_error_naming_the_masked_url() {
    let err = QueueHandle::connect(QueueConfig::new("redis://ops:hunter2@127.0.0.1:1/0", "x"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, QueueError::Unreachable { .. }), "{text}");
    assert!(text.contains("redis://ops:***@127.0.0.1:1/0"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(err.is_retriable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_job_waits_for_its_time_and_stats_show_it() {
    let t = TestQueue::new("scheduled").await;
    let done: Arc<Mutex<Option<Instant>>> = Arc::default();
    let d = done.clone();
    let handler = move |_job: Noop| {
        let d = d.clone();
        async move {
            *d.lock().unwrap() = Some(Instant::now());
            Ok::<(), JobError>(())
        }
    };
    let enqueued_at = Instant::now();
    t.queue
        .enqueue(
            NewJob::new(&Noop { n: 7 })
                .unwrap()
                .run_after(Duration::from_millis(800)),
        )
        .await
        .unwrap();
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(stats.job_types[0].scheduled, 1);
    let (stop, join) = spawn_worker!(t.queue, Noop, fast(3), 2, handler);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = done.clone();
            async move { d.lock().unwrap().is_some() }
        })
        .await
    );
    let ran_after = done.lock().unwrap().unwrap() - enqueued_at;
    assert!(ran_after >= Duration::from_millis(800), "{ran_after:?}");
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(3), || {
            let q = q.clone();
            async move {
                let s = q.stats().await.unwrap();
                s.job_types[0].succeeded == 1 && s.job_types[0].live_workers == 1
            }
        })
        .await
    );
    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_filter_replay_all_and_delete_with_audit() {
    let t = TestQueue::new("dlq").await;
    let handler = |job: Flaky| async move {
        if job.n % 2 == 0 {
            Err::<(), _>(JobError::permanent("fault", "no agreement"))
        } else {
            Err(JobError::permanent("malformed", "bad XML"))
        }
    };
    let (stop, join) = spawn_worker!(t.queue, Flaky, fast(1), 4, handler);
    let jobs = (0..6)
        .map(|n| {
            NewJob::new(&Flaky { n })
                .unwrap()
                .customer(if n < 3 { "11111111" } else { "22222222" })
        })
        .collect();
    t.queue.enqueue_many(jobs).await.unwrap();
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            async move {
                q.dead_letters(&DeadLetterFilter::default())
                    .await
                    .unwrap()
                    .len()
                    == 6
            }
        })
        .await
    );
    stop();
    join.await.unwrap();
    let by_customer = DeadLetterFilter {
        customer: Some("11111111".into()),
        ..Default::default()
    };
    assert_eq!(t.queue.dead_letters(&by_customer).await.unwrap().len(), 3);
    let faults = DeadLetterFilter {
        error_class: Some("fault".into()),
        ..Default::default()
    };
    assert_eq!(t.queue.dead_letters(&faults).await.unwrap().len(), 3);
    let replayed = t
        .queue
        .replay_matching(
            &DeadLetterFilter {
                customer: Some("22222222".into()),
                error_class: Some("malformed".into()),
                since: Some(Utc::now() - chrono::Duration::minutes(5)),
                until: Some(Utc::now()),
                ..Default::default()
            },
            "ops",
        )
        .await
        .unwrap();
    assert_eq!(replayed.len(), 2, "n = 3 and 5");
    let deleted = t.queue.delete_matching(&by_customer, "ops").await.unwrap();
    assert_eq!(deleted.len(), 3);
    assert!(t.queue.job(&deleted[0]).await.unwrap().is_none());
    let err = t
        .queue
        .delete_dead_letter(&deleted[0], "ops")
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::NotFound(_)));
    let remaining = t
        .queue
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(remaining.len(), 1);
    let audit = t.queue.audit_log(100).await.unwrap();
    let mut actions: HashMap<String, usize> = HashMap::new();
    for a in &audit {
        *actions.entry(a.action.clone()).or_default() += 1;
    }
    assert_eq!(actions.get("replay"), Some(&2));
    assert_eq!(actions.get("delete"), Some(&3));
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(stats.job_types[0].dead, 1);
    assert_eq!(
        stats.job_types[0].waiting, 2,
        "the two replays wait for a worker"
    );
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_thousand_jobs_falling_due_at_once_are_all_processed() {
    const N: u64 = 100_000;
    let t = TestQueue::new("burst").await;
    // All at the same millisecond, far enough ahead for the enqueue to finish first.
    let due = Utc::now() + chrono::Duration::seconds(8);
    let jobs: Vec<NewJob> = (0..N)
        .map(|n| NewJob::new(&Noop { n }).unwrap().run_at(due))
        .collect();
    t.queue.enqueue_many(jobs).await.unwrap();
    assert!(
        Utc::now() < due,
        "enqueue took too long for the burst to be simultaneous"
    );
    assert_eq!(t.queue.stats().await.unwrap().job_types[0].scheduled, N);
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let handler = move |_job: Noop| {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            Ok::<(), JobError>(())
        }
    };
    let (stop, join) = spawn_worker!(t.queue, Noop, WorkerOptions::fast_for_tests(), 32, handler);
    let q = t.queue.clone();
    let all = wait_until(Duration::from_secs(150), || {
        let q = q.clone();
        async move { q.stats().await.unwrap().job_types[0].succeeded == N }
    })
    .await;
    let stats = t.queue.stats().await.unwrap();
    assert!(all, "not all processed: {stats:?}");
    assert!(!join.is_finished(), "the worker must still be running");
    assert_eq!(count.load(Ordering::Relaxed) as u64, N);
    let s = &stats.job_types[0];
    assert_eq!((s.waiting, s.running, s.scheduled, s.dead), (0, 0, 0, 0));
    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_finishes_its_running_job_and_hands_back_the_prefetched_ones() {
    let t = TestQueue::new("shutdown").await;
    let runs: Arc<Mutex<HashMap<JobId, u32>>> = Arc::default();
    let r = runs.clone();
    let handler = move |_job: Noop, ctx: JobContext| {
        let r = r.clone();
        async move {
            *r.lock().unwrap().entry(ctx.job_id.clone()).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<(), JobError>(())
        }
    };
    let jobs = (0..10).map(|n| NewJob::new(&Noop { n }).unwrap()).collect();
    t.queue.enqueue_many(jobs).await.unwrap();
    let (stop, join) = spawn_worker!(t.queue, Noop, fast(3), 1, handler.clone());
    let r = runs.clone();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let r = r.clone();
            async move { !r.lock().unwrap().is_empty() }
        })
        .await
    );
    stop();
    join.await.unwrap();
    let stats = t.queue.stats().await.unwrap();
    let s = &stats.job_types[0];
    assert_eq!(s.succeeded, 1, "the running job finished");
    assert_eq!(
        (s.waiting, s.running),
        (9, 0),
        "the prefetched ones were handed back"
    );
    assert_eq!(s.live_workers, 0, "the worker deregistered");
    let (stop, join) = spawn_worker!(t.queue, Noop, fast(3), 4, handler);
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            async move { q.stats().await.unwrap().job_types[0].succeeded == 10 }
        })
        .await
    );
    assert!(runs.lock().unwrap().values().all(|&n| n == 1));
    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_longer_than_the_orphan_timeout_is_not_taken_over_while_its_worker_lives() {
    let t = TestQueue::new("long").await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let handler = move |_job: Noop| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            // Twice the 1.5 s orphan timeout of `fast_for_tests`.
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<(), JobError>(())
        }
    };
    t.queue.push(&Noop { n: 1 }).await.unwrap();
    // Two workers on the same type: the idle one reclaims every 0.3 s.
    let (stop_a, join_a) = spawn_worker!(t.queue, Noop, fast(3), 2, handler.clone());
    let (stop_b, join_b) = spawn_worker!(t.queue, Noop, fast(3), 2, handler);
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            async move { q.stats().await.unwrap().job_types[0].succeeded == 1 }
        })
        .await
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    stop_a();
    stop_b();
    join_a.await.unwrap();
    join_b.await.unwrap();
    t.cleanup().await;
}
