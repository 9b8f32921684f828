//! Dead-letter search benchmark: fills 1,000 / 10,000 / 100,000 dead letters through a real
//! worker (every job fails permanently, spread over 20 customers, 3 job-type-like classes of
//! error, 50 runs), then prints p50/p95 server time of a filtered page of 50 (customer + error
//! class; error class alone; run; free text of a rare word pair; free text of two words every
//! dead letter has) and of the overview queries (stats, hourly
//! counts, facets, the matching count), and the memory the free-text word index takes
//! (`MEMORY USAGE` of its zsets; the bench may name keys, being part of the queue crate).
//!
//! Run: `cargo run -p orgsync-queue --example dlq_bench` (arguments: sizes, e.g. `-- 1000
//! 10000`; `REDIS_URL` defaults to redis://127.0.0.1:6379). Keys go under a fresh prefix and
//! are deleted at the end.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use apalis::prelude::*;
use orgsync_queue::{
    DeadLetterFilter, Job, JobError, NewJob, QueueConfig, QueueHandle, WorkerOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dept {
    n: u64,
}
impl Job for Dept {
    const JOB_TYPE: &'static str = "sync_department";
}

const CLASSES: [&str; 5] = [
    "sts.unavailable",
    "sts.auth",
    "target.rejected",
    "target.storage",
    "guard.mass_deactivation",
];

fn customer(n: u64) -> String {
    format!("{:08}", 10_000_000 + n % 20)
}

async fn fill(queue: &QueueHandle, from: u64, to: u64) -> anyhow::Result<()> {
    let jobs: Vec<NewJob> = (from..to)
        .map(|n| {
            NewJob::new(&Dept { n }).map(|j| j.customer(customer(n)).run(format!("run-{}", n % 50)))
        })
        .collect::<Result<_, _>>()?;
    queue.enqueue_many(jobs).await?;
    let handler = |job: Dept| async move {
        Err::<(), _>(JobError::permanent(
            CLASSES[(job.n % 5) as usize],
            format!(
                "department {} failed: the target said {} (ticket {})",
                job.n,
                if job.n % 997 == 0 {
                    "quota exceeded"
                } else {
                    "no"
                },
                job.n
            ),
        ))
    };
    let backend = queue.backend::<Dept>(WorkerOptions {
        prefetch: 256,
        ..WorkerOptions::default()
    });
    let (signal, stop) = orgsync_queue::manual_signal();
    let worker = WorkerBuilder::new(backend.worker_name().to_owned())
        .backend(backend)
        .concurrency(64)
        .build(handler);
    let join = tokio::spawn(async move { worker.run_until(signal).await });
    let everything = DeadLetterFilter::default();
    while queue.count_dead_letters(&everything).await? < to {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop();
    let _ = join.await;
    Ok(())
}

/// Bytes and keys of the free-text word index under `prefix`.
async fn word_index_memory(url: &str, prefix: &str) -> anyhow::Result<(u64, u64)> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor: u64 = 0;
    let (mut bytes, mut keys) = (0u64, 0u64);
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:dead-by:word:*"))
            .arg("COUNT")
            .arg(5_000)
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        for k in &batch {
            pipe.cmd("MEMORY").arg("USAGE").arg(k);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        bytes += sizes.into_iter().flatten().sum::<u64>();
        keys += batch.len() as u64;
        if next == 0 {
            return Ok((bytes, keys));
        }
        cursor = next;
    }
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.95))
}

async fn measure<F, Fut>(rounds: usize, mut f: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        f().await?;
        samples.push(start.elapsed());
    }
    Ok(percentiles(samples))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    let prefix = format!("orgsync-dlq-bench:{}", uuid::Uuid::new_v4().simple());
    let queue = QueueHandle::connect(QueueConfig::new(&url, &prefix)).await?;
    println!(
        "{:>8} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22} | {:>22} | word index",
        "dead",
        "cvr+class page p50/p95",
        "class page p50/p95",
        "run page p50/p95",
        "text page p50/p95",
        "common words p50/p95",
        "overview p50/p95"
    );
    let mut filled = 0;
    for size in sizes {
        let start = Instant::now();
        fill(&queue, filled, size).await?;
        filled = size;
        eprintln!(
            "filled {size} dead letters in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let cvr_class = DeadLetterFilter {
            customer: Some(customer(3)),
            error_class: Some("target.storage".into()),
            ..DeadLetterFilter::default()
        };
        let class = DeadLetterFilter {
            error_class: Some("sts.auth".into()),
            ..DeadLetterFilter::default()
        };
        let run = DeadLetterFilter {
            run: Some("run-7".into()),
            ..DeadLetterFilter::default()
        };
        let text = DeadLetterFilter {
            text: Some("quota exceeded".into()),
            ..DeadLetterFilter::default()
        };
        // Words of every dead letter: common beyond 5,000, checked per candidate.
        let common = DeadLetterFilter {
            text: Some("Department FAILED".into()),
            ..DeadLetterFilter::default()
        };
        let mut row = Vec::new();
        for f in [&cvr_class, &class, &run, &text, &common] {
            let (p50, p95) = measure(30, || async {
                let page = queue.dead_letter_page(f, None, 50).await?;
                anyhow::ensure!(!page.items.is_empty(), "the filter found nothing");
                if f.text.is_some() {
                    let want = f.text.as_deref().unwrap_or_default().to_lowercase();
                    anyhow::ensure!(
                        page.items.iter().all(|r| want.split(' ').all(|w| r
                            .last_error
                            .as_deref()
                            .unwrap_or_default()
                            .contains(w))),
                        "a page holds a dead letter without the words {want:?}"
                    );
                }
                if f.text == common.text {
                    anyhow::ensure!(page.items.len() == 50, "every dead letter has the words");
                }
                Ok(())
            })
            .await?;
            row.push(format!("{p50:>9.1} / {p95:>6.1} ms"));
        }
        let (p50, p95) = measure(30, || async {
            queue.stats().await?;
            queue.hourly_counts(7 * 24).await?;
            queue.dead_letter_facets().await?;
            queue.count_dead_letters(&cvr_class).await?;
            Ok(())
        })
        .await?;
        row.push(format!("{p50:>9.1} / {p95:>6.1} ms"));
        let (bytes, keys) = word_index_memory(&url, &prefix).await?;
        row.push(format!(
            "{:>6.1} MB, {keys} keys, {} B/dead",
            bytes as f64 / 1e6,
            bytes / size.max(1)
        ));
        println!("{size:>8} | {}", row.join(" | "));
    }
    queue.purge_all_keys().await?;
    Ok(())
}
