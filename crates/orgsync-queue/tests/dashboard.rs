//! The dashboard APIs against a real Redis: dead-letter pages through the index (filters,
//! free text, cursor paging, counts, facets), jobs by state, replay chains, hourly counts,
//! the audit log in pages, and `dlq replay` of a job replayed already.

// Helpers outside #[test] functions unwrap too: a panic is the failure message here.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use common::{TestQueue, wait_until};
use orgsync_queue::cli::{DlqCommand, QueueCommand, run_dlq, run_queue};
use orgsync_queue::{
    DeadLetterFilter, Job, JobContext, JobError, JobState, NewJob, RetryPolicy, WorkerOptions,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dept {
    n: u32,
}
impl Job for Dept {
    const JOB_TYPE: &'static str = "sync_department";
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    Dlq(DlqCommand),
    Queue(QueueCommand),
}

async fn cli(t: &TestQueue, args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("orgsync").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    match &cli.command {
        Command::Dlq(cmd) => run_dlq(cmd, &t.queue, &mut out).await?,
        Command::Queue(cmd) => run_queue(cmd, &t.queue, &mut out).await?,
    }
    Ok(String::from_utf8(out)?)
}

fn class_of(n: u32) -> &'static str {
    ["sts.unavailable", "target.rejected", "sts.auth"][(n % 3) as usize]
}

