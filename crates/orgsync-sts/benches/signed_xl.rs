//! Benchmark: the bulk read of a synthetic municipality with the signed profile (token over mutual TLS, WS-Security on every call) against the simulator with `--require-signatures`, next to the same read unsigned.
//!
//! `cargo bench -p orgsync-sts --bench signed_xl` reads `xl` without simulated latency, to show
//! what signing and verifying cost. Environment: `ORGSYNC_BENCH_SIZE` (xs|s|m|l|xl|stress),
//! `ORGSYNC_BENCH_LATENCY` (fixed ms per call; default 0), `ORGSYNC_BENCH_CALLS_PER_SECOND`
//! (the system limit; default 0 = unlimited, KOMBIT's rule is 14).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark prints its table and may stop on failure

use std::sync::Arc;
use std::time::Instant;

use orgsync_model::ids::Cvr;
use orgsync_sts::client::StsClient;
use orgsync_sts::identity::ClientIdentity;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts::signed::{SignedOptions, SignedSession};
use orgsync_sts::token::TokenOptions;
use orgsync_sts_sim::generate::{Size, expected_read, generate};
use orgsync_sts_sim::pki::SimPki;
use orgsync_sts_sim::security::SimSecurity;
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn sorted(mut s: orgsync_model::snapshot::Snapshot) -> orgsync_model::snapshot::Snapshot {
    s.units.sort_by_key(|u| u.uuid);
    s.users.sort_by_key(|u| u.uuid);
    for u in &mut s.users {
        u.positions.sort_by(|a, b| {
            (a.unit_uuid, a.manager, &a.title, a.valid_from).cmp(&(
                b.unit_uuid,
                b.manager,
                &b.title,
                b.valid_from,
            ))
        });
    }
    s
}

async fn run() {
    let size: Size = std::env::var("ORGSYNC_BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(Size::Xl);
    let latency = std::env::var("ORGSYNC_BENCH_LATENCY")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or_else(LatencyModel::none, LatencyModel::fixed);
    let per_second: f64 = std::env::var("ORGSYNC_BENCH_CALLS_PER_SECOND")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let cvr = Cvr::parse("64942212").unwrap();
    let today = orgsync_model::time::danish_date(&chrono::Utc::now());
    let truth = generate(&cvr, size, 1, today);
    let want = sorted(expected_read(&truth, today));
    println!(
        "municipality {size}: {} units, {} users; latency {latency:?}; {per_second} calls/s (0 = unlimited)",
        truth.units.len(),
        truth.users.len()
    );
    println!(
        "| profile | STS calls | tokens issued | wall time (s) | calls/s | equal to the model |"
    );
    println!("|---|---:|---:|---:|---:|---|");

    // Unsigned, for comparison.
    let sim = Simulator::start(
        vec![truth.clone()],
        SimOptions {
            latency: latency.clone(),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let options = ClientOptions::for_sim(sim.base_url());
    let client = StsClient::new(cvr.clone(), &options, SystemLimits::new(per_second)).unwrap();
    let started = Instant::now();
    let read = client.read_snapshot().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "| unsigned (http) | {} | 0 | {seconds:.1} | {:.0} | {} |",
        read.calls,
        read.calls as f64 / seconds,
        sorted(read.snapshot) == want
    );
    sim.shutdown().await;

    // Signed: mutual TLS, a token from the simulated STS, every call signed and verified.
    let pki = Arc::new(SimPki::generate().unwrap());
    let sim = Simulator::start(
        vec![truth.clone()],
        SimOptions {
            latency,
            security: Some(SimSecurity::new(pki.clone(), true)),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let identity = Arc::new(
        ClientIdentity::from_pem(
            pki.client.certificate_pem.as_bytes(),
            pki.client.key_pem.as_bytes(),
        )
        .unwrap(),
    );
    let session = SignedSession::new(
        identity,
        std::slice::from_ref(&pki.ca),
        TokenOptions::new(
            sim.sts_url(),
            sim.sts_rest_url(),
            "http://stoettesystemerne.dk/service/organisation/3",
        ),
    )
    .unwrap();
    let options = ClientOptions::for_sim(sim.base_url());
    let client = StsClient::with_transport(
        cvr.clone(),
        &options,
        SystemLimits::new(per_second),
        Arc::new(session.transport(SignedOptions::default())),
    );
    let started = Instant::now();
    let read = client.read_snapshot().await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stats = sim.stats();
    println!(
        "| signed (mutual TLS, WS-Security, --require-signatures) | {} | {} | {seconds:.1} | {:.0} | {} |",
        read.calls,
        stats.tokens_issued.values().sum::<u64>(),
        read.calls as f64 / seconds,
        sorted(read.snapshot) == want
    );
    println!(
        "security refusals: {}; tokens issued by the client: {}",
        stats.security_refusals,
        session.tokens().issued()
    );
    sim.shutdown().await;
}
