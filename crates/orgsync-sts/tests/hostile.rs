//! Hostile and broken STS answers (issue #13 item 6): every read is bounded (distinct objects,
//! calls, time), a stalled body fails within its read timeout, deep nesting is refused before
//! serde sees it, a cancelled read makes no further call; and what already worked stays under
//! test (the size cap, no entity expansion, invalid UTF-8).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod hostile_server;

use std::time::{Duration, Instant};

use hostile_server::{Behaviour, Hostile};
use orgsync_model::error_class::ErrorClass;
use orgsync_model::ids::Cvr;
use orgsync_sts::client::StsClient;
use orgsync_sts::error::{ReadBound, StsError};
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::{ClientOptions, ReadExpectation};
use url::Url;

/// How long a test waits for a read that should stop by itself before calling it a hang.
const HANG: Duration = Duration::from_secs(60);

fn options(server: &Hostile) -> ClientOptions {
    ClientOptions {
        base_url: Url::parse(&server.base_url).unwrap(),
        // Skips the CVR lookup: the hostile server knows no Virksomhed.
        organisation_uuid: Some(uuid::Uuid::from_u128(7)),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        call_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

fn client(options: &ClientOptions) -> StsClient {
    StsClient::new(
        Cvr::parse("29189846").unwrap(),
        options,
        SystemLimits::new(0.0),
    )
    .unwrap()
}

/// Reads, failing the test when the read does not end within [`HANG`].
async fn read(client: &StsClient) -> (Result<(), StsError>, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(HANG, client.read_snapshot())
        .await
        .unwrap_or_else(|_| panic!("the read did not stop within {HANG:?}"));
    (result.map(|_| ()), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_every_page_with_new_uuids_stops_at_the_objects_bound() {
    let server = hostile_server::start(Behaviour::Looping { fresh: 500 }).await;
    let options = ClientOptions {
        max_read_objects: 5_000,
        ..options(&server)
    };
    let (result, _) = read(&client(&options)).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            StsError::ReadBound {
                bound: ReadBound::Objects {
                    limit: 5_000,
                    derived: false
                }
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert_eq!(error.class(), ErrorClass::StsBadData);
    assert!(
        error
            .to_string()
            .contains("more than 5000 distinct objects"),
        "{error}"
    );
    // Ten pages of new UUIDs (and their lists) reach the bound; the pages in flight end.
    let calls = server.calls();
    assert!(calls < 200, "{calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_repeating_most_of_every_page_stops_at_the_call_budget() {
    // One new UUID per page: the objects grow slowly, the calls do not.
    let server = hostile_server::start(Behaviour::Looping { fresh: 1 }).await;
    let options = ClientOptions {
        max_read_calls: 300,
        ..options(&server)
    };
    let (result, _) = read(&client(&options)).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            StsError::ReadBound {
                bound: ReadBound::Calls {
                    limit: 300,
                    derived: false
                }
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert!(
        error.to_string().contains("call budget of 300 STS calls"),
        "{error}"
    );
    // The budget holds, give or take the calls that had their slot when it was spent.
    let calls = server.calls();
    assert!((300..=320).contains(&calls), "{calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounds_follow_the_previous_reads_size() {
    let server = hostile_server::start(Behaviour::Looping { fresh: 500 }).await;
    let client = client(&options(&server));
    let expected = ReadExpectation {
        units: 10,
        users: 100,
    };
    client.expect_size(Some(expected));
    // (10 + 2 × 100) × 3 + 10,000 objects; one call per 20 of them + 1,000.
    assert_eq!(expected.objects_bound(u64::MAX), 10_630);
    assert_eq!(expected.calls_bound(u64::MAX), 1_531);
    assert_eq!(expected.calls_bound(1_000), 1_000);
    let (result, _) = read(&client).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            StsError::ReadBound {
                bound: ReadBound::Objects {
                    limit: 10_630,
                    derived: true
                }
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("last trusted run's size"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_its_deadline_stops() {
    let server = hostile_server::start(Behaviour::Looping { fresh: 1 }).await;
    let options = ClientOptions {
        read_deadline: Duration::from_secs(2),
        max_calls_per_second: 50.0,
        ..options(&server)
    };
    let client = StsClient::new(
        Cvr::parse("29189846").unwrap(),
        &options,
        SystemLimits::new(options.max_calls_per_second),
    )
    .unwrap();
    let (result, elapsed) = read(&client).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            StsError::ReadBound {
                bound: ReadBound::Deadline { limit }
            } if limit == Duration::from_secs(2)
        ),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert_eq!(error.class(), ErrorClass::StsUnavailable);
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    // The read's tasks were aborted with it: no call is made after it returned.
    let calls = server.calls();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.calls(), calls, "calls after the read ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_read_makes_no_further_call() {
    let server = hostile_server::start(Behaviour::Looping { fresh: 500 }).await;
    let options = ClientOptions {
        max_calls_per_second: 40.0,
        ..options(&server)
    };
    let client = StsClient::new(
        Cvr::parse("29189846").unwrap(),
        &options,
        SystemLimits::new(options.max_calls_per_second),
    )
    .unwrap();
    // A worker told to stop drops its job's future, and the read with it.
    let cancelled = tokio::time::timeout(Duration::from_millis(1500), client.read_snapshot()).await;
    assert!(cancelled.is_err(), "the read should still run");
    // A request already on the wire when the read was dropped may still arrive: count from
    // a moment later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = server.calls();
    assert!(calls > 10, "{calls} calls");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(server.calls(), calls, "calls after the read was dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_nested_200000_levels_deep_is_refused_at_once() {
    let server = hostile_server::start(Behaviour::Deep { depth: 200_000 }).await;
    let (result, elapsed) = read(&client(&options(&server))).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, StsError::TooDeep { limit: 64, .. }),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert_eq!(error.class(), ErrorClass::StsBadData);
    assert!(
        error.to_string().contains("deeper than 64 levels"),
        "{error}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_after_its_headers_fails_within_the_read_timeout() {
    let server = hostile_server::start(Behaviour::Stall).await;
    let options = ClientOptions {
        read_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_secs(180),
        max_attempts: 2,
        ..options(&server)
    };
    let (result, elapsed) = read(&client(&options)).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, StsError::Stalled { after, .. } if after == Duration::from_millis(500)),
        "{error:?}"
    );
    // Retriable (a hung connection may be one): the unit tree's page was tried twice; the
    // three other searches (two of functions, one of users) found nothing.
    assert!(error.is_retriable());
    assert_eq!(server.calls(), 2 + 3);
    assert!(error.to_string().contains("no data for 0.5 s"), "{error}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_size_cap_is_refused() {
    let server = hostile_server::start(Behaviour::Large {
        bytes: 3_000_000,
        every: false,
    })
    .await;
    let options = ClientOptions {
        max_response_bytes: 1_000_000,
        ..options(&server)
    };
    let (result, _) = read(&client(&options)).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            StsError::TooLarge {
                limit: 1_000_000,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.is_retriable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_in_a_document_type_are_never_expanded() {
    let server = hostile_server::start(Behaviour::Entities).await;
    let (result, elapsed) = read(&client(&options(&server))).await;
    let error = result.unwrap_err();
    // Expanded, the entity would be 2 × 10^9 characters: the answer is refused instead.
    assert!(matches!(error, StsError::Malformed { .. }), "{error:?}");
    assert!(!error.is_retriable());
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_utf8_is_a_clear_error() {
    let server = hostile_server::start(Behaviour::BadUtf8).await;
    let (result, _) = read(&client(&options(&server))).await;
    let error = result.unwrap_err();
    assert!(matches!(error, StsError::Malformed { .. }), "{error:?}");
    assert!(error.to_string().contains("not UTF-8"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_holding_more_entries_than_asked_for_stops_the_read() {
    // About 900 units on a page that asked for 500.
    let server = hostile_server::start(Behaviour::Large {
        bytes: 1_000_000,
        every: false,
    })
    .await;
    let (result, _) = read(&client(&options(&server))).await;
    let error = result.unwrap_err();
    assert!(
        matches!(
            error,
            StsError::ReadBound {
                bound: ReadBound::Answer { asked: 500, returned }
            } if returned > 500
        ),
        "{error:?}"
    );
    assert!(!error.is_retriable());
    assert_eq!(error.class(), ErrorClass::StsBadData);
}
