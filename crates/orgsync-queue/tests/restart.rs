//! Redis killed and restarted mid-run (AOF, fsync always): workers resume, no job is lost.

// Helpers outside #[test] functions unwrap too: a panic is the failure message here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestQueue, wait_until};
use orgsync_queue::{Job, JobContext, JobError, JobId, NewJob, WorkerOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u32,
}
impl Job for Work {
    const JOB_TYPE: &'static str = "work";
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed")
}

fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not start on port {port}");
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_after_redis_is_killed_and_restarted_and_no_job_is_lost() {
    const N: u32 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = KillOnDrop(start_redis(port, dir.path()));
    wait_for_port(port);
    let url = format!("redis://127.0.0.1:{port}");
    let t = TestQueue::on(&url, "restart").await;

    let seen: Arc<Mutex<HashSet<JobId>>> = Arc::default();
    let s = seen.clone();
    let handler = move |_job: Work, ctx: JobContext| {
        let s = s.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            s.lock().unwrap().insert(ctx.job_id.clone());
            Ok::<(), JobError>(())
        }
    };
    let ids: HashSet<JobId> = t
        .queue
        .enqueue_many((0..N).map(|n| NewJob::new(&Work { n }).unwrap()).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.job_id().clone())
        .collect();
    let (stop, join) = spawn_worker!(t.queue, Work, WorkerOptions::fast_for_tests(), 8, handler);
    let s = seen.clone();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s = s.clone();
            async move { s.lock().unwrap().len() >= 300 }
        })
        .await
    );

    redis.0.kill().unwrap(); // SIGKILL, mid-run
    redis.0.wait().unwrap();
    let during = seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!join.is_finished(), "the worker must survive the outage");
    redis = KillOnDrop(start_redis(port, dir.path()));
    wait_for_port(port);

    let q = t.queue.clone();
    let done = wait_until(Duration::from_secs(60), || {
        let q = q.clone();
        async move {
            q.stats()
                .await
                .map(|s| {
                    s.job_types
                        .first()
                        .is_some_and(|s| s.succeeded == u64::from(N))
                })
                .unwrap_or(false)
        }
    })
    .await;
    let stats = t.queue.stats().await.unwrap();
    assert!(done, "not all jobs succeeded after the restart: {stats:?}");
    assert!(during < N as usize, "the outage happened mid-run");
    assert_eq!(*seen.lock().unwrap(), ids, "every job ran");
    let s = &stats.job_types[0];
    assert_eq!((s.waiting, s.running, s.scheduled, s.dead), (0, 0, 0, 0));
    stop();
    join.await.unwrap();
    t.cleanup().await;
    drop(redis);
}
