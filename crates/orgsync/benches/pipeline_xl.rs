//! Benchmark: the whole pipeline on a synthetic municipality, as in production: the STS
//! simulator with docs/sizes.md §5's latency model, an `orgsync worker` process with the default
//! politeness limits (6 lists and 4 pages in flight, 14 calls/s) and the SQLite target, Redis at
//! 127.0.0.1:6379. Runs a first sync and a no-change second sync side by side and prints one
//! table: wall time, STS calls, target writes, department jobs, worker peak memory, and what the
//! provisioning log holds after each run (entries, Redis bytes, bytes per entry).
//!
//! `cargo bench -p orgsync --bench pipeline_xl`. Environment: `ORGSYNC_BENCH_SIZE`
//! (xs|s|m|l|xl; default xl), `ORGSYNC_BENCH_LATENCY` (`sizes` (default) or fixed ms),
//! `REDIS_URL` (default redis://127.0.0.1:6379). Exits 1 when the second run writes anything.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark prints its table and may stop on failure

use std::process::{Command, Stdio};
use std::time::Instant;

use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak(pid: u32) {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

struct Row {
    name: &'static str,
    seconds: f64,
    report: serde_json::Value,
    peak_mib: f64,
    /// The provisioning log after the run: entries and Redis bytes.
    log: (u64, u64),
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    std::process::exit(runtime.block_on(run()));
}

async fn run() -> i32 {
    let size: Size = std::env::var("ORGSYNC_BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(Size::Xl);
    let latency = match std::env::var("ORGSYNC_BENCH_LATENCY")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(ms) => LatencyModel::fixed(ms),
        None => LatencyModel::sizes(),
    };
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cvr = Cvr::parse("11111111").unwrap();
    let truth = generate(
        &cvr,
        size,
        1,
        orgsync_model::time::danish_date(&chrono::Utc::now()),
    );
    println!(
        "pipeline benchmark: municipality {size} ({} units, {} users), latency {latency:?}, default limits (6 lists and 4 pages in flight, 14 calls/s), SQLite target",
        truth.units.len(),
        truth.users.len()
    );
    let sim = Simulator::start(
        vec![truth],
        SimOptions {
            latency,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("customers")).unwrap();
    let prefix = format!("bench-pipeline-{}", std::process::id());
    std::fs::write(
        config.join("orgsync.toml"),
        format!(
            "[redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n[sts]\nenvironment = \"sim\"\nbase_url = \"{}\"\n",
            sim.base_url()
        ),
    )
    .unwrap();
    std::fs::write(
        config.join("customers/bench.toml"),
        format!(
            "cvr = \"11111111\"\nname = \"Bench\"\ndomains = [\"{}\"]\n[target]\nkind = \"sqlite\"\npath = {:?}\n",
            domain_of(size),
            dir.path().join("target.sqlite").display().to_string()
        ),
    )
    .unwrap();

    let exe = env!("CARGO_BIN_EXE_orgsync");
    let mut worker = Command::new(exe)
        .arg("--config")
        .arg(&config)
        .arg("worker")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = worker.id();

    let queue = orgsync_queue::QueueHandle::connect(orgsync_queue::QueueConfig::new(
        redis.as_str(),
        prefix.as_str(),
    ))
    .await
    .unwrap();
    let mut rows = Vec::new();
    for name in ["first run", "no-change run"] {
        reset_peak(pid);
        let started = Instant::now();
        let out = tokio::task::spawn_blocking({
            let config = config.clone();
            move || {
                Command::new(exe)
                    .arg("--config")
                    .arg(&config)
                    .args(["sync", "11111111", "--wait", "--format", "json"])
                    .env("RUST_LOG", "warn")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "sync printed no report: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        rows.push(Row {
            name,
            seconds,
            report,
            peak_mib: peak_rss_mib(pid),
            log: queue
                .object_log_usage("provisioning:11111111")
                .await
                .unwrap_or_default(),
        });
    }
    let _ = worker.kill();
    let _ = worker.wait();
    sim.shutdown().await;
    let _ = redis_purge(&redis, &prefix).await;

    println!();
    println!(
        "| run | state | wall time | STS calls | target writes | unchanged | department jobs | worker peak RSS | log entries | log Redis bytes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let r = &row.report;
        println!(
            "| {} | {} | {:.1} s | {} | {} | {} | {} | {:.0} MiB | {} | {:.1} MiB |",
            row.name,
            r["state"].as_str().unwrap_or("?"),
            row.seconds,
            r["sts_calls"],
            r["writes"]["written"],
            r["writes"]["unchanged"],
            r["departments_total"],
            row.peak_mib,
            row.log.0,
            row.log.1 as f64 / (1024.0 * 1024.0)
        );
    }
    let (entries, bytes) = rows[0].log;
    if let Some(per_entry) = bytes.checked_div(entries) {
        println!(
            "provisioning log: {per_entry} bytes per entry after the first run; the no-change run added {} entries and {} bytes",
            rows[1].log.0.saturating_sub(entries),
            rows[1].log.1.saturating_sub(bytes)
        );
    }
    // The read against its floor: STS calls ÷ the configured calls per second (the default
    // 14/s, which this benchmark's configuration keeps). The no-change run against its read.
    const CALLS_PER_SECOND: f64 = 14.0;
    for row in &rows {
        let calls = row.report["sts_calls"].as_f64().unwrap_or(f64::NAN);
        let read_s = row.report["durations"]["read_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
            / 1000.0;
        let floor = calls / CALLS_PER_SECOND;
        println!(
            "{}: read {read_s:.1} s for {calls} calls; floor {floor:.1} s ({calls} ÷ {CALLS_PER_SECOND}/s); read ÷ floor = {:.2}; run wall time ÷ read = {:.2}",
            row.name,
            read_s / floor,
            row.seconds / read_s
        );
    }
    for row in &rows {
        let d = &row.report["durations"];
        println!(
            "{}: read {} ms, plan {} ms, departments {} ms, users {} ms, finish {} ms",
            row.name,
            d["read_ms"],
            d["plan_ms"],
            d["departments_ms"],
            d["users_ms"],
            d["finish_ms"]
        );
    }
    let second_writes = rows[1].report["writes"]["written"]
        .as_u64()
        .unwrap_or(u64::MAX);
    if second_writes == 0 {
        println!("the no-change run made zero target writes");
        0
    } else {
        println!("FAIL: the no-change run made {second_writes} target writes");
        1
    }
}

async fn redis_purge(url: &str, prefix: &str) -> Result<u64, orgsync_queue::QueueError> {
    let queue =
        orgsync_queue::QueueHandle::connect(orgsync_queue::QueueConfig::new(url, prefix)).await?;
    queue.purge_all_keys().await
}
