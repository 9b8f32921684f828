//! Sentry against a loopback envelope recorder: a real queue worker's failed attempts become one
//! event per job and error class, with fingerprint `[cvr, error_class]` and the tags `job.type`,
//! `customer.cvr` and `run.id`; each job is a transaction; no secret or CPR-shaped number is in
//! any envelope.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use orgsync_queue::{JobContext, JobError, NewJob, QueueConfig, QueueHandle, WorkerOptions};
use orgsync_support::scrub::contains_secret_or_cpr;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt as _;

#[derive(Debug, Serialize, Deserialize)]
struct Flaky {
    run_id: String,
    class: String,
}

impl orgsync_queue::Job for Flaky {
    const JOB_TYPE: &'static str = "flaky";

    fn run_id(&self) -> Option<String> {
        Some(self.run_id.clone())
    }
}

/// Fails every attempt with the job's class and a message full of things Sentry must not get.
async fn flaky(job: Flaky, _ctx: JobContext) -> Result<(), JobError> {
    tracing::info!("calling STS with password=hunter2");
    Err(JobError::message(
        job.class,
        true,
        "STS answered 503 (Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.x.y, person 010203-1234, token=abc123secret)",
    ))
}

type Envelopes = Arc<Mutex<Vec<String>>>;

async fn recorder() -> (String, Envelopes) {
    let envelopes: Envelopes = Arc::default();
    let app = Router::new()
        .route(
            "/api/42/envelope/",
            post(|State(store): State<Envelopes>, body: Bytes| async move {
                store
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                r#"{"id":"00000000000000000000000000000000"}"#
            }),
        )
        .with_state(envelopes.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://public@{addr}/42"), envelopes)
}

/// The JSON items of the recorded envelopes of type `kind`.
fn items(envelopes: &[String], kind: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for envelope in envelopes {
        let lines: Vec<&str> = envelope.lines().collect();
        for pair in lines[1..].windows(2) {
            let Ok(header) = serde_json::from_str::<serde_json::Value>(pair[0]) else {
                continue;
            };
            if header["type"] == kind
                && let Ok(item) = serde_json::from_str(pair[1])
            {
                out.push(item);
            }
        }
    }
    out
}

#[test]
fn failed_attempts_become_one_event_per_job_and_class_with_fingerprint_tags_and_no_secret() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dsn, envelopes) = runtime.block_on(recorder());
    let guard = orgsync_support::sentry::init(
        Some(&SecretString::from(dsn)),
        "ORGSYNC_SENTRY_DSN",
        "orgsync@test",
        "test",
        1.0,
    )
    .unwrap()
    .expect("a DSN starts Sentry");
    let subscriber = tracing_subscriber::registry().with(orgsync_support::sentry::layer());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let prefix = format!(
        "orgsync-test:support-sentry:{}",
        uuid::Uuid::new_v4().simple()
    );
    let queue = runtime.block_on(async {
        let queue = QueueHandle::connect(QueueConfig::new("redis://127.0.0.1:6379", prefix))
            .await
            .unwrap();
        for (cvr, run, class) in [
            ("29189846", "29189846-20261201T020000-s", "sts.unavailable"),
            ("11111111", "11111111-20261201T020000-s", "target.auth"),
        ] {
            let job = Flaky {
                run_id: run.to_owned(),
                class: class.to_owned(),
            };
            queue
                .enqueue(NewJob::new(&job).unwrap().customer(cvr))
                .await
                .unwrap();
        }
        let backend = queue.backend::<Flaky>(WorkerOptions::fast_for_tests());
        let (signal, stop) = orgsync_queue::manual_signal();
        let worker = WorkerBuilder::new(backend.worker_name().to_owned())
            .backend(backend)
            .concurrency(2)
            .build(flaky);
        let join = tokio::spawn(async move { worker.run_until(signal).await });
        // Both jobs spend their 3 attempts and go to the dead-letter queue.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let dead = queue
                .dead_letters(&orgsync_queue::DeadLetterFilter::default())
                .await
                .unwrap();
            if dead.len() == 2 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop();
        let _ = join.await;
        queue
    });
    drop(guard); // flushes
    let envelopes = envelopes.lock().unwrap().clone();

    let events = items(&envelopes, "event");
    assert_eq!(
        events.len(),
        2,
        "one event per job and class (3 attempts each):\n{events:#?}"
    );
    let mut fingerprints: Vec<Vec<String>> = events
        .iter()
        .map(|e| serde_json::from_value(e["fingerprint"].clone()).unwrap())
        .collect();
    fingerprints.sort();
    assert_eq!(
        fingerprints,
        [
            vec!["11111111".to_owned(), "target.auth".to_owned()],
            vec!["29189846".to_owned(), "sts.unavailable".to_owned()],
        ]
    );
    for event in &events {
        let tags = &event["tags"];
        assert_eq!(tags["job.type"], "flaky", "{event:#}");
        let cvr = tags["customer.cvr"].as_str().unwrap();
        assert_eq!(tags["run.id"], format!("{cvr}-20261201T020000-s"));
        // Sentry omits the default level, error.
        assert!(
            event["level"].is_null() || event["level"] == "error",
            "{event:#}"
        );
        assert_eq!(event["environment"], "test");
    }
    let transactions = items(&envelopes, "transaction");
    assert!(
        transactions.len() >= 6,
        "each attempt of each job is a transaction: {}",
        transactions.len()
    );
    assert!(transactions.iter().all(|t| t["transaction"] == "job"));

    for envelope in &envelopes {
        for secret in [
            "hunter2",
            "eyJhbGciOiJSUzI1NiJ9",
            "010203-1234",
            "abc123secret",
        ] {
            assert!(!envelope.contains(secret), "{secret} in:\n{envelope}");
        }
    }
    // Every string of every event (messages, tags, contexts, breadcrumbs) is scrubbed.
    for event in events.iter().chain(&transactions) {
        assert_strings_clean(event);
    }
    // The scrubbed message is still there.
    assert!(envelopes.iter().any(|e| e.contains("STS answered 503")));

    runtime.block_on(queue.purge_all_keys()).unwrap();
}

fn assert_strings_clean(value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            assert!(!contains_secret_or_cpr(s), "secret-shaped text in {s:?}")
        }
        serde_json::Value::Array(items) => items.iter().for_each(assert_strings_clean),
        serde_json::Value::Object(map) => map.values().for_each(assert_strings_clean),
        _ => {}
    }
}

#[test]
fn no_dsn_leaves_sentry_off_and_a_bad_one_names_its_variable_not_its_value() {
    assert!(
        orgsync_support::sentry::init(None, "ORGSYNC_SENTRY_DSN", "r", "e", 1.0)
            .unwrap()
            .is_none()
    );
    assert!(
        orgsync_support::sentry::init(Some(&SecretString::from("  ")), "X", "r", "e", 1.0)
            .unwrap()
            .is_none()
    );
    let Err(error) = orgsync_support::sentry::init(
        Some(&SecretString::from("not-a-dsn-secretvalue")),
        "ORGSYNC_SENTRY_DSN",
        "r",
        "e",
        1.0,
    ) else {
        panic!("an invalid DSN must be refused");
    };
    let text = error.to_string();
    assert!(
        text.starts_with("ORGSYNC_SENTRY_DSN: not a Sentry DSN"),
        "{text}"
    );
    assert!(!text.contains("secretvalue"), "{text}");
}
