//! Politeness and robustness against the simulator's fault injection: retries, typed errors, partial snapshots, limits.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::time::{Duration, Instant};

use common::*;
use orgsync_model::error_class::ErrorClass;
use orgsync_model::ids::Cvr;
use orgsync_model::snapshot::ReadPart;
use orgsync_sts::client::StsClient;
use orgsync_sts::error::StsError;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::{ClientOptions, Environment};
use orgsync_sts_sim::generate::{Size, expected_read};
use orgsync_sts_sim::server::{FaultKind, FaultOptions, LatencyModel, ScriptedFault, SimOptions};

fn script(target: &str, after: u32, times: u32, kind: FaultKind) -> ScriptedFault {
    ScriptedFault {
        target: target.to_owned(),
        after,
        times,
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_and_the_snapshot_is_still_complete() {
    let truth = municipality(Size::Xs, 2);
    let sim = start(truth.clone(), SimOptions::default()).await;
    sim.inject(script("bruger/list", 0, 1, FaultKind::Http(503)));
    sim.inject(script(
        "person/list",
        0,
        1,
        FaultKind::SoapFault {
            code: "Receiver".into(),
            subcode: Some("Unavailable".into()),
            reason: "midlertidig".into(),
        },
    ));
    sim.inject(script(
        "adresse/list",
        0,
        1,
        FaultKind::Status {
            code: 50,
            message: "intern fejl".into(),
        },
    ));
    sim.inject(script(
        "organisationfunktion/list",
        0,
        1,
        FaultKind::Truncate,
    ));
    sim.inject(script("fremsoegobjekthierarki", 0, 1, FaultKind::Http(429)));
    let read = client(&sim).read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    assert_eq!(
        normalised(read.snapshot),
        normalised(expected_read(&truth, today()))
    );
    assert_eq!(sim.stats().faults_injected, 5);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_fails_for_good_makes_the_snapshot_partial_not_an_error() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    sim.inject(script("person/list", 0, 100, FaultKind::Http(503)));
    let read = client(&sim).read_snapshot().await.unwrap();
    let partial = read.snapshot.partial.expect("the read should be partial");
    // Typed: which part, the class, retriable, and which objects are unread.
    assert!(!partial.failures.is_empty());
    for failure in &partial.failures {
        assert_eq!(failure.part, ReadPart::Persons, "{failure:?}");
        assert_eq!(failure.class, ErrorClass::StsUnavailable, "{failure:?}");
        assert!(failure.retriable, "{failure:?}");
        assert!(
            failure.unread.as_ref().is_some_and(|u| !u.is_empty()),
            "a failed list knows its objects: {failure:?}"
        );
    }
    assert!(partial.is_retriable());
    assert!(partial.positions_complete());
    let partial = partial.to_string();
    assert!(
        partial.contains("Person list") && partial.contains("503"),
        "{partial}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_say_whether_to_retry() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    let client = client(&sim);
    type Check = fn(&StsError) -> bool;
    let cases: Vec<(FaultKind, Check, bool)> = vec![
        (
            FaultKind::SoapFault {
                code: "Sender".into(),
                subcode: Some("ServiceAgreementNotFound".into()),
                reason: "ingen serviceaftale".into(),
            },
            |e| matches!(e, StsError::Fault { code, subcode, .. } if code == "Sender" && subcode.as_deref() == Some("ServiceAgreementNotFound")),
            false,
        ),
        (
            FaultKind::Status {
                code: 40,
                message: "ugyldigt input".into(),
            },
            |e| matches!(e, StsError::Status { code: 40, message, .. } if message == "ugyldigt input"),
            false,
        ),
        (
            FaultKind::Garbage,
            |e| matches!(e, StsError::Malformed { .. }),
            false,
        ),
        (
            FaultKind::Oversize(9 * 1024 * 1024),
            |e| matches!(e, StsError::TooLarge { .. }),
            false,
        ),
        (
            FaultKind::Http(403),
            |e| matches!(e, StsError::Http { status: 403, .. }),
            false,
        ),
        (
            FaultKind::Http(503),
            |e| matches!(e, StsError::Http { status: 503, .. }),
            true,
        ),
        (
            FaultKind::Truncate,
            |e| matches!(e, StsError::Truncated { .. }),
            true,
        ),
    ];
    for (kind, check, retriable) in cases {
        sim.inject(script("fremsoegobjekthierarki", 0, 10, kind.clone()));
        let error = client.read_snapshot().await.unwrap_err();
        assert!(check(&error), "{kind:?} gave {error:?}");
        assert_eq!(error.is_retriable(), retriable, "{error}");
        // Drain the rest of this script so the next case starts clean.
        while sim.stats().faults_injected % 10 != 0 {
            let _ = client.read_snapshot().await;
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_call_times_out_and_is_retried() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    sim.inject(script(
        "virksomhed/soeg",
        0,
        1,
        FaultKind::Delay(Duration::from_secs(3)),
    ));
    let options = ClientOptions {
        call_timeout: Duration::from_millis(500),
        ..fast_options(&sim)
    };
    let client = StsClient::new(cvr(), &options, SystemLimits::new(0.0)).unwrap();
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    assert_eq!(sim.stats().by_operation["virksomhed/soeg"], 2);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_stays_under_the_in_flight_and_per_second_limits() {
    let sim = start(
        municipality(Size::Xs, 2),
        SimOptions {
            latency: LatencyModel::fixed(30),
            faults: FaultOptions {
                rate_limit_per_second: Some(25.0),
                ..FaultOptions::default()
            },
            ..SimOptions::default()
        },
    )
    .await;
    let options = ClientOptions {
        max_in_flight: 2,
        max_pages_in_flight: 1,
        max_calls_per_second: 20.0,
        list_batch_size: 10,
        ..fast_options(&sim)
    };
    let limits = SystemLimits::new(options.max_calls_per_second);
    let client = StsClient::new(cvr(), &options, limits.clone()).unwrap();
    let started = Instant::now();
    let read = client.read_snapshot().await.unwrap();
    let stats = sim.stats();
    assert!(stats.max_in_flight <= 3, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert!(read.calls > 40);
    let floor = Duration::from_secs_f64((read.calls - 1) as f64 / 20.0);
    assert!(
        started.elapsed() >= floor,
        "{:?} < {floor:?}",
        started.elapsed()
    );
    assert_eq!(limits.calls(), read.calls);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_second_limit_is_shared_by_the_clients_of_all_customers() {
    let a = municipality(Size::Xs, 2);
    let mut b = municipality(Size::Xs, 3);
    b.cvr = Cvr::parse("55133018").unwrap();
    let sim = orgsync_sts_sim::server::Simulator::start(vec![a, b], SimOptions::default())
        .await
        .unwrap();
    let options = ClientOptions {
        max_calls_per_second: 40.0,
        ..fast_options(&sim)
    };
    let limits = SystemLimits::new(40.0);
    let one = StsClient::new(cvr(), &options, limits.clone()).unwrap();
    let two = StsClient::new(Cvr::parse("55133018").unwrap(), &options, limits.clone()).unwrap();
    let started = Instant::now();
    let (x, y) = tokio::join!(one.read_snapshot(), two.read_snapshot());
    let calls = x.unwrap().calls + y.unwrap().calls;
    assert_eq!(limits.calls(), calls);
    assert!(started.elapsed() >= Duration::from_secs_f64((calls - 1) as f64 / 40.0));
    assert!(sim.stats().max_calls_per_second <= 42, "{:?}", sim.stats());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipality_without_a_service_agreement_is_a_clear_not_retriable_error() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    let mut other = municipality(Size::Xs, 9);
    other.cvr = Cvr::parse("12345678").unwrap();
    sim.replace(other);
    let client = StsClient::new(
        Cvr::parse("87654321").unwrap(),
        &fast_options(&sim),
        SystemLimits::new(0.0),
    )
    .unwrap();
    let error = client.read_snapshot().await.unwrap_err();
    assert!(
        matches!(&error, StsError::Fault { subcode, .. } if subcode.as_deref() == Some("ServiceAgreementNotFound")),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_organisation_uuid_can_be_configured_and_saves_the_lookup() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    let organisation = sim.world(&cvr()).unwrap().organisation();
    let options = ClientOptions {
        organisation_uuid: Some(organisation),
        ..fast_options(&sim)
    };
    let client = StsClient::new(cvr(), &options, SystemLimits::new(0.0)).unwrap();
    client.read_snapshot().await.unwrap();
    assert!(!sim.stats().by_operation.contains_key("virksomhed/soeg"));
    sim.shutdown().await;
}

#[test]
fn the_unsigned_transport_is_refused_outside_the_simulator() {
    for (environment, url) in [
        (
            Environment::Sim,
            "https://organisation.eksterntest-stoettesystemerne.dk/organisation/",
        ),
        (
            Environment::ExternalTest,
            "http://127.0.0.1:8089/organisation/",
        ),
        (
            Environment::Production,
            "https://organisation.stoettesystemerne.dk/organisation/",
        ),
    ] {
        let options = ClientOptions {
            environment,
            base_url: url::Url::parse(url).unwrap(),
            ..ClientOptions::default()
        };
        let error = StsClient::new(cvr(), &options, SystemLimits::new(14.0)).unwrap_err();
        assert!(matches!(error, StsError::Config(_)) && !error.is_retriable());
        assert!(error.to_string().contains("signed profile"), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_municipality_while_the_simulator_runs_changes_the_next_read() {
    let truth = municipality(Size::Xs, 2);
    let sim = start(truth.clone(), SimOptions::default()).await;
    let client = client(&sim);
    let before = client.read_snapshot().await.unwrap().snapshot;
    let mut changed = truth.clone();
    changed.units[3].name = "Ældreplejen Æbelø".to_owned();
    changed.users.remove(10);
    sim.replace(changed.clone());
    let after = client.read_snapshot().await.unwrap().snapshot;
    assert_ne!(normalised(before), normalised(after.clone()));
    assert_eq!(
        normalised(after),
        normalised(expected_read(&changed, today()))
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_or_positions_that_soeg_found_but_list_did_not_return_make_the_read_partial() {
    // StatusKode 44 on a list batch: the objects soeg found were not read. Treating them as
    // absent would deactivate their users, so the read must say it is incomplete.
    for (target, what) in [
        ("bruger/list", "Bruger list did not return"),
        (
            "organisationfunktion/list",
            "OrganisationFunktion list did not return",
        ),
    ] {
        let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
        sim.inject(script(
            target,
            0,
            1,
            FaultKind::Status {
                code: 44,
                message: "ingen".into(),
            },
        ));
        let read = client(&sim).read_snapshot().await.unwrap();
        let partial = read
            .snapshot
            .partial
            .unwrap_or_else(|| panic!("{target}: the read should be partial"));
        assert!(
            partial
                .failures
                .iter()
                .all(|f| f.retriable && f.unread.as_ref().is_some_and(|u| !u.is_empty())),
            "{target}: {partial:?}"
        );
        let partial = partial.to_string();
        assert!(partial.contains(what), "{target}: {partial}");
        sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_url_that_answers_404_names_the_url_and_the_usual_ending() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    let mut wrong = sim.base_url();
    wrong.set_path("/");
    let options = ClientOptions {
        base_url: wrong,
        ..fast_options(&sim)
    };
    let error = StsClient::new(cvr(), &options, SystemLimits::new(0.0))
        .unwrap()
        .read_snapshot()
        .await
        .unwrap_err();
    assert!(matches!(error, StsError::NotFound { .. }), "{error:?}");
    assert!(!error.is_retriable());
    let text = error.to_string();
    let called = format!("{}virksomhed/6/", sim.base_url().join("/").unwrap());
    assert!(text.contains(&called), "{text}");
    assert!(text.contains("usually ends in /organisation/"), "{text}");
    sim.shutdown().await;
}

/// What KOMBIT's service desk needs of a call that failed for good: its operation, endpoint,
/// times and the `TransactionUUID` of every attempt, exactly the ones that went on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_fails_for_good_is_recorded_with_every_attempts_transaction_uuid() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    sim.inject(script(
        "fremsoegobjekthierarki",
        0,
        100,
        FaultKind::Http(503),
    ));
    let options = fast_options(&sim);
    let recording = Recording::new(&options);
    let client =
        StsClient::with_transport(cvr(), &options, SystemLimits::new(0.0), recording.clone());
    assert!(client.failed_call().is_none());
    let before = chrono::Utc::now();
    let error = client.read_snapshot().await.unwrap_err();
    assert!(
        matches!(error, StsError::Http { status: 503, .. }),
        "{error}"
    );
    let failed = client.failed_call().expect("the failed call is recorded");
    let sent: Vec<uuid::Uuid> = recording
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(call, status, _)| *status == 503 && call.action.contains("fremsoeg"))
        .map(|(call, _, _)| call.transaction_id)
        .collect();
    assert_eq!(sent.len(), options.max_attempts as usize, "{sent:?}");
    assert_eq!(failed.transaction_ids, sent, "one fresh UUID per attempt");
    assert!(
        failed.operation.contains("fremsoeg"),
        "{}",
        failed.operation
    );
    assert!(
        failed.endpoint.starts_with(sim.base_url().as_str()),
        "{}",
        failed.endpoint
    );
    assert!(failed.answer.contains("503"), "{}", failed.answer);
    assert!(before <= failed.first_at && failed.first_at <= failed.last_at);
    sim.shutdown().await;
}
