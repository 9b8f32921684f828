//! The pipeline end to end: real Redis, the STS simulator over the real protocol, the SQLite
//! target, a worker running SyncCustomer → SyncDepartment × N → FinishRun.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use std::collections::BTreeSet;

use common::{TestApp, department, fixture, user};
use orgsync_jobs::report::{RunState, Trigger};
use orgsync_model::ids::Domain;
use orgsync_model::plan::{Action, HoldReason};
use orgsync_model::target::TargetState;
use orgsync_model::testing::{inactive, p, policy, u, unit, user as sts_user};
use orgsync_model::validate::validate;
use orgsync_queue::DeadLetterFilter;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions};

/// The fields a sync decides, sorted, for comparing targets.
fn essentials(state: &TargetState) -> (Vec<String>, Vec<String>) {
    let mut departments: Vec<String> = state
        .departments
        .iter()
        .map(|d| {
            format!(
                "{:?} {} {:?} {}",
                d.external_id, d.title, d.parent, d.active
            )
        })
        .collect();
    departments.sort();
    let mut users: Vec<String> = state
        .users
        .iter()
        .map(|u| {
            format!(
                "{:?} {} {:?} {:?} {:?} {:?} {}",
                u.external_id,
                u.user_name,
                u.first_name,
                u.last_name,
                u.memberships,
                u.primary_department,
                u.active
            )
        })
        .collect();
    users.sort();
    (departments, users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_run_creates_every_eligible_department_and_user_and_a_second_run_writes_nothing()
{
    let truth = generate(
        &common::cvr(),
        Size::Xs,
        7,
        orgsync_model::time::danish_date(&chrono::Utc::now()),
    );
    let mut policy = policy();
    policy.domains = vec![Domain::parse(&domain_of(Size::Xs)).unwrap()];
    let app = TestApp::start(truth.clone(), policy.clone()).await;

    let first = app.sync().await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.to_text());

    // The target equals what the model says a full sync of the truth gives.
    let valid = validate(
        orgsync_sts_sim::generate::expected_read(
            &truth,
            orgsync_model::time::danish_date(&chrono::Utc::now()),
        ),
        &policy,
        None,
    )
    .unwrap();
    let plan = orgsync_model::plan::plan(
        &valid,
        &TargetState::default(),
        &policy,
        orgsync_model::time::danish_date(&chrono::Utc::now()),
    );
    let mut expected = TargetState::default();
    expected.apply(&plan);
    let state = app.state().await;
    assert_eq!(essentials(&state), essentials(&expected));
    let summary = first.summary.unwrap();
    assert_eq!(summary.users.create as usize, state.users.len());
    assert_eq!(summary.departments.create as usize, state.departments.len());
    assert!(
        summary.skipped > 0,
        "the xs municipality has ineligible users, counted by reason"
    );
    assert_eq!(
        first.writes.written,
        summary.users.create + summary.departments.create
    );
    assert!(
        first.departments_total > 1,
        "users were written by department jobs"
    );
    assert_eq!(first.departments_done, first.departments_total);
    assert!(first.sts_calls > 0);

    let changes_before = app.sqlite().total_changes().await.unwrap();
    let second = app.sync().await;
    assert_eq!(second.state, RunState::Succeeded, "{}", second.to_text());
    assert_eq!(second.writes.written, 0, "{}", second.to_text());
    assert_eq!(second.departments_total, 0, "no department has changes");
    assert_eq!(app.sqlite().total_changes().await.unwrap(), changes_before);
    assert_eq!(essentials(&app.state().await), essentials(&state));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_report_shows_the_reads_progress_while_it_reads() {
    let app = TestApp::start(fixture(), policy()).await;
    // Every call takes 300 ms, so the read lasts several recording intervals (100 ms here).
    app.sim.set_options(SimOptions {
        latency: LatencyModel::fixed(300),
        ..app.sim.options()
    });
    let run = app
        .pipeline
        .enqueue_run(
            common::CVR,
            Trigger::Manual {
                by: "test".to_owned(),
            },
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let during = loop {
        let report = app.pipeline.report(&run.run_id).await.unwrap();
        // The first figure is the read's start (0 calls); wait for one with calls made.
        if let Some(progress) = report.read_progress.filter(|p| !p.done && p.calls > 0) {
            assert_eq!(report.state, RunState::Reading);
            break (progress, report.to_text());
        }
        assert!(
            report.state == RunState::Queued || report.state == RunState::Reading,
            "the read ended before any progress was seen: {}",
            report.to_text()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            report.to_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (progress, text) = during;
    assert!(
        text.contains(&format!("reading:      {} calls, ", progress.calls)),
        "{text}"
    );

    let ended = app.wait(&run.run_id).await;
    assert_eq!(ended.state, RunState::Succeeded, "{}", ended.to_text());
    let last = ended.read_progress.unwrap();
    assert!(last.done);
    assert_eq!(last.calls, ended.sts_calls);
    assert!(last.calls > progress.calls, "{last:?} after {progress:?}");
    assert!(last.objects >= progress.objects);
    // The report's JSON carries it for the dashboard.
    let json = serde_json::to_value(&ended).unwrap();
    assert_eq!(json["read_progress"]["calls"], last.calls);
    assert_eq!(json["read_progress"]["done"], true);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_in_sts_changes_exactly_that_in_the_target_and_plan_lists_exactly_it() {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let before = app.state().await;

    // Rename unit 2, move unit 4 under 2, move user 1 to unit 3, deactivate user 2, remove
    // unit 5 (its user 6 moves to unit 2), add user 7.
    let mut changed = fixture();
    changed.units.retain(|x| x.uuid != u(5));
    changed
        .units
        .iter_mut()
        .find(|x| x.uuid == u(2))
        .unwrap()
        .name = "Økonomi og Løn".to_owned();
    changed
        .units
        .iter_mut()
        .find(|x| x.uuid == u(4))
        .unwrap()
        .parent_uuid = Some(u(2));
    changed.users[0].positions = vec![orgsync_model::testing::position(3)];
    changed.users[1].active = false;
    changed.users[5].positions = vec![orgsync_model::testing::position(2)];
    changed
        .users
        .push(sts_user(7, "Gitte Friis", "gitte@kommune.dk", &[4]));
    app.sim.replace(changed);

    let plan = app.pipeline.plan(common::CVR).await.unwrap();
    let mut listed: Vec<(Action, String)> = plan
        .departments
        .iter()
        .map(|d| (d.action, d.external_id.to_string()))
        .chain(
            plan.users
                .iter()
                .map(|x| (x.action, x.external_id.unwrap().to_string())),
        )
        .collect();
    listed.sort();
    let mut expected = vec![
        (Action::Update, u(2).to_string()),
        (Action::Update, u(4).to_string()),
        (Action::Deactivate, u(5).to_string()),
        (Action::Update, p(1).to_string()),
        (Action::Deactivate, p(2).to_string()),
        (Action::Update, p(6).to_string()),
        (Action::Create, p(7).to_string()),
    ];
    expected.sort();
    assert_eq!(listed, expected, "{}", plan.to_text());
    assert_eq!(app.state().await, before, "plan wrote nothing");

    let report = app.sync().await;
    assert_eq!(report.state, RunState::Succeeded, "{}", report.to_text());
    let mut after_expected = before.clone();
    after_expected.apply(&plan);
    let after = app.state().await;
    assert_eq!(essentials(&after), essentials(&after_expected));
    assert_eq!(department(&after, u(2)).unwrap().title, "Økonomi og Løn");
    assert_eq!(department(&after, u(4)).unwrap().parent, Some(u(2)));
    assert!(!department(&after, u(5)).unwrap().active);
    assert_eq!(user(&after, p(1)).unwrap().primary_department, Some(u(3)));
    assert!(!user(&after, p(2)).unwrap().active);
    assert!(user(&after, p(7)).unwrap().active);
    // Everything else is as it was.
    assert_eq!(user(&after, p(3)), user(&before, p(3)));
    assert_eq!(department(&after, u(3)), department(&before, u(3)));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_domains_is_never_deactivated_and_a_returning_user_is_reactivated() {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);

    // Anne (kommune.dk) and Eva (andet-firma.dk) leave.
    let mut gone = fixture();
    gone.users.retain(|x| x.uuid != p(1) && x.uuid != p(5));
    app.sim.replace(gone);
    let report = app.sync().await;
    assert_eq!(report.state, RunState::Succeeded, "{}", report.to_text());
    let state = app.state().await;
    assert!(
        !user(&state, p(1)).unwrap().active,
        "in the domains: deactivated"
    );
    assert!(
        user(&state, p(5)).unwrap().active,
        "outside the domains: never touched"
    );
    assert_eq!(report.summary.unwrap().kept_outside_domains, 1);

    // Anne comes back.
    app.sim.replace(fixture());
    let report = app.sync().await;
    assert_eq!(
        report.summary.unwrap().users.reactivate,
        1,
        "{}",
        report.to_text()
    );
    assert!(user(&app.state().await, p(1)).unwrap().active);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_department_job_holds_the_deactivations_is_dead_lettered_and_its_replay_completes_its_users()
 {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);

    // Bo leaves; Gitte joins unit 4, whose writes now fail permanently (401).
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(2));
    changed
        .users
        .push(sts_user(7, "Gitte Friis", "gitte@kommune.dk", &[4]));
    app.sim.replace(changed);
    app.fail_department(Some(u(4)));
    let report = app.sync().await;
    assert_eq!(report.state, RunState::Held, "{}", report.to_text());
    let held = report.held.as_ref().unwrap();
    assert!(held.reasons.contains(&HoldReason::RunFailed));
    assert!(held.reason.contains("Kantine"), "{}", held.reason);
    assert_eq!(report.failed_departments.len(), 1);
    assert_eq!(report.failed_departments[0].unit, u(4).0);
    assert!(
        report.to_text().contains("FAILED: Kantine"),
        "{}",
        report.to_text()
    );
    let state = app.state().await;
    assert!(user(&state, p(2)).unwrap().active, "nobody is deactivated");
    assert!(user(&state, p(7)).is_none());

    // The job is in the dead-letter queue.
    let dead = app
        .queue
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let job_id = dead[0].job_id.clone();
    assert_eq!(job_id.as_str(), report.failed_departments[0].job_id);

    // Fixed and replayed: the department's users are written, the report says so.
    app.fail_department(None);
    app.queue.replay(&job_id, "support").await.unwrap();
    let report = app
        .report_when(&report.run_id, |r| {
            r.failed_departments[0].recovered_at.is_some()
        })
        .await;
    assert!(
        user(&app.state().await, p(7)).is_some(),
        "the replay wrote Gitte"
    );
    assert_eq!(
        app.pipeline.active_run(common::CVR).await.unwrap(),
        None,
        "the replay released the lock it took"
    );
    assert!(
        report.failed_departments[0].recovered_at.is_some(),
        "{}",
        report.to_text()
    );
    assert!(user(&app.state().await, p(2)).unwrap().active, "still held");

    // A person releases the held deactivation.
    let released = orgsync_jobs::release::release(&app.pipeline, &report.run_id, "anna")
        .await
        .unwrap();
    assert_eq!(released.state, RunState::Released);
    assert_eq!(released.release.as_ref().unwrap().by, "anna");
    assert_eq!(released.release.as_ref().unwrap().applied, 1);
    assert!(!user(&app.state().await, p(2)).unwrap().active);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_drops_half_its_users_holds_the_run_and_release_applies_the_deactivations() {
    let mut policy = policy();
    policy.guards.max_source_drop_percent = 20.0;
    let app = TestApp::start(fixture(), policy).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);

    let mut halved = fixture();
    halved.users.truncate(3);
    app.sim.replace(halved);
    let report = app.sync().await;
    assert_eq!(report.state, RunState::Held, "{}", report.to_text());
    let held = report.held.as_ref().unwrap();
    assert!(held.reasons.contains(&HoldReason::SourceDrop));
    assert!(held.reason.contains("fell from 6 to 3"), "{}", held.reason);
    let text = report.to_text();
    assert!(
        text.contains("HELD:") && text.contains(&format!("orgsync runs release {}", report.run_id)),
        "{text}"
    );
    let state = app.state().await;
    assert!(
        state.users.iter().all(|x| x.active),
        "nothing is deactivated"
    );
    assert!(state.departments.iter().all(|x| x.active));

    // Two releases at once: exactly one applies.
    let (a, b) = tokio::join!(
        orgsync_jobs::release::release(&app.pipeline, &report.run_id, "anna"),
        orgsync_jobs::release::release(&app.pipeline, &report.run_id, "bo"),
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    let released = a.or(b).unwrap();
    assert_eq!(released.state, RunState::Released);
    let applied = released.release.as_ref().unwrap().applied;
    assert_eq!(
        applied,
        2,
        "Dorthe and Finn (Eva is outside the domains): {}",
        released.to_text()
    );
    let state = app.state().await;
    assert!(!user(&state, p(4)).unwrap().active);
    assert!(!user(&state, p(6)).unwrap().active);
    assert!(user(&state, p(5)).unwrap().active);
    let again = orgsync_jobs::release::release(&app.pipeline, &report.run_id, "anna").await;
    assert!(again.unwrap_err().to_string().contains("not held"));

    // The smaller organisation is the new baseline: the next run is not held.
    let next = app.sync().await;
    assert_eq!(next.state, RunState::Succeeded, "{}", next.to_text());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_department_job_of_a_superseded_run_does_nothing_and_says_so() {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(2));
    changed
        .users
        .push(sts_user(7, "Gitte Friis", "gitte@kommune.dk", &[4]));
    app.sim.replace(changed.clone());
    app.fail_department(Some(u(4)));
    let old = app.sync().await;
    assert_eq!(old.state, RunState::Held, "{}", old.to_text());
    assert_eq!(old.failed_departments.len(), 1);

    // A newer run writes Gitte itself.
    app.fail_department(None);
    let newer = app.sync().await;
    assert_eq!(newer.state, RunState::Succeeded, "{}", newer.to_text());
    let changes = app.sqlite().total_changes().await.unwrap();

    // Replaying the old run's dead job changes nothing and says so in the old report.
    let job = orgsync_queue::JobId::new(old.failed_departments[0].job_id.clone());
    app.queue.replay(&job, "support").await.unwrap();
    let report = app
        .report_when(&old.run_id, |r| {
            r.notes.iter().any(|n| n.contains("superseded"))
        })
        .await;
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains(&format!("superseded by run {}", newer.run_id))),
        "{}",
        report.to_text()
    );
    assert_eq!(app.sqlite().total_changes().await.unwrap(), changes);
    // And a release of the superseded run is refused.
    let refused = orgsync_jobs::release::release(&app.pipeline, &old.run_id, "anna").await;
    assert!(refused.unwrap_err().to_string().contains("superseded"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_snapshot_fails_the_run_with_its_reason_and_writes_nothing() {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let changes = app.sqlite().total_changes().await.unwrap();

    // Two roots: unit 3 loses its parent.
    let mut broken = fixture();
    broken
        .units
        .iter_mut()
        .find(|x| x.uuid == u(3))
        .unwrap()
        .parent_uuid = None;
    broken.units.push(inactive(unit(9, "Gammel", Some(1))));
    app.sim.replace(broken);
    let report = app.sync().await;
    assert_eq!(report.state, RunState::Failed, "{}", report.to_text());
    assert!(
        report.error.as_deref().unwrap().contains("have no parent"),
        "{}",
        report.to_text()
    );
    assert_eq!(app.sqlite().total_changes().await.unwrap(), changes);
    let dead = app
        .queue
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    assert_eq!(
        dead.len(),
        1,
        "the failed SyncCustomer waits in the dead-letter queue"
    );
    assert_eq!(dead[0].final_error_class.as_deref(), Some("sts.bad_data"));
    assert_eq!(
        report.error_class,
        Some(orgsync_model::error_class::ErrorClass::StsBadData)
    );
    let users: BTreeSet<bool> = app.state().await.users.iter().map(|x| x.active).collect();
    assert_eq!(users, BTreeSet::from([true]));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_department_without_deactivations_marks_the_run_partly_failed_until_its_replay_succeeds()
 {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let mut changed = fixture();
    changed
        .users
        .push(sts_user(7, "Gitte Friis", "gitte@kommune.dk", &[4]));
    app.sim.replace(changed);
    app.fail_department(Some(u(4)));
    let report = app.sync().await;
    assert_eq!(report.state, RunState::PartlyFailed, "{}", report.to_text());
    assert!(report.held.is_none());

    app.fail_department(None);
    let job = orgsync_queue::JobId::new(report.failed_departments[0].job_id.clone());
    app.queue.replay(&job, "support").await.unwrap();
    let now = app
        .report_when(&report.run_id, |r| r.state == RunState::Succeeded)
        .await;
    assert_eq!(now.state, RunState::Succeeded, "{}", now.to_text());
    assert!(user(&app.state().await, p(7)).is_some());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_into_a_scim_server_creates_everything_and_a_second_run_sends_no_write_request() {
    let app = TestApp::start_scim(fixture(), policy()).await;
    let first = app.sync().await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.to_text());
    let state = app.state().await;
    assert_eq!(state.departments.len(), 5);
    assert_eq!(state.users.len(), 6);
    assert_eq!(
        user(&state, p(4)).unwrap().memberships,
        BTreeSet::from([u(2), u(3)])
    );
    let scim = app.scim.as_ref().unwrap();
    let writes = scim.writes().await;
    assert!(
        writes >= 11,
        "{writes} write requests for 5 groups and 6 users"
    );

    let second = app.sync().await;
    assert_eq!(second.state, RunState::Succeeded, "{}", second.to_text());
    assert_eq!(second.writes.written, 0);
    assert_eq!(
        scim.writes().await,
        writes,
        "no write request on a run without changes"
    );

    // A user leaves: exactly one write request more (the deactivation PATCH/PUT), or a few
    // for the group membership.
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(3));
    app.sim.replace(changed);
    let third = app.sync().await;
    assert_eq!(third.state, RunState::Succeeded, "{}", third.to_text());
    assert!(!user(&app.state().await, p(3)).unwrap().active);
    assert!(scim.writes().await > writes);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_while_one_is_active_is_refused_and_says_which_run_holds_the_customer() {
    let app = TestApp::start(fixture(), policy()).await;
    let mut options = app.sim.options();
    options.latency = orgsync_sts_sim::server::LatencyModel::fixed(300);
    app.sim.set_options(options);
    let by = || orgsync_jobs::report::Trigger::Manual {
        by: "test".to_owned(),
    };
    let zero = std::time::Duration::ZERO;
    let first = app
        .pipeline
        .enqueue_run(common::CVR, by(), zero)
        .await
        .unwrap();
    // Wait until the first run holds the customer's lock.
    for _ in 0..200 {
        if app
            .pipeline
            .active_run(common::CVR)
            .await
            .unwrap()
            .is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let second = app
        .pipeline
        .enqueue_run(common::CVR, by(), zero)
        .await
        .unwrap();
    let refused = app.wait(&second.run_id).await;
    assert_eq!(refused.state, RunState::Refused, "{}", refused.to_text());
    assert!(
        refused.error.as_deref().unwrap().contains(&first.run_id),
        "{}",
        refused.to_text()
    );
    assert_eq!(app.wait(&first.run_id).await.state, RunState::Succeeded);
    assert_eq!(
        app.pipeline.active_run(common::CVR).await.unwrap(),
        None,
        "the lock is released"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_missed_during_downtime_runs_once_within_the_grace_period_and_not_after_it() {
    use chrono::{Duration, Utc};
    use orgsync_jobs::scheduler::{NextFire, ScheduledCustomer, enqueue_due};
    let app = TestApp::start(fixture(), policy()).await;
    let now = Utc::now();
    let fires = [
        now - Duration::hours(3),
        now - Duration::hours(2),
        now - Duration::minutes(30),
    ];
    let next_after: NextFire =
        std::sync::Arc::new(move |after| fires.iter().copied().find(|f| *f > after));
    let customers = vec![ScheduledCustomer {
        cvr: common::CVR.to_owned(),
        next_after,
        jitter: std::time::Duration::ZERO,
    }];

    // A scheduler starting now with a 6-hour grace: the three missed fires run once, as the latest.
    let started = enqueue_due(&app.pipeline, &customers, now - Duration::hours(6), now).await;
    assert_eq!(started.len(), 1);
    let run = started[0].as_ref().unwrap();
    assert!(!run.duplicate);
    let report = app.wait(&run.run_id).await;
    assert_eq!(report.state, RunState::Succeeded);
    match report.trigger {
        orgsync_jobs::report::Trigger::Schedule { fire } => {
            assert_eq!(fire.timestamp(), (now - Duration::minutes(30)).timestamp());
        }
        other => panic!("{other:?}"),
    }
    // Another scheduler (or a restart) finds the same fire already enqueued.
    let again = enqueue_due(&app.pipeline, &customers, now - Duration::hours(6), now).await;
    assert!(again[0].as_ref().unwrap().duplicate);
    assert_eq!(again[0].as_ref().unwrap().run_id, run.run_id);
    // With a 10-minute grace nothing is due.
    let none = enqueue_due(&app.pipeline, &customers, now - Duration::minutes(10), now).await;
    assert!(none.is_empty());
    assert_eq!(
        app.pipeline
            .reports(Some(common::CVR), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_finish_run_fails_the_run_and_its_replay_deactivates_only_while_no_newer_run_decides()
 {
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let finish_job = |report: &orgsync_jobs::report::RunReport| {
        let error = report.error.clone().unwrap();
        let id = error
            .split("orgsync dlq replay ")
            .nth(1)
            .unwrap()
            .trim_end_matches('`');
        orgsync_queue::JobId::new(id.to_owned())
    };

    // Bo leaves, but the target refuses deactivations: FinishRun is dead-lettered, the run
    // says it failed and which job to replay.
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(2));
    app.sim.replace(changed);
    app.fail_deactivations(true);
    let failed = app.sync().await;
    assert_eq!(failed.state, RunState::Failed, "{}", failed.to_text());
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("deactivations were not applied")
    );
    assert!(user(&app.state().await, p(2)).unwrap().active);
    assert_eq!(
        app.pipeline.active_run(common::CVR).await.unwrap(),
        None,
        "the lock is released"
    );

    // Fixed and replayed: the run finishes, later than planned, so its deactivations wait for
    // a person; the release re-checks them and deactivates Bo.
    app.fail_deactivations(false);
    app.queue
        .replay(&finish_job(&failed), "support")
        .await
        .unwrap();
    let finished = app
        .report_when(&failed.run_id, |r| r.state == RunState::Held)
        .await;
    assert!(finished.error.is_none());
    assert!(
        finished
            .held
            .as_ref()
            .unwrap()
            .reasons
            .contains(&HoldReason::Replayed),
        "{}",
        finished.to_text()
    );
    assert!(user(&app.state().await, p(2)).unwrap().active);
    let released = orgsync_jobs::release::release(&app.pipeline, &failed.run_id, "anna")
        .await
        .unwrap();
    assert_eq!(released.release.as_ref().unwrap().applied, 1);
    assert!(!user(&app.state().await, p(2)).unwrap().active);

    // Carl leaves; FinishRun dies again. Carl comes back and a newer run succeeds. Replaying
    // the old FinishRun now must not deactivate Carl on its stale plan.
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(2) && x.uuid != p(3));
    app.sim.replace(changed);
    app.fail_deactivations(true);
    let old = app.sync().await;
    assert_eq!(old.state, RunState::Failed, "{}", old.to_text());
    app.fail_deactivations(false);
    let mut back = fixture();
    back.users.retain(|x| x.uuid != p(2));
    app.sim.replace(back);
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    app.queue
        .replay(&finish_job(&old), "support")
        .await
        .unwrap();
    let held = app
        .report_when(&old.run_id, |r| r.state == RunState::Held)
        .await;
    assert!(
        held.held
            .as_ref()
            .unwrap()
            .reasons
            .contains(&HoldReason::Superseded),
        "{}",
        held.to_text()
    );
    assert!(user(&app.state().await, p(3)).unwrap().active, "Carl stays");
    let refused = orgsync_jobs::release::release(&app.pipeline, &old.run_id, "anna").await;
    assert!(refused.unwrap_err().to_string().contains("superseded"));
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_records_each_deactivation_the_target_rejects() {
    let mut policy = policy();
    policy.guards.max_deactivations = 0; // every deactivation waits for a person
    let app = TestApp::start(fixture(), policy).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(2));
    app.sim.replace(changed);
    let held = app.sync().await;
    assert_eq!(held.state, RunState::Held, "{}", held.to_text());
    assert!(
        held.held
            .as_ref()
            .unwrap()
            .reasons
            .contains(&HoldReason::OverCount)
    );
    assert!(
        held.to_text().contains("deactivate user bo@kommune.dk"),
        "{}",
        held.to_text()
    );

    app.reject_deactivations(true);
    let released = orgsync_jobs::release::release(&app.pipeline, &held.run_id, "anna")
        .await
        .unwrap();
    let release = released.release.as_ref().unwrap();
    assert_eq!(release.applied, 0);
    assert_eq!(release.rejected.len(), 1, "{}", released.to_text());
    assert!(release.rejected[0].contains("locked by an administrator"));
    assert!(
        released.to_text().contains("REJECTED"),
        "{}",
        released.to_text()
    );
    assert!(user(&app.state().await, p(2)).unwrap().active);
    app.finish().await;
}

/// Polls the run's report every 10 ms until it is final, returning every (state, departments
/// done) seen, in order, without repeats.
async fn states_seen(app: &TestApp, run_id: &str) -> Vec<(RunState, u64)> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen: Vec<(RunState, u64)> = Vec::new();
    loop {
        let report = app.pipeline.report(run_id).await.unwrap();
        let now = (report.state, report.departments_done);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if report.state.is_final() {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_departments_as_they_finish_and_says_finishing_while_deactivating() {
    let app = TestApp::start(fixture(), policy()).await;
    // Skole's department job fails on every attempt: its retries keep the run in `users` while
    // the other departments are done.
    app.fail_department(Some(u(3)));
    let enqueue = || async {
        app.pipeline
            .enqueue_run(
                common::CVR,
                Trigger::Manual {
                    by: "test".to_owned(),
                },
                std::time::Duration::ZERO,
            )
            .await
            .unwrap()
    };
    let run = enqueue().await;
    let seen = states_seen(&app, &run.run_id).await;
    let ended = app.pipeline.report(&run.run_id).await.unwrap();
    assert_eq!(ended.state, RunState::PartlyFailed, "{}", ended.to_text());
    let total = ended.departments_total;
    assert!(total >= 3, "{}", ended.to_text());
    assert!(
        seen.iter()
            .any(|(state, done)| *state == RunState::Users && *done > 0 && *done < total),
        "some departments were counted done while another still ran: {seen:?}"
    );
    app.fail_department(None);

    // Anne leaves; each write takes 400 ms, so applying her deactivation is seen.
    let mut gone = fixture();
    gone.users.retain(|x| x.uuid != p(1));
    app.sim.replace(gone);
    app.slow_writes(std::time::Duration::from_millis(400));
    let run = enqueue().await;
    let seen = states_seen(&app, &run.run_id).await;
    let ended = app.pipeline.report(&run.run_id).await.unwrap();
    assert_eq!(ended.state, RunState::Succeeded, "{}", ended.to_text());
    assert_eq!(ended.summary.unwrap().users.deactivate, 1);
    let states: Vec<RunState> = seen.iter().map(|(s, _)| *s).collect();
    let finishing = states.iter().position(|s| *s == RunState::Finishing);
    assert!(
        finishing.is_some_and(|i| states[i + 1..] == [RunState::Succeeded]),
        "finishing, then succeeded: {states:?}"
    );
    app.finish().await;
}