fn filter() -> DeadLetterFilter {
    DeadLetterFilter::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_found_by_index_paged_newest_first_and_replay_chains_resolve() {
    let t = TestQueue::new("dash").await;
    let fail = Arc::new(AtomicBool::new(true));
    let f = fail.clone();
    let handler = move |job: Dept, _ctx: JobContext| {
        let f = f.clone();
        async move {
            if f.load(Ordering::SeqCst) {
                Err(JobError::permanent(
                    class_of(job.n),
                    format!("department {} refused: quota word{}", job.n, job.n % 5),
                ))
            } else {
                Ok(())
            }
        }
    };
    let options = WorkerOptions::fast_for_tests();
    let (stop, join) = spawn_worker!(t.queue, Dept, options, 8, handler);
    let jobs = (0..60u32)
        .map(|n| {
            NewJob::new(&Dept { n })
                .unwrap()
                .customer(if n % 2 == 0 { "11111111" } else { "22222222" })
                .run(if n < 30 { "run-a" } else { "run-b" })
        })
        .collect();
    t.queue.enqueue_many(jobs).await.unwrap();
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let q = q.clone();
            async move { q.count_dead_letters(&filter()).await.unwrap() == 60 }
        })
        .await
    );

    // Facets: what the queue holds, not a fixed list.
    let facets = t.queue.dead_letter_facets().await.unwrap();
    let classes: HashSet<_> = facets
        .error_classes
        .iter()
        .map(|f| f.value.as_str())
        .collect();
    assert_eq!(
        classes,
        HashSet::from(["sts.unavailable", "target.rejected", "sts.auth"])
    );
    assert!(facets.customers.iter().all(|f| f.count == 30));

    // A filter on customer and class, paged by 7, newest first, no duplicates, all matching.
    let f = DeadLetterFilter {
        customer: Some("11111111".into()),
        error_class: Some("sts.auth".into()),
        ..filter()
    };
    let expected = (0..60u32)
        .filter(|n| n % 2 == 0 && class_of(*n) == "sts.auth")
        .count();
    assert_eq!(
        t.queue.count_dead_letters(&f).await.unwrap(),
        expected as u64
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = t
            .queue
            .dead_letter_page(&f, cursor.as_deref(), 7)
            .await
            .unwrap();
        assert!(page.items.len() <= 7);
        for r in &page.items {
            assert_eq!(r.customer.as_deref(), Some("11111111"));
            assert_eq!(r.final_error_class.as_deref(), Some("sts.auth"));
        }
        seen.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), expected);
    let ids: HashSet<_> = seen.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(ids.len(), expected, "no dead letter twice across pages");
    assert!(
        seen.windows(2).all(|w| w[0].dead_at >= w[1].dead_at),
        "newest first"
    );

    // Free text and run.
    let text = DeadLetterFilter {
        text: Some("WORD3".into()),
        run: Some("run-b".into()),
        ..filter()
    };
    let page = t.queue.dead_letter_page(&text, None, 50).await.unwrap();
    let want = (30..60u32).filter(|n| n % 5 == 3).count();
    assert_eq!(page.items.len(), want);
    assert!(page.next_cursor.is_none());
    assert!(page.items.iter().all(|r| r.run.as_deref() == Some("run-b")));
    assert!(
        t.queue
            .dead_letter_page(&filter(), Some("garbage"), 5)
            .await
            .is_err(),
        "a bad cursor is refused"
    );

    // Replay one twice over: the chain and the CLI name the job that replaced it.
    let first = seen[0].job_id.clone();
    let replay1 = t.queue.replay(&first, "anna").await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            let id = replay1.new_job.clone();
            async move { q.job(&id).await.unwrap().unwrap().state == JobState::Dead }
        })
        .await
    );
    let out = cli(&t, &["dlq", "replay", first.as_str(), "--by", "bob"])
        .await
        .unwrap_err()
        .to_string();
    assert!(out.contains(replay1.new_job.as_str()), "{out}");
    assert!(out.contains("dead"), "{out}");
    assert!(out.contains("by anna"), "{out}");
    fail.store(false, Ordering::SeqCst);
    let replay2 = t.queue.replay(&replay1.new_job, "anna").await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            let id = replay2.new_job.clone();
            async move { q.job(&id).await.unwrap().unwrap().state == JobState::Succeeded }
        })
        .await
    );
    let chain = t.queue.replay_chain(&replay1.new_job).await.unwrap();
    let chain_ids: Vec<_> = chain.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(
        chain_ids,
        vec![
            first.clone(),
            replay1.new_job.clone(),
            replay2.new_job.clone()
        ]
    );
    let current = t.queue.current_job(&first).await.unwrap();
    assert_eq!(current.job_id, replay2.new_job);
    assert_eq!(current.state, JobState::Succeeded);
    assert_eq!(
        current.run.as_deref(),
        seen[0].run.as_deref(),
        "a replay keeps the run"
    );
    // Replayed dead letters leave the index.
    assert_eq!(
        t.queue.count_dead_letters(&f).await.unwrap(),
        expected as u64 - 1
    );

    // Hourly counts saw the dead letters, the failures and the success.
    let hours = t.queue.hourly_counts(24).await.unwrap();
    assert_eq!(hours.len(), 24);
    let total = |k: fn(&orgsync_queue::HourCount) -> u64| hours.iter().map(k).sum::<u64>();
    assert_eq!(total(|h| h.dead), 61);
    assert_eq!(total(|h| h.failed), 61);
    assert_eq!(total(|h| h.succeeded), 1);

    // The audit log in pages of one, newest first.
    let p1 = t.queue.audit_page(None, 1).await.unwrap();
    assert_eq!(p1.items[0].job_id, replay1.new_job);
    let p2 = t
        .queue
        .audit_page(p1.next_before.as_deref(), 1)
        .await
        .unwrap();
    assert_eq!(p2.items[0].job_id, first);
    assert!(p2.next_before.is_none());

    // `dlq list --run` lists that run's dead letters only.
    let listed = cli(&t, &["dlq", "list", "--run", "run-a", "--format", "json"])
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let n_run_a = (0..30u32).count() - usize::from(seen[0].run.as_deref() == Some("run-a"));
    assert_eq!(listed.as_array().unwrap().len(), n_run_a);

    // Free text matches whole words, any case, through the word index; replays and deletes
    // take their words out of it.
    let words = |q: &str| DeadLetterFilter {
        text: Some(q.into()),
        ..filter()
    };
    let number = |r: &orgsync_queue::JobRecord| {
        r.last_error
            .as_deref()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let first_n = number(&seen[0]);
    assert_eq!(
        t.queue.count_dead_letters(&words(&first_n)).await.unwrap(),
        0,
        "{first_n}: the replayed dead letters left the word index"
    );
    let quota = t
        .queue
        .count_dead_letters(&words("QUOTA Word3"))
        .await
        .unwrap();
    assert_eq!(
        quota,
        (0..60u32).filter(|n| n % 5 == 3).count() as u64
            - u64::from(number(&seen[0]).parse::<u32>().unwrap() % 5 == 3)
    );
    assert_eq!(
        t.queue.count_dead_letters(&words("quot")).await.unwrap(),
        0,
        "a fragment is no word"
    );
    let other = &seen[1];
    let other_n = number(other);
    assert_eq!(
        t.queue
            .dead_letter_page(&words(&other_n), None, 50)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    t.queue
        .delete_dead_letter(&other.job_id, "anna")
        .await
        .unwrap();
    assert_eq!(
        t.queue.count_dead_letters(&words(&other_n)).await.unwrap(),
        0,
        "a deleted dead letter left the word index"
    );

    stop();
    join.await.unwrap();
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_and_running_jobs_are_listed_with_next_attempt_and_worker() {
    let t = TestQueue::new("dash-states").await;
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let handler = move |job: Dept, _ctx: JobContext| {
        let r = r.clone();
        async move {
            if job.n == 0 {
                r.notified().await;
                Ok(())
            } else {
                Err(JobError::retriable("target.storage", "disk full"))
            }
        }
    };
    let options = WorkerOptions::fast_for_tests().retry(RetryPolicy::exponential(
        5,
        Duration::from_secs(600),
        2.0,
        Duration::ZERO,
    ));
    let (stop, join) = spawn_worker!(t.queue, Dept, options, 4, handler);
    for n in 0..3u32 {
        t.queue
            .enqueue(
                NewJob::new(&Dept { n })
                    .unwrap()
                    .customer("11111111")
                    .run("run-x"),
            )
            .await
            .unwrap();
    }
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            async move {
                q.jobs_in_state(JobState::Retrying, None, None, 10)
                    .await
                    .unwrap()
                    .len()
                    == 2
                    && q.jobs_in_state(JobState::Running, None, None, 10)
                        .await
                        .unwrap()
                        .len()
                        == 1
            }
        })
        .await
    );
    let retrying = t
        .queue
        .jobs_in_state(JobState::Retrying, Some("11111111"), Some("run-x"), 10)
        .await
        .unwrap();
    assert_eq!(retrying.len(), 2);
    for j in &retrying {
        assert_eq!(j.attempts, 1);
        assert_eq!(j.last_error_class.as_deref(), Some("target.storage"));
        let due = j.run_at.expect("next attempt time");
        assert!(due > chrono::Utc::now() + chrono::Duration::seconds(500));
    }
    assert!(
        t.queue
            .jobs_in_state(JobState::Retrying, Some("99999999"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let running = t
        .queue
        .jobs_in_state(JobState::Running, None, None, 10)
        .await
        .unwrap();
    assert!(
        running[0]
            .worker
            .as_deref()
            .is_some_and(|w| w.contains("sync_department"))
    );
    let text = cli(
        &t,
        &["queue", "jobs", "--state", "retrying", "--cvr", "11111111"],
    )
    .await
    .unwrap();
    assert!(text.contains("disk full"), "{text}");
    assert!(text.contains("2 retrying jobs"), "{text}");
    assert!(
        t.queue
            .jobs_in_state(JobState::Dead, None, None, 10)
            .await
            .is_err()
    );
    release.notify_one();
    stop();
    join.await.unwrap();
    t.cleanup().await;
}
