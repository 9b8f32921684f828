//! What support relies on, end to end on the real pipeline: error classes on dead letters and
//! reports, planned vs achieved, the provisioning log behind `explain`, and `runs revert`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use common::{TestApp, fixture, user};
use orgsync_jobs::provisioning::{LogAction, LogFilter, Matched};
use orgsync_jobs::report::RunState;
use orgsync_model::error_class::ErrorClass;
use orgsync_model::testing::{p, policy, u, user as sts_user};
use orgsync_queue::DeadLetterFilter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_the_run_and_reason_of_a_deactivation_and_revert_undoes_exactly_it() {
    let app = TestApp::start(fixture(), policy()).await;
    let first = app.sync().await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.to_text());
    let created = app
        .pipeline
        .explain(common::CVR, "anne@kommune.dk", false)
        .await
        .unwrap();
    assert_eq!(created.history.len(), 1, "{}", created.to_text());
    assert_eq!(created.history[0].action, LogAction::Create);
    assert_eq!(created.history[0].matched, Some(Matched::Created));
    assert_eq!(created.history[0].run_id, first.run_id);

    // Anne and Finn leave STS: the next run deactivates both.
    let mut gone = fixture();
    gone.users.retain(|x| x.uuid != p(1) && x.uuid != p(6));
    app.sim.replace(gone);
    let second = app.sync().await;
    assert_eq!(second.state, RunState::Succeeded, "{}", second.to_text());
    assert_eq!(second.achieved.users.deactivate, 2, "{}", second.to_text());

    // "Why was Anne deactivated?" By e-mail, by user name or by UUID: the same answer.
    for key in ["anne@kommune.dk", "ANNE@kommune.dk", &p(1).0.to_string()] {
        let why = app.pipeline.explain(common::CVR, key, true).await.unwrap();
        let text = why.to_text();
        assert_eq!(why.history.len(), 2, "{text}");
        assert_eq!(why.history[0].action, LogAction::Deactivate, "{text}");
        assert_eq!(why.history[0].run_id, second.run_id, "{text}");
        assert!(text.contains(&second.run_id), "{text}");
        let now = why.now.as_ref().unwrap();
        assert!(now.sts_user.is_none(), "Anne is not in STS: {text}");
        assert!(!now.target_user.as_ref().unwrap().active);
        assert_eq!(now.next_action, "none", "{text}");
        assert!(now.why.contains("not in STS"), "{text}");
    }

    // Finn's account is changed by hand while inactive; then support reverts the run.
    {
        let db = rusqlite::Connection::open(app.sqlite_path()).unwrap();
        let changed = db
            .execute(
                "UPDATE users SET last_name = 'Holm-Nielsen' WHERE user_name = 'finn@kommune.dk'",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    let reverted = orgsync_jobs::release::revert(&app.pipeline, &second.run_id, "support")
        .await
        .unwrap();
    let revert = reverted.revert.as_ref().unwrap();
    assert_eq!(revert.by, "support");
    assert_eq!(revert.applied, 1, "{}", reverted.to_text());
    assert_eq!(revert.skipped.len(), 1, "{:?}", revert.skipped);
    assert!(
        revert.skipped[0].contains("finn") && revert.skipped[0].contains("changed in the target"),
        "{:?}",
        revert.skipped
    );
    let state = app.state().await;
    assert!(user(&state, p(1)).unwrap().active, "Anne is back");
    assert!(!user(&state, p(6)).unwrap().active, "Finn was left alone");
    assert!(reverted.to_text().contains("reverted:     by support"));

    let why = app
        .pipeline
        .explain(common::CVR, "anne@kommune.dk", false)
        .await
        .unwrap();
    assert_eq!(why.history[0].action, LogAction::Reactivate);
    assert!(
        why.history[0]
            .reason
            .as_deref()
            .unwrap()
            .contains(&format!("revert of run {} by support", second.run_id)),
        "{}",
        why.to_text()
    );
    // A second revert finds Anne active (and Finn still changed): nothing more is written.
    let again = orgsync_jobs::release::revert(&app.pipeline, &second.run_id, "support")
        .await
        .unwrap();
    assert_eq!(again.revert.as_ref().unwrap().applied, 0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_a_user_was_skipped_for_no_email_and_what_sts_holds_and_skips_are_logged_once()
{
    let mut truth = fixture();
    truth.users.push(sts_user(8, "Hans Pind", "", &[2]));
    let app = TestApp::start(truth, policy()).await;
    let first = app.sync().await;
    assert_eq!(first.state, RunState::Succeeded, "{}", first.to_text());
    assert_eq!(
        first.skipped.get("no_email"),
        Some(&1),
        "{}",
        first.to_text()
    );

    let key = p(8).0.to_string();
    let why = app.pipeline.explain(common::CVR, &key, true).await.unwrap();
    let text = why.to_text();
    assert_eq!(why.history.len(), 1, "{text}");
    assert_eq!(why.history[0].action, LogAction::Skip);
    assert_eq!(why.history[0].reason.as_deref(), Some("no_email"));
    let now = why.now.as_ref().unwrap();
    assert_eq!(now.next_action, "skip", "{text}");
    assert!(now.why.contains("no_email"), "{text}");
    let sts = now.sts_user.as_ref().unwrap();
    assert_eq!(sts.email, None);
    assert!(sts.active);
    assert!(
        sts.positions.iter().any(|p| p.contains("valid today")),
        "{text}"
    );
    assert!(text.contains("e-mail (none)"), "{text}");
    // By the STS user name too.
    let by_name = app
        .pipeline
        .explain(common::CVR, "u8", false)
        .await
        .unwrap();
    assert_eq!(by_name.history.len(), 1);

    // A run without changes adds nothing to the log: the same skip is not logged again.
    let second = app.sync().await;
    assert_eq!(second.state, RunState::Succeeded);
    let (entries, _) = app
        .pipeline
        .provisioning()
        .search(
            common::CVR,
            &LogFilter {
                run_id: Some(second.run_id.clone()),
                ..LogFilter::default()
            },
            100,
        )
        .await
        .unwrap();
    assert!(entries.is_empty(), "{entries:?}");
    let (all, _) = app
        .pipeline
        .provisioning()
        .search(common::CVR, &LogFilter::default(), 1000)
        .await
        .unwrap();
    // 6 users created (Eva too), 5 departments created, Hans skipped.
    assert_eq!(all.len(), 12, "{all:?}");
    let (skips, _) = app
        .pipeline
        .provisioning()
        .search(
            common::CVR,
            &LogFilter {
                actions: vec![LogAction::Skip],
                ..LogFilter::default()
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(skips.len(), 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_refusing_credentials_is_target_auth_everywhere_and_the_report_says_what_was_achieved()
 {
    let app = TestApp::start(fixture(), policy()).await;
    // Unit 4's user writes fail with a 401 (Carl and Eva have it as primary department).
    app.fail_department(Some(u(4)));
    let report = app.sync().await;
    assert_eq!(report.state, RunState::PartlyFailed, "{}", report.to_text());
    assert_eq!(report.error_class, Some(ErrorClass::TargetAuth));
    assert_eq!(
        report.failed_departments[0].error_class,
        Some(ErrorClass::TargetAuth)
    );
    assert_eq!(report.failed_departments[0].users, 2);
    // Planned: 6 users; achieved: 4; 2 wait in the dead letter.
    assert_eq!(report.summary.unwrap().users.create, 6);
    assert_eq!(report.achieved.users.create, 4, "{}", report.to_text());
    assert_eq!(report.users_waiting(), 2);
    let text = report.to_text();
    assert!(text.contains("error class:  target.auth"), "{text}");
    assert!(
        text.contains("2 users wait in dead-lettered department jobs"),
        "{text}"
    );

    // The dead letter carries the same class, and the filter finds it by that name.
    let dead = app
        .queue
        .dead_letters(&DeadLetterFilter {
            error_class: Some("target.auth".to_owned()),
            ..DeadLetterFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let errors = app
        .queue
        .dead_letters(&DeadLetterFilter {
            error_class: Some("sts.unavailable".to_owned()),
            ..DeadLetterFilter::default()
        })
        .await
        .unwrap();
    assert!(errors.is_empty());

    // Carl was never created: explain says nothing was written, and why the next run would.
    let carl = app
        .pipeline
        .explain(common::CVR, "carl@kommune.dk", true)
        .await
        .unwrap();
    assert!(carl.history.is_empty(), "{}", carl.to_text());
    assert_eq!(carl.now.as_ref().unwrap().next_action, "create");

    // Fixed and replayed: recovered, and the class is gone with the failure.
    app.fail_department(None);
    app.queue.replay(&dead[0].job_id, "support").await.unwrap();
    let report = app
        .report_when(&report.run_id, |r| r.state == RunState::Succeeded)
        .await;
    assert_eq!(report.error_class, None);
    assert_eq!(report.achieved.users.create, 6, "{}", report.to_text());
    assert_eq!(report.achieved.users_recovered, 2);
    assert_eq!(report.users_waiting(), 0);
    // The observer (support tickets) heard of both ends of the run: partly failed, then
    // succeeded after the replay.
    let observed = app
        .report_when(&report.run_id, |_| {
            app.observed.0.lock().unwrap().len() >= 2
        })
        .await;
    let ends: Vec<(String, RunState, Option<ErrorClass>)> = app
        .observed
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.run_id.clone(), r.state, r.error_class))
        .collect();
    assert_eq!(
        ends,
        [
            (
                observed.run_id.clone(),
                RunState::PartlyFailed,
                Some(ErrorClass::TargetAuth)
            ),
            (observed.run_id.clone(), RunState::Succeeded, None),
        ]
    );
    app.finish().await;
}

/// An STS outage that outlasts the job's retries: the run fails as `sts.unavailable`, and its
/// report carries what KOMBIT's service desk needs (the operation, the endpoint, when, STS's
/// answer and the TransactionUUID of every attempt over all of the job's attempts), which the
/// support ticket's text for KOMBIT quotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_records_the_sts_calls_transaction_uuids_for_kombit() {
    use orgsync_sts_sim::server::{FaultKind, ScriptedFault};
    let app = TestApp::start(fixture(), policy()).await;
    app.sim.inject(ScriptedFault {
        target: "fremsoegobjekthierarki".to_owned(),
        after: 0,
        times: 1000,
        kind: FaultKind::Http(503),
    });
    let report = app.sync().await;
    assert_eq!(report.state, RunState::Failed, "{}", report.to_text());
    assert_eq!(report.error_class, Some(ErrorClass::StsUnavailable));
    let call = report.sts_failure.as_ref().expect("the failed STS call");
    assert!(call.operation.contains("fremsoeg"), "{}", call.operation);
    assert!(call.answer.contains("503"), "{}", call.answer);
    assert!(
        call.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        call.endpoint
    );
    // Every call the simulator refused is one transaction the record names, none twice.
    let refused = app.sim.stats().faults_injected as usize;
    let mut ids = call.transaction_ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), call.transaction_ids.len(), "no id twice");
    assert_eq!(call.transaction_ids.len(), refused.min(20), "{call:?}");
    assert!(
        refused >= 2,
        "the job and the client both retried: {refused}"
    );
    assert!(call.first_at <= call.last_at);
    // `runs show` prints them for support to copy.
    let text = report.to_text();
    assert!(
        text.contains(&format!("transactions: {}", call.transaction_ids[0])),
        "{text}"
    );
    app.finish().await;
}
