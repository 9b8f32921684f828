//! Every run ends: a run whose `SyncCustomer` job is dead-lettered without its handler seeing
//! the last attempt (here: a payload that no longer decodes, as after an incompatible
//! upgrade) is ended by the queue's death notice: failed, naming the dead letter, its lock
//! released so the next run starts.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use std::time::Duration;

use common::{TestApp, fixture};
use orgsync_jobs::report::{RunState, Trigger};
use orgsync_model::error_class::ErrorClass;
use orgsync_model::testing::policy;
use orgsync_queue::{JobId, JobState};
use orgsync_sts_sim::server::{FaultKind, ScriptedFault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_sync_job_cannot_be_decoded_ends_failed_and_frees_the_customer() {
    let app = TestApp::start(fixture(), policy()).await;
    // The run's job waits 2 s; meanwhile its payload is changed to something no handler reads.
    let run = app
        .pipeline
        .enqueue_run(
            common::CVR,
            Trigger::Manual {
                by: "test".to_owned(),
            },
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let prefix = app.queue.config().key_prefix.clone();
    let _: () = redis::cmd("HSET")
        .arg(format!("{prefix}:job:{}", run.job_id))
        .arg("payload")
        .arg(r#"{"customer_cvr":"upgraded"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        app.pipeline.report(&run.run_id).await.unwrap().state,
        RunState::Queued
    );

    // Without the death notice the run would stay queued for ever (no handler ever sees it).
    let report = app.report_when(&run.run_id, |r| r.state.is_final()).await;
    assert_eq!(report.state, RunState::Failed, "{}", report.to_text());
    assert_eq!(report.error_class, Some(ErrorClass::JobUndecodable));
    let why = report.error.clone().unwrap();
    assert!(why.contains(&run.job_id), "names the dead letter: {why}");
    assert!(why.contains("orgsync dlq replay"), "{why}");
    let dead = app
        .queue
        .job(&JobId::new(run.job_id.as_str()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.state, orgsync_queue::JobState::Dead);
    // One notice per death: the notice job has the dead letter's id with `.died`.
    let notice = app
        .queue
        .job(&JobId::new(format!("{}.died", run.job_id).as_str()))
        .await
        .unwrap()
        .expect("the death notice job");
    assert_eq!(notice.job_type, "DeathNotice");
    // The observer (support tickets) heard that the run ended.
    assert!(
        app.observed
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.run_id == run.run_id && r.state == RunState::Failed)
    );
    // The customer is free: the next run starts and succeeds.
    assert_eq!(app.pipeline.active_run(common::CVR).await.unwrap(), None);
    let next = app.sync().await;
    assert_eq!(next.state, RunState::Succeeded, "{}", next.to_text());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_to_stop_cancels_a_read_in_progress_and_hands_the_job_back() {
    let mut app = TestApp::start(fixture(), policy()).await;
    // The unit tree's first page hangs for ten minutes: the read would not end by itself.
    app.sim.inject(ScriptedFault {
        target: "fremsoegobjekthierarki".to_owned(),
        after: 0,
        times: 1,
        kind: FaultKind::Delay(Duration::from_secs(600)),
    });
    let run = app
        .pipeline
        .enqueue_run(
            common::CVR,
            Trigger::Manual {
                by: "test".to_owned(),
            },
            Duration::ZERO,
        )
        .await
        .unwrap();
    app.report_when(&run.run_id, |r| r.state == RunState::Reading)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The worker stops promptly instead of waiting for the read.
    let took = app.stop_worker().await;
    assert!(
        took < Duration::from_secs(5),
        "the worker took {took:?} to stop"
    );
    let job = app
        .queue
        .job(&JobId::new(run.job_id.clone()))
        .await
        .unwrap()
        .unwrap();
    // Handed back: waiting for the next worker, no attempt spent, not dead-lettered.
    assert_eq!(job.state, JobState::Waiting, "{job:?}");
    assert_eq!(job.attempts, 0, "{job:?}");

    // The next worker starts the run over (the hanging page was a one-off) and completes it.
    app.start_worker();
    let report = app.wait(&run.run_id).await;
    assert_eq!(report.state, RunState::Succeeded, "{}", report.to_text());
    app.finish().await;
}
