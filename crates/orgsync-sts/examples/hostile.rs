//! Measures how the client fails on each hostile STS answer: time to fail, peak RSS and, for
//! the looping servers, the calls made before the read stops.
//!
//! `cargo run --release -p orgsync-sts --example hostile -- <case>`, one case per process (so
//! that each peak RSS is its own); the hostile server runs in a child process, so its memory is
//! not counted. Cases: `deep`, `large60`, `large60-every`, `stall`, `looping`, `looping-derived`, `repeating`,
//! `entities`, `bad-utf8`. The client runs with the binary's defaults (`[sts]`: 64 MiB size
//! cap, 180 s call timeout, 30 s read timeout, 4 attempts), except that the looping cases run
//! without the calls-per-second limit (the calls counted do not depend on it; at 14 calls/s
//! they take calls / 14 seconds).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a measuring tool: a panic is the failure message

#[path = "../tests/hostile_server/mod.rs"]
mod hostile_server;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use hostile_server::Behaviour;
use orgsync_model::ids::Cvr;
use orgsync_sts::client::StsClient;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::{ClientOptions, ReadExpectation};

const SERVE: &str = "ORGSYNC_HOSTILE_SERVE";

fn behaviour(case: &str) -> Behaviour {
    match case {
        "deep" => Behaviour::Deep { depth: 200_000 },
        "large60" => Behaviour::Large {
            bytes: 60_000_000,
            every: false,
        },
        "large60-every" => Behaviour::Large {
            bytes: 60_000_000,
            every: true,
        },
        "stall" => Behaviour::Stall,
        "looping" | "looping-derived" => Behaviour::Looping { fresh: 500 },
        "repeating" => Behaviour::Looping { fresh: 1 },
        "entities" => Behaviour::Entities,
        "bad-utf8" => Behaviour::BadUtf8,
        other => panic!("unknown case {other}"),
    }
}

/// Peak resident set size of this process, in bytes (`ru_maxrss`, which Linux also reports
/// as `VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

fn main() {
    let case = std::env::args().nth(1).expect("a case");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os(SERVE).is_some() {
        runtime.block_on(async {
            let server = hostile_server::start(behaviour(&case)).await;
            println!("{}", server.base_url);
            // Serves until the measuring process kills it.
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        });
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg(&case)
        .env(SERVE, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut base_url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut base_url)
        .unwrap();
    let looping = case.starts_with("looping") || case == "repeating";
    let options = ClientOptions {
        base_url: url::Url::parse(base_url.trim()).unwrap(),
        organisation_uuid: Some(uuid::Uuid::from_u128(7)),
        max_response_bytes: 64 * 1024 * 1024,
        max_calls_per_second: if looping { 0.0 } else { 14.0 },
        ..ClientOptions::default()
    };
    let rss_before = peak_rss();
    let (outcome, elapsed, calls) = runtime.block_on(async {
        let client = StsClient::new(
            Cvr::parse("29189846").unwrap(),
            &options,
            SystemLimits::new(options.max_calls_per_second),
        )
        .unwrap();
        if case == "looping-derived" {
            // An `s` municipality: about 300 units and 3,000 users.
            client.expect_size(Some(ReadExpectation {
                units: 300,
                users: 3_000,
            }));
        }
        let started = Instant::now();
        let read = client.read_snapshot().await;
        let outcome = match read {
            Ok(read) => format!(
                "ok: {} units, {} users, partial {:?}",
                read.snapshot.units.len(),
                read.snapshot.users.len(),
                read.snapshot.partial
            ),
            Err(e) => format!("error [{}]: {e}", e.class().as_str()),
        };
        (outcome, started.elapsed(), client.calls())
    });
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{case}: {:.2} s to fail, peak RSS {:.1} MB (before the read {:.1} MB), {calls} calls; {outcome}",
        elapsed.as_secs_f64(),
        peak_rss() as f64 / 1e6,
        rss_before as f64 / 1e6,
    );
}
