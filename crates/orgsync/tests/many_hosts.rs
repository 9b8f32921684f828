//! orgsync on many hosts: three `orgsync worker` and two `orgsync scheduler` processes (separate
//! processes share nothing but Redis, as on separate hosts) and ten customers of mixed sizes on
//! one schedule. Every fire runs once, every run completes, KOMBIT's rate limit holds across all
//! workers together, and killing a worker mid-run loses nothing.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure message

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Timelike as _, Utc};
use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};
use serde_json::Value;

const EXE: &str = env!("CARGO_BIN_EXE_orgsync");
/// The STS calls per second all workers together may make.
const LIMIT: u32 = 10;

struct Processes {
    children: Vec<Child>,
    prefix: String,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli --scan --pattern '{}:*' | xargs -r redis-cli del >/dev/null",
                self.prefix
            ))
            .status();
    }
}

fn orgsync(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(EXE)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_and_two_schedulers_run_ten_customers_once_within_the_rate_limit() {
    // Ten municipalities: eight `xs`, two `s`; every call takes 20 ms.
    let cvrs: Vec<String> = (0..10).map(|i| format!("2000000{i}")).collect();
    let sizes: Vec<Size> = (0..10)
        .map(|i| if i < 2 { Size::S } else { Size::Xs })
        .collect();
    let today = orgsync_model::time::danish_date(&Utc::now());
    let worlds = cvrs
        .iter()
        .zip(&sizes)
        .enumerate()
        .map(|(i, (cvr, size))| generate(&Cvr::parse(cvr).unwrap(), *size, i as u64, today))
        .collect();
    let sim = Simulator::start(
        worlds,
        SimOptions {
            latency: LatencyModel::fixed(20),
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();

    // One schedule for all: a single fire, 12 s from now (UTC, once a day).
    let fire = Utc::now() + chrono::Duration::seconds(12);
    let schedule = format!("{} {} {} * * *", fire.second(), fire.minute(), fire.hour());
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!(
        "test-hosts-{}-{}",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap()
    );
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("customers")).unwrap();
    std::fs::write(
        config.join("orgsync.toml"),
        format!(
            "[redis]\nkey_prefix = \"{prefix}\"\n[sts]\nenvironment = \"sim\"\nbase_url = \"{}\"\nmax_calls_per_second = {LIMIT}\n[runs]\nscheduler_grace_minutes = 0\n[worker]\nsync_customer_concurrency = 2\n",
            sim.base_url()
        ),
    )
    .unwrap();
    for (cvr, size) in cvrs.iter().zip(&sizes) {
        std::fs::write(
            config.join(format!("customers/{cvr}.toml")),
            format!(
                "cvr = \"{cvr}\"\nname = \"Kommune {cvr}\"\ndomains = [\"{}\"]\nschedule = \"{schedule}\"\ntimezone = \"UTC\"\njitter_seconds = 0\n[target]\nkind = \"sqlite\"\npath = {:?}\n",
                domain_of(*size),
                dir.path().join(format!("{cvr}.sqlite")).display().to_string()
            ),
        )
        .unwrap();
    }

    let mut processes = Processes {
        children: Vec::new(),
        prefix,
    };
    for role in ["worker", "worker", "worker", "scheduler", "scheduler"] {
        processes.children.push(
            Command::new(EXE)
                .arg("--config")
                .arg(&config)
                .arg(role)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    // Kill the first worker (SIGKILL: no drain) a few seconds into the runs.
    let wait_until = fire + chrono::Duration::seconds(4);
    tokio::time::sleep((wait_until - Utc::now()).to_std().unwrap_or_default()).await;
    let started = orgsync(&config, &["runs", "--format", "json"]);
    let runs: Value = serde_json::from_slice(&started.stdout).unwrap();
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] != "succeeded"),
        "some runs still going when the worker is killed: {runs}"
    );
    processes.children[0].kill().unwrap();
    processes.children[0].wait().unwrap();

    // Every customer's run completes (the killed worker's jobs are taken over once its heartbeat
    // has expired, about 30-40 s).
    let deadline = Instant::now() + Duration::from_secs(75);
    let runs = loop {
        let config = config.clone();
        let out =
            tokio::task::spawn_blocking(move || orgsync(&config, &["runs", "--format", "json"]))
                .await
                .unwrap();
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let list = runs.as_array().cloned().unwrap_or_default();
        if list.len() >= 10 && list.iter().all(|r| r["state"] == "succeeded") {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "not all runs succeeded: {runs:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // One run per customer, all for the one fire.
    let mut per_customer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in &runs {
        assert_eq!(run["trigger"]["kind"], "schedule", "{run}");
        per_customer
            .entry(run["cvr"].as_str().unwrap().to_owned())
            .or_default()
            .push(run["trigger"]["fire"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_customer.len(), 10, "{per_customer:?}");
    let fires: Vec<&String> = per_customer.values().flatten().collect();
    assert_eq!(
        fires.len(),
        10,
        "exactly one run per customer: {per_customer:?}"
    );
    assert!(fires.iter().all(|f| *f == fires[0]), "{fires:?}");

    // Nothing was lost or dead-lettered.
    let out = orgsync(&config, &["dlq", "list", "--format", "json"]);
    let dead: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dead.as_array().map(Vec::len), Some(0), "{dead}");

    // KOMBIT's limit held for all workers together (the simulator counts arrivals per second;
    // one call of slack for network jitter at a second's boundary).
    let stats = sim.stats();
    assert!(stats.calls > 100, "{stats:?}");
    assert!(
        stats.max_calls_per_second <= LIMIT as usize + 1,
        "{} calls within one second, limit {LIMIT}",
        stats.max_calls_per_second
    );
}
