//! A read that STS cuts short (issue #13 item 4): an outage part-way through the read is waited
//! out by the job's retries like one at the start; a read that stays partial through every
//! attempt holds its deactivations marked unread, and a release refuses them without
//! `include_unread`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use common::{TestApp, fixture, user};
use orgsync_jobs::pipeline::PipelineError;
use orgsync_jobs::release::{ReleaseOptions, release, release_with};
use orgsync_jobs::report::RunState;
use orgsync_model::error_class::ErrorClass;
use orgsync_model::plan::HoldReason;
use orgsync_model::testing::{p, policy};
use orgsync_sts_sim::server::{FaultKind, ScriptedFault};

/// The in-domain users of the fixture (Eva is outside the customer's domains).
const IN_DOMAIN: [&str; 5] = [
    "anne@kommune.dk",
    "bo@kommune.dk",
    "carl@kommune.dk",
    "dorthe@kommune.dk",
    "finn@kommune.dk",
];

/// The user list fails with HTTP 503 for `times` calls (the test client tries each call twice).
fn users_down(times: u32) -> ScriptedFault {
    ScriptedFault {
        target: "bruger/list".to_owned(),
        after: 0,
        times,
        kind: FaultKind::Http(503),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_part_way_through_the_read_is_retried_as_a_whole_and_deactivates_nothing() {
    let app = TestApp::start(fixture(), policy()).await;
    let first = app.sync().await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.to_text());

    // STS goes down after the searches have run: the one Bruger list batch fails for good in
    // the first read (both of the client's attempts), then STS is back.
    app.sim.inject(users_down(2));
    let second = app.sync().await;
    assert_eq!(second.state, RunState::Succeeded, "{}", second.to_text());
    assert!(second.held.is_none(), "{}", second.to_text());
    let summary = second.summary.unwrap();
    assert_eq!(summary.users.deactivate, 0, "{}", second.to_text());
    assert_eq!(summary.held, 0);
    assert_eq!(app.sim.stats().faults_injected, 2);
    // The first attempt failed as a retriable partial read and the whole read was redone.
    let errors = app
        .queue
        .error_log(&orgsync_queue::ErrorLogQuery::default())
        .await
        .unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.class == ErrorClass::StsPartialRead.as_str() && e.attempt == 1),
        "{errors:?}"
    );
    let state = app.state().await;
    for n in [1, 2, 3, 4, 6] {
        assert!(user(&state, p(n)).unwrap().active, "p{n} is still in STS");
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_stays_partial_through_every_attempt_holds_its_deactivations_as_unread_and_release_refuses_them()
 {
    let app = TestApp::start(fixture(), policy()).await;
    let first = app.sync().await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.to_text());

    app.sim.inject(users_down(1000));
    let held = app.sync().await;
    assert_eq!(held.state, RunState::Held, "{}", held.to_text());
    // Three attempts (the test worker's retry policy), each one read: two calls per read.
    assert_eq!(app.sim.stats().faults_injected, 6, "{}", held.to_text());
    let list = held.held.clone().unwrap();
    assert_eq!(list.reasons, vec![HoldReason::PartialRead]);
    let mut names: Vec<&str> = list
        .users
        .iter()
        .map(|u| u.fields.user_name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, IN_DOMAIN);
    // Every one of them is unread, not absent: their Bruger list batch failed.
    assert_eq!(list.unread.users.len(), 5);
    assert!(list.users.iter().all(|u| list.is_unread_user(u)));
    let text = held.to_text();
    let marked = text
        .lines()
        .filter(|l| l.starts_with("  deactivate user ") && l.ends_with(" [unread]"))
        .count();
    assert_eq!(marked, 5, "{text}");

    // A release refuses to deactivate them, saying how many and why.
    let refused = release(&app.pipeline, &held.run_id, "anna").await;
    match refused {
        Err(PipelineError::UnreadHeld {
            users, departments, ..
        }) => {
            assert_eq!((users, departments), (5, 0));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        app.pipeline.report(&held.run_id).await.unwrap().state,
        RunState::Held
    );
    let state = app.state().await;
    for n in [1, 2, 3, 4, 6] {
        assert!(user(&state, p(n)).unwrap().active, "p{n} was deactivated");
    }

    // With the explicit flag they are deactivated, and the release says so.
    let released = release_with(
        &app.pipeline,
        &held.run_id,
        "anna",
        ReleaseOptions {
            include_unread: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(released.state, RunState::Released);
    let record = released.release.unwrap();
    assert_eq!((record.applied, record.unread_included), (5, 5));
    let state = app.state().await;
    for n in [1, 2, 3, 4, 6] {
        assert!(!user(&state, p(n)).unwrap().active, "p{n}");
    }
    app.finish().await;
}
