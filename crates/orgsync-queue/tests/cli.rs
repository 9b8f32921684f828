//! The CLI pieces against a real Redis: dlq list/show/replay/delete and queue stats.

// Helpers outside #[test] functions unwrap too: a panic is the failure message here.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use clap::Parser;
use common::{TestQueue, wait_until};
use orgsync_queue::cli::{DlqCommand, QueueCommand, run_dlq, run_queue};
use orgsync_queue::{DeadLetterFilter, Job, JobError, NewJob, WorkerOptions};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dept {
    unit: String,
}
impl Job for Dept {
    const JOB_TYPE: &'static str = "sync_department";
}

async fn run(t: &TestQueue, args: &[&str]) -> anyhow::Result<String> {
    let cli = Cli::try_parse_from(std::iter::once("orgsync").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    match &cli.command {
        Command::Dlq(cmd) => run_dlq(cmd, &t.queue, &mut out).await?,
        Command::Queue(cmd) => run_queue(cmd, &t.queue, &mut out).await?,
    }
    Ok(String::from_utf8(out)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_and_queue_commands_render_tables_and_json_and_act() {
    let t = TestQueue::new("cli").await;
    let handler = |job: Dept| async move {
        Err::<(), _>(JobError::permanent(
            "fault",
            format!("unit {} has no service agreement", job.unit),
        ))
    };
    let (stop, join) = spawn_worker!(t.queue, Dept, WorkerOptions::fast_for_tests(), 2, handler);
    for (unit, cvr) in [("a", "11111111"), ("b", "22222222")] {
        t.queue
            .enqueue(
                NewJob::new(&Dept { unit: unit.into() })
                    .unwrap()
                    .customer(cvr),
            )
            .await
            .unwrap();
    }
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            async move {
                q.dead_letters(&DeadLetterFilter::default())
                    .await
                    .unwrap()
                    .len()
                    == 2
            }
        })
        .await
    );
    stop();
    join.await.unwrap();

    let list = run(&t, &["dlq", "list", "--cvr", "11111111"])
        .await
        .unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("ID "), "{list}");
    assert!(lines[0].contains("LAST ERROR"), "{list}");
    assert!(
        lines[1].contains("sync_department") && lines[1].contains("fault"),
        "{list}"
    );
    assert!(
        lines[1].contains("unit a has no service agreement"),
        "{list}"
    );
    assert_eq!(lines[2], "1 dead letters");
    // Columns line up.
    assert_eq!(lines[0].find("TYPE"), lines[1].find("sync_department"));

    let json = run(&t, &["dlq", "list", "--format", "json"]).await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 2);
    let id = value[0]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(value[0]["state"], "dead");

    let show = run(&t, &["dlq", "show", &id]).await.unwrap();
    assert!(show.contains("final class  fault"), "{show}");
    assert!(show.contains("\"unit\": \"a\""), "{show}");
    assert!(show.contains("ERROR CHAIN"), "{show}");

    let replay = run(&t, &["dlq", "replay", &id, "--by", "anna"])
        .await
        .unwrap();
    assert!(replay.contains("1 replayed by anna"), "{replay}");
    let again = run(&t, &["dlq", "replay", &id]).await.unwrap_err();
    // A second replay names the job that replaced the dead letter and where that one is.
    let new_job = replay
        .split_whitespace()
        .nth(5)
        .unwrap_or_default()
        .to_owned();
    assert!(
        again.to_string().contains("was replayed already (by anna)"),
        "{again}"
    );
    assert!(again.to_string().contains(&new_job), "{new_job}: {again}");

    let all = run(
        &t,
        &[
            "dlq", "replay", "--all", "--cvr", "22222222", "--format", "json",
        ],
    )
    .await
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 1);
    let second_new = value[0]["new_job"].as_str().unwrap().to_owned();
    assert!(!second_new.is_empty());

    let stats = run(&t, &["queue", "stats"]).await.unwrap();
    assert!(stats.starts_with("TYPE"), "{stats}");
    assert!(stats.contains("sync_department"), "{stats}");
    let stats = run(&t, &["queue", "stats", "--format", "json"])
        .await
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(value["job_types"][0]["waiting"], 2);
    assert_eq!(value["job_types"][0]["dead"], 0);

    // Kill the replays permanently again, then delete one.
    let (stop, join) = spawn_worker!(t.queue, Dept, WorkerOptions::fast_for_tests(), 2, handler);
    let q = t.queue.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let q = q.clone();
            async move {
                q.dead_letters(&DeadLetterFilter::default())
                    .await
                    .unwrap()
                    .len()
                    == 2
            }
        })
        .await
    );
    stop();
    join.await.unwrap();
    let deleted = run(&t, &["dlq", "delete", &second_new, "--by", "ops"])
        .await
        .unwrap();
    assert!(
        deleted.contains(&format!("deleted {second_new}")),
        "{deleted}"
    );
    let missing = run(&t, &["dlq", "delete", "nope"]).await.unwrap_err();
    assert!(
        missing.to_string().contains("no job with id nope"),
        "{missing}"
    );
    let audit = t.queue.audit_log(10).await.unwrap();
    assert_eq!(
        audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        ["replay", "replay", "delete"]
    );
    assert_eq!(audit[2].by, "ops");
    t.cleanup().await;
}
