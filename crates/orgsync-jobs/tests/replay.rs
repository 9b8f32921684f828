//! Bulk replay (issue #13 item 5): the dead department jobs of one run, replayed at once, share
//! the customer's lock instead of fighting over it, and a replay that finds the customer busy
//! waits without spending attempts.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, fixture, user};
use orgsync_jobs::report::RunState;
use orgsync_model::testing::{p, policy, snapshot, u, unit, user as sts_user};
use orgsync_queue::{DeadLetterFilter, Job, JobState};

const DEPARTMENTS: u128 = 300;
const USERS_PER_DEPARTMENT: u128 = 2;

/// Kommune (1) with 300 departments (2..=301) under it, two people in each.
fn three_hundred_departments() -> orgsync_model::snapshot::Snapshot {
    let mut units = vec![unit(1, "Kommune", None)];
    let mut users = Vec::new();
    for d in 0..DEPARTMENTS {
        let id = d + 2;
        units.push(unit(id, &format!("Afdeling {id}"), Some(1)));
        for k in 0..USERS_PER_DEPARTMENT {
            let n = d * USERS_PER_DEPARTMENT + k + 1;
            users.push(sts_user(
                n,
                &format!("Person{n} Hansen"),
                &format!("person{n}@kommune.dk"),
                &[id],
            ));
        }
    }
    snapshot(units, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_300_dead_department_jobs_at_once_spends_one_attempt_each_and_the_run_ends_succeeded()
 {
    let mut app = TestApp::start(three_hundred_departments(), policy()).await;
    // Four worker processes of 8 department jobs each: the replays really run concurrently.
    app.add_workers(3);

    // The target refuses every user write (a revoked token): every department job dies.
    app.fail_users(true);
    let failed = app.sync().await;
    assert_eq!(failed.state, RunState::PartlyFailed, "{}", failed.to_text());
    assert_eq!(failed.failed_departments.len() as u128, DEPARTMENTS);
    let run = DeadLetterFilter {
        run: Some(failed.run_id.clone()),
        ..DeadLetterFilter::default()
    };
    assert_eq!(
        app.queue.dead_letters(&run).await.unwrap().len() as u128,
        DEPARTMENTS
    );
    assert!(app.state().await.users.is_empty());

    // Fixed; all of the run's dead letters replayed at once (`orgsync dlq replay --all --run`,
    // the dashboard's "all matching").
    app.fail_users(false);
    let started = Instant::now();
    let replayed = app.queue.replay_matching(&run, "support").await.unwrap();
    assert_eq!(replayed.len() as u128, DEPARTMENTS);

    // Until every replay is terminal (succeeded, or dead: the failure this test is about).
    let deadline = Instant::now() + Duration::from_secs(120);
    let records = loop {
        let mut records = Vec::with_capacity(replayed.len());
        for r in &replayed {
            records.push(app.queue.job(&r.new_job).await.unwrap().unwrap());
        }
        if records
            .iter()
            .all(|r| matches!(r.state, JobState::Succeeded | JobState::Dead))
        {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the replays did not end within 120 s: {} succeeded, {} dead",
            records
                .iter()
                .filter(|r| r.state == JobState::Succeeded)
                .count(),
            records.iter().filter(|r| r.state == JobState::Dead).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    let dead = records.iter().filter(|r| r.state == JobState::Dead).count();
    let spent: u32 = records.iter().map(|r| r.attempts).sum();
    let snoozes: u32 = records.iter().map(|r| r.snoozes).sum();
    println!(
        "replayed {DEPARTMENTS} dead department jobs ({} users) in {:.2} s: {dead} dead-lettered, {spent} failed attempts, {snoozes} snoozes",
        DEPARTMENTS * USERS_PER_DEPARTMENT,
        elapsed.as_secs_f64()
    );
    assert_eq!(dead, 0, "a replay was dead-lettered");
    for r in &records {
        assert_eq!(r.state, JobState::Succeeded, "{r:?}");
        assert_eq!(
            r.attempts, 0,
            "replay {} spent a failed attempt: {:?}",
            r.job_id, r.last_error
        );
        assert_eq!(
            r.snoozes, 0,
            "replay {} waited for another replay of its run: {:?}",
            r.job_id, r.last_snooze
        );
    }
    assert!(app.queue.dead_letters(&run).await.unwrap().is_empty());

    let report = app
        .report_when(&failed.run_id, |r| r.state == RunState::Succeeded)
        .await;
    assert!(
        report
            .failed_departments
            .iter()
            .all(|f| f.recovered_at.is_some()),
        "{}",
        report.to_text()
    );
    assert_eq!(
        u128::from(report.achieved.users_recovered),
        DEPARTMENTS * USERS_PER_DEPARTMENT
    );
    assert_eq!(
        app.state().await.users.len() as u128,
        DEPARTMENTS * USERS_PER_DEPARTMENT
    );
    assert_eq!(
        app.pipeline.active_run(common::CVR).await.unwrap(),
        None,
        "the last replay freed the customer's lock"
    );
    assert!(
        elapsed < Duration::from_secs(60),
        "replaying {DEPARTMENTS} departments took {elapsed:?}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_finds_the_customer_busy_snoozes_without_spending_attempts_and_writes_once_it_is_free()
 {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let mut changed = fixture();
    changed
        .users
        .push(sts_user(7, "Gitte Friis", "gitte@kommune.dk", &[4]));
    app.sim.replace(changed);
    app.fail_department(Some(u(4)));
    let failed = app.sync().await;
    assert_eq!(failed.state, RunState::PartlyFailed, "{}", failed.to_text());
    app.fail_department(None);

    // Someone else (a new run, FinishRun, a release) holds the customer's run lock.
    let lock = format!("run-lock:{}", common::CVR);
    let ttl = Duration::from_secs(60);
    assert_eq!(
        app.queue
            .try_lock(&lock, "other-holder", ttl)
            .await
            .unwrap(),
        orgsync_queue::LockAttempt::Acquired
    );
    let dead = orgsync_queue::JobId::new(failed.failed_departments[0].job_id.clone());
    let replay = app.queue.replay(&dead, "support").await.unwrap();

    // The replay snoozes (200 ms at a time here) for longer than its 3 attempts' backoff would
    // last (100 ms, 200 ms), and spends none of them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = app.queue.job(&replay.new_job).await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Retrying, "{waiting:?}");
    assert_eq!(waiting.attempts, 0, "{waiting:?}");
    assert!(waiting.snoozes >= 3, "{waiting:?}");
    assert!(
        waiting
            .last_snooze
            .as_deref()
            .unwrap()
            .contains("other-holder holds 11111111"),
        "{waiting:?}"
    );
    assert_eq!(
        app.queue.lock_owner(&lock).await.unwrap().as_deref(),
        Some("other-holder"),
        "the replay never takes or releases a lock someone else holds"
    );
    assert!(user(&app.state().await, p(7)).is_none());
    let stats = app.queue.stats().await.unwrap();
    let departments = stats
        .job_types
        .iter()
        .find(|t| t.job_type == orgsync_jobs::SyncDepartment::JOB_TYPE)
        .unwrap();
    assert!(departments.snoozes >= 3, "{departments:?}");

    // Free: the replay writes Gitte and the run ends succeeded.
    assert!(app.queue.release_lock(&lock, "other-holder").await.unwrap());
    let report = app
        .report_when(&failed.run_id, |r| r.state == RunState::Succeeded)
        .await;
    assert!(
        user(&app.state().await, p(7)).is_some(),
        "{}",
        report.to_text()
    );
    let done = app.queue.job(&replay.new_job).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.attempts, 0, "no attempt was spent waiting: {done:?}");
    assert_eq!(app.pipeline.active_run(common::CVR).await.unwrap(), None);
    app.finish().await;
}
