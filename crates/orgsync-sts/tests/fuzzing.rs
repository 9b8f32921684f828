//! The fuzz targets' entry points (`fuzz/`, run with `cargo +nightly fuzz run <target>`) on
//! real answers: every answer of a full read of the simulator, v6 and v5, decodes through
//! `fuzzing::soap_response` with the selector that names its call (so the fuzzer starts from
//! inputs that reach the object readers, not only error paths); the committed corpus and every
//! crash the fuzzer ever found (`fuzz/regressions/<target>/`) run without a panic.
//!
//! `ORGSYNC_WRITE_FUZZ_SEEDS=1` also writes the recorded answers into `fuzz/corpus/soap_response`
//! (how the committed seeds were made).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

mod common;

use std::path::{Path, PathBuf};

use common::{Recording, cvr, fast_options, municipality, start};
use orgsync_sts::client::StsClient;
use orgsync_sts::fuzzing::{soap_response, soap_selector, token_response};
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::wire::Dialect;
use orgsync_sts_sim::Dialect as SimDialect;
use orgsync_sts_sim::generate::Size;
use orgsync_sts_sim::server::SimOptions;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

async fn recorded_answers(sim_dialect: SimDialect, dialect: Dialect) -> Vec<Vec<u8>> {
    let sim = start(
        municipality(Size::Xs, 3),
        SimOptions {
            dialects: vec![sim_dialect],
            ..SimOptions::default()
        },
    )
    .await;
    let mut options = fast_options(&sim);
    options.dialect = dialect;
    options.unit_contact = true;
    // Small pages and batches: small seeds, which the fuzzer mutates faster.
    options.page_size = 4;
    options.list_batch_size = 2;
    let recording = Recording::new(&options);
    let client =
        StsClient::with_transport(cvr(), &options, SystemLimits::new(0.0), recording.clone());
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    let log = recording.log.lock().unwrap();
    log.iter()
        .map(|(call, status, body)| {
            let mut input = vec![soap_selector(
                call.dialect,
                (200..300).contains(status),
                true,
                call.service,
                call.operation,
            )];
            input.extend_from_slice(body);
            input
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_a_real_read_decodes_through_the_fuzz_entry_point() {
    for (sim_dialect, dialect, name) in [
        (SimDialect::Organisation6, Dialect::Organisation6, "v6"),
        (
            SimDialect::Serviceplatformen5,
            Dialect::Serviceplatformen5,
            "v5",
        ),
    ] {
        let answers = recorded_answers(sim_dialect, dialect).await;
        assert!(answers.len() > 5, "{name}: a read makes several calls");
        let mut objects = 0;
        for (i, answer) in answers.iter().enumerate() {
            let decoded = soap_response(answer);
            objects += decoded.unwrap_or_default();
            assert!(
                decoded.is_some(),
                "{name}: answer {i} (selector {:#010b}) decoded to nothing: {}",
                answer[0],
                String::from_utf8_lossy(&answer[1..answer.len().min(400)])
            );
        }
        assert!(objects > 100, "{name}: the answers held {objects} objects");
        if std::env::var_os("ORGSYNC_WRITE_FUZZ_SEEDS").is_some() {
            let dir = fuzz_dir().join("corpus/soap_response");
            std::fs::create_dir_all(&dir).unwrap();
            // The smallest answer of each kind of call keeps the corpus small.
            let mut by_selector = std::collections::BTreeMap::new();
            for answer in answers.into_iter().filter(|a| soap_response(a) != Some(0)) {
                let entry = by_selector
                    .entry(answer[0])
                    .or_insert_with(|| answer.clone());
                if answer.len() < entry.len() {
                    *entry = answer;
                }
            }
            for (selector, answer) in by_selector {
                std::fs::write(dir.join(format!("{name}-{selector:03}")), answer).unwrap();
            }
        }
    }
}

/// The snapshot fixture seed: a few units and users of a generated municipality, as JSON.
#[test]
fn the_snapshot_seed_is_a_small_valid_fixture() {
    let mut truth = municipality(Size::Xs, 3);
    truth.units.truncate(4);
    let units: Vec<_> = truth.units.iter().map(|u| u.uuid).collect();
    truth
        .users
        .retain(|u| u.positions.iter().any(|p| units.contains(&p.unit_uuid)));
    truth.users.truncate(6);
    let json = serde_json::to_vec_pretty(&truth).unwrap();
    let file = fuzz_dir().join("corpus/snapshot_json/xs-excerpt.json");
    if std::env::var_os("ORGSYNC_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &json).unwrap();
    }
    let committed: orgsync_model::snapshot::Snapshot =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(committed.units.len(), 4);
    assert!(!committed.users.is_empty());
}

#[test]
fn the_committed_corpus_and_every_past_crash_replay_without_a_panic() {
    let soap = files(&fuzz_dir().join("corpus/soap_response"));
    assert!(soap.len() >= 8, "the SOAP seeds are committed: {soap:?}");
    let decoded: usize = soap
        .iter()
        .filter_map(|f| soap_response(&std::fs::read(f).unwrap()))
        .sum();
    assert!(decoded > 0);
    let tokens = files(&fuzz_dir().join("corpus/token_response"));
    assert!(!tokens.is_empty(), "the token seeds are committed");
    for file in tokens {
        token_response(&std::fs::read(file).unwrap());
    }
    for file in files(&fuzz_dir().join("regressions/soap_response")) {
        soap_response(&std::fs::read(&file).unwrap());
    }
    for file in files(&fuzz_dir().join("regressions/token_response")) {
        token_response(&std::fs::read(&file).unwrap());
    }
}
