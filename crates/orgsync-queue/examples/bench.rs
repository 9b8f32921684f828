//! Throughput benchmark: no-op jobs per second through one worker process at backlogs of
//! 1,000, 10,000 and 100,000, for orgsync-queue and for BullMQ (Node) against the same Redis
//! with the same concurrency. Run: `cargo run --release -p orgsync-queue --example bench`
//! (needs `npm ci` in `crates/orgsync-queue/bench/bullmq`). Arguments: backlogs, e.g.
//! `-- 1000 10000`; environment: `REDIS_URL`, `BENCH_CONCURRENCY`, `BENCH_SKIP_BULLMQ=1`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use apalis::prelude::*;
use orgsync_queue::{Job, JobError, NewJob, QueueConfig, QueueHandle, WorkerOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NoOp {
    n: u64,
}
impl Job for NoOp {
    const JOB_TYPE: &'static str = "noop";
}

struct Run {
    enqueue: Duration,
    consume: Duration,
}

async fn run_ours(url: &str, jobs: u64, concurrency: usize) -> anyhow::Result<Run> {
    let prefix = format!("orgsync-bench:{}", uuid::Uuid::new_v4().simple());
    let queue = QueueHandle::connect(QueueConfig::new(url, &prefix)).await?;
    let start = Instant::now();
    let batch: Vec<NewJob> = (0..jobs)
        .map(|n| NewJob::new(&NoOp { n }))
        .collect::<Result<_, _>>()?;
    queue.enqueue_many(batch).await?;
    let enqueue = start.elapsed();

    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    let (d, f) = (done.clone(), finished.clone());
    let handler = move |_job: NoOp| {
        let (d, f) = (d.clone(), f.clone());
        async move {
            if d.fetch_add(1, Ordering::Relaxed) + 1 == jobs {
                f.notify_one();
            }
            Ok::<(), JobError>(())
        }
    };
    let backend = queue.backend::<NoOp>(WorkerOptions {
        prefetch: 64,
        ..WorkerOptions::default()
    });
    let (signal, stop) = orgsync_queue::manual_signal();
    let worker = WorkerBuilder::new(backend.worker_name().to_owned())
        .backend(backend)
        .concurrency(concurrency)
        .build(handler);
    let start = Instant::now();
    let join = tokio::spawn(async move { worker.run_until(signal).await });
    finished.notified().await;
    // Stopping waits until every result is recorded in Redis.
    stop();
    join.await?
        .map_err(|e| anyhow::anyhow!("worker failed: {e}"))?;
    let consume = start.elapsed();
    let stats = queue.stats().await?;
    anyhow::ensure!(
        stats.job_types.first().map(|s| s.succeeded) == Some(jobs),
        "not every job was recorded as succeeded: {stats:?}"
    );
    queue.purge_all_keys().await?;
    Ok(Run { enqueue, consume })
}

fn run_bullmq(url: &str, jobs: u64, concurrency: usize) -> anyhow::Result<Run> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/bullmq");
    let parsed = url::Url::parse(url)?;
    let output = Command::new("node")
        .current_dir(dir)
        .arg("bench.mjs")
        .arg(jobs.to_string())
        .arg(concurrency.to_string())
        .arg(parsed.port().unwrap_or(6379).to_string())
        .arg(parsed.host_str().unwrap_or("127.0.0.1"))
        .output()
        .context("running node (run `npm ci` in crates/orgsync-queue/bench/bullmq first)")?;
    anyhow::ensure!(
        output.status.success(),
        "BullMQ bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let seconds = line["seconds"].as_f64().context("no seconds")?;
    let enqueue_ms = line["enqueue_ms"].as_f64().unwrap_or(0.0);
    Ok(Run {
        enqueue: Duration::from_secs_f64(enqueue_ms / 1000.0),
        consume: Duration::from_secs_f64(seconds),
    })
}

fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by_key(|r| r.consume);
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}

fn rate(jobs: u64, d: Duration) -> f64 {
    jobs as f64 / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    let skip_bullmq = std::env::var("BENCH_SKIP_BULLMQ").is_ok();
    let mut backlogs: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if backlogs.is_empty() {
        backlogs = vec![1_000, 10_000, 100_000];
    }
    println!("Redis {url}, one worker process each, concurrency {concurrency}, no-op jobs");
    // Warm-up (connections, JIT, script cache); not reported.
    run_ours(&url, 2_000, concurrency).await?;
    if !skip_bullmq {
        run_bullmq(&url, 2_000, concurrency)?;
    }
    let mut rows = Vec::new();
    for &jobs in &backlogs {
        // Short runs are noisy: take the median of three below 100,000 jobs.
        let repeats = if jobs < 100_000 { 3 } else { 1 };
        let mut ours = Vec::new();
        let mut bull = Vec::new();
        for _ in 0..repeats {
            ours.push(run_ours(&url, jobs, concurrency).await?);
            if !skip_bullmq {
                bull.push(run_bullmq(&url, jobs, concurrency)?);
            }
        }
        eprintln!("backlog {jobs}: done");
        rows.push((jobs, median(ours), (!bull.is_empty()).then(|| median(bull))));
    }
    println!();
    println!(
        "{:>8}  {:>16}  {:>16}  {:>14}  {:>18}  {:>18}",
        "backlog",
        "orgsync jobs/s",
        "BullMQ jobs/s",
        "orgsync/BullMQ",
        "orgsync enqueue/s",
        "BullMQ enqueue/s"
    );
    for (jobs, ours, bull) in &rows {
        let our_rate = rate(*jobs, ours.consume);
        let (bull_rate, ratio, bull_enq) = match bull {
            Some(b) => {
                let r = rate(*jobs, b.consume);
                (
                    format!("{r:.0}"),
                    format!("{:.2}x", our_rate / r),
                    format!("{:.0}", rate(*jobs, b.enqueue)),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:>8}  {:>16.0}  {:>16}  {:>14}  {:>18.0}  {:>18}",
            jobs,
            our_rate,
            bull_rate,
            ratio,
            rate(*jobs, ours.enqueue),
            bull_enq
        );
    }
    let first = rows.first().map(|(j, o, _)| rate(*j, o.consume));
    let last = rows.last().map(|(j, o, _)| rate(*j, o.consume));
    if let (Some(first), Some(last)) = (first, last) {
        println!(
            "orgsync rate at the largest backlog / at the smallest: {:.0}%",
            100.0 * last / first
        );
    }
    Ok(())
}
