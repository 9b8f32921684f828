//! A worker process killed with SIGKILL while holding jobs: another worker finishes them,
//! and only the jobs it had started count as orphaned.
//! The child is this test executable re-invoked with `ORGSYNC_QUEUE_CHILD_PREFIX` set.

// Helpers outside #[test] functions unwrap too: a panic is the failure message here.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{REDIS_URL, TestQueue, wait_until};
use orgsync_queue::{
    Job, JobContext, JobError, JobId, NewJob, QueueConfig, QueueHandle, WorkerOptions,
};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "ORGSYNC_QUEUE_CHILD_PREFIX";
const CHILD_TEST: &str = "child_worker_entry_point_runs_only_when_spawned_by_the_crash_test";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slow {
    n: u32,
}
impl Job for Slow {
    const JOB_TYPE: &'static str = "slow";
}

fn runs_key(prefix: &str) -> String {
    format!("{prefix}:test:runs")
}

async fn record_run(conn: &mut redis::aio::ConnectionManager, prefix: &str, ctx: &JobContext) {
    let _: i64 = conn
        .hincr(runs_key(prefix), ctx.job_id.as_str(), 1)
        .await
        .expect("record run");
}

fn options(prefetch: usize) -> WorkerOptions {
    WorkerOptions {
        prefetch,
        ..WorkerOptions::fast_for_tests()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker_entry_point_runs_only_when_spawned_by_the_crash_test() {
    let Ok(prefix) = std::env::var(CHILD_ENV) else {
        return;
    };
    let queue = QueueHandle::connect(QueueConfig::new(REDIS_URL, &prefix))
        .await
        .unwrap();
    let conn = queue_conn().await;
    let p = Arc::new(prefix.clone());
    let handler = move |_job: Slow, ctx: JobContext| {
        let (mut conn, p) = (conn.clone(), p.clone());
        async move {
            record_run(&mut conn, &p, &ctx).await;
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok::<(), JobError>(())
        }
    };
    let (_stop, join) = spawn_worker!(queue, Slow, options(4), 4, handler);
    // Runs until the parent kills this process.
    join.await.unwrap();
}

async fn queue_conn() -> redis::aio::ConnectionManager {
    let client = redis::Client::open(REDIS_URL).unwrap();
    redis::aio::ConnectionManager::new(client).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_has_its_jobs_finished_by_another_worker() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let t = TestQueue::new("crash").await;
    let jobs = (0..8).map(|n| NewJob::new(&Slow { n }).unwrap()).collect();
    t.queue.enqueue_many(jobs).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &t.prefix)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut conn = queue_conn().await;
    let key = runs_key(&t.prefix);
    let started = wait_until(Duration::from_secs(30), || {
        let (mut conn, key) = (conn.clone(), key.clone());
        async move { conn.hlen::<_, usize>(&key).await.unwrap() == 4 }
    })
    .await;
    assert!(started, "the child never started its 4 jobs");
    let stats = t.queue.stats().await.unwrap();
    assert_eq!(
        stats.job_types[0].running, 8,
        "4 running + 4 prefetched in the child"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = Instant::now();

    let p = Arc::new(t.prefix.clone());
    let c = conn.clone();
    let handler = move |_job: Slow, ctx: JobContext| {
        let (mut conn, p) = (c.clone(), p.clone());
        async move {
            record_run(&mut conn, &p, &ctx).await;
            Ok::<(), JobError>(())
        }
    };
    let (stop, join) = spawn_worker!(t.queue, Slow, options(32), 4, handler);
    let q = t.queue.clone();
    let finished = wait_until(Duration::from_secs(30), || {
        let q = q.clone();
        async move { q.stats().await.unwrap().job_types[0].succeeded == 8 }
    })
    .await;
    let took = killed_at.elapsed();
    assert!(finished, "jobs of the killed worker were not finished");
    // orphan_after is 1.5 s and the reclaim runs every 0.3 s.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    let runs: std::collections::HashMap<String, u32> = conn.hgetall(&key).await.unwrap();
    assert_eq!(runs.len(), 8, "every job ran");
    assert!(runs.values().all(|&n| n <= 2), "{runs:?}");
    assert_eq!(runs.values().filter(|&&n| n == 2).count(), 4, "{runs:?}");
    // The 4 it had started count as orphaned; the 4 it had only prefetched do not.
    for (id, n) in &runs {
        let record = t.queue.job(&JobId::new(id)).await.unwrap().unwrap();
        let expected = if *n == 2 { 1 } else { 0 };
        assert_eq!(record.orphaned, expected, "job {id} ran {n} times");
    }
    let stats = t.queue.stats().await.unwrap();
    let s = &stats.job_types[0];
    assert_eq!((s.waiting, s.running, s.scheduled, s.dead), (0, 0, 0, 0));
    stop();
    join.await.unwrap();
    t.cleanup().await;
}
