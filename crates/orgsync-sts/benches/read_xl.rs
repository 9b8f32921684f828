//! Benchmark: read a synthetic municipality from the simulator (docs/sizes.md §5 latency) in bulk and per unit, with the default politeness limits.
//!
//! `cargo bench -p orgsync-sts` reads `xl`. Environment: `ORGSYNC_BENCH_SIZE` (xs|s|m|l|xl|stress),
//! `ORGSYNC_BENCH_LATENCY` (`sizes` (default) or a fixed number of ms), `ORGSYNC_BENCH_PER_UNIT_MAX`
//! (read at most this many units per unit and extrapolate; default: all; 0 = skip the per-unit
//! read), `ORGSYNC_BENCH_BASELINE=1` (first a bulk read with the sequential pager, one page in
//! flight, for comparison), `ORGSYNC_BENCH_IN_FLIGHT` and `ORGSYNC_BENCH_PAGES_IN_FLIGHT` (the two
//! concurrency budgets; default: the client's defaults).
//!
//! The bulk read's wall time is printed next to its floor, calls ÷ the configured calls per
//! second: no client keeping to the limit can read faster.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark prints its table and may stop on failure

use std::sync::Arc;
use std::time::Instant;

use orgsync_model::ids::Cvr;
use orgsync_sts::client::StsClient;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts_sim::generate::{Size, expected_read, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};
use tokio::task::JoinSet;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
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

fn reset_peak() {
    // Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Row {
    name: &'static str,
    calls: u64,
    seconds: f64,
    peak_mib: f64,
}

fn print_rows(rows: &[Row], floor: impl Fn(u64) -> f64) {
    println!();
    println!(
        "| strategy | STS calls | wall time (s) | floor: calls ÷ calls/s (s) | × floor | calls/s | peak RSS (MiB, client+sim) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} |",
            row.name,
            row.calls,
            row.seconds,
            floor(row.calls),
            row.seconds / floor(row.calls),
            row.calls as f64 / row.seconds,
            row.peak_mib
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
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
    let per_unit_max: Option<usize> = std::env::var("ORGSYNC_BENCH_PER_UNIT_MAX")
        .ok()
        .and_then(|s| s.parse().ok());
    let cvr = Cvr::parse("64942212").unwrap();
    let today = orgsync_model::time::danish_date(&chrono::Utc::now());
    let truth = generate(&cvr, size, 1, today);
    let n_functions: usize = truth.users.iter().map(|u| u.positions.len()).sum();
    println!(
        "municipality {size}: {} units, {} users, {} positions (incl. ended); latency {latency:?}",
        truth.units.len(),
        truth.users.len(),
        n_functions
    );
    let sim = Simulator::start(
        vec![truth.clone()],
        SimOptions {
            latency,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let env_usize = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let defaults = ClientOptions::for_sim(sim.base_url());
    let options = ClientOptions {
        max_in_flight: env_usize("ORGSYNC_BENCH_IN_FLIGHT").unwrap_or(defaults.max_in_flight),
        max_pages_in_flight: env_usize("ORGSYNC_BENCH_PAGES_IN_FLIGHT")
            .unwrap_or(defaults.max_pages_in_flight),
        ..defaults
    };
    println!(
        "client: {} lists and {} pages in flight, {} calls/s, page {}, list batch {}",
        options.max_in_flight,
        options.max_pages_in_flight,
        options.max_calls_per_second,
        options.page_size,
        options.list_batch_size
    );
    let mut rows = Vec::new();
    if std::env::var("ORGSYNC_BENCH_BASELINE").is_ok_and(|v| v == "1") {
        let sequential = ClientOptions {
            max_pages_in_flight: 1,
            ..options.clone()
        };
        let limits = SystemLimits::new(sequential.max_calls_per_second);
        let client = StsClient::new(cvr.clone(), &sequential, limits).unwrap();
        reset_peak();
        let started = Instant::now();
        let read = client.read_snapshot().await.unwrap();
        rows.push(Row {
            name: "bulk, sequential pager (1 page in flight)",
            calls: read.calls,
            seconds: started.elapsed().as_secs_f64(),
            peak_mib: peak_rss_mib(),
        });
        sim.reset_stats();
    }
    let limits = SystemLimits::new(options.max_calls_per_second);
    let client = StsClient::new(cvr.clone(), &options, limits).unwrap();

    // Bulk.
    reset_peak();
    let started = Instant::now();
    let read = client.read_snapshot().await.unwrap();
    let bulk = Row {
        name: "bulk (pages issued ahead)",
        calls: read.calls,
        seconds: started.elapsed().as_secs_f64(),
        peak_mib: peak_rss_mib(),
    };
    let complete = read.snapshot.partial.is_none();
    let mut got = read.snapshot.clone();
    let mut want = expected_read(&truth, today);
    for s in [&mut got, &mut want] {
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
    }
    let equal = got == want;
    let hierarchy_calls = sim
        .stats()
        .by_operation
        .get("organisationsystem/fremsoegobjekthierarki")
        .copied()
        .unwrap_or(0);
    println!(
        "bulk read complete: {complete}; equal to the generator's model: {equal}; issues: {}",
        read.issues.len()
    );
    println!("bulk calls by operation: {:?}", sim.stats().by_operation);

    rows.push(bulk);
    let floor = |calls: u64| calls as f64 / options.max_calls_per_second;
    if per_unit_max == Some(0) {
        print_rows(&rows, floor);
        for row in &rows {
            println!(
                "{}: {:.1} s = {:.2} × the floor ({:.1} s); within 1.15 × the floor: {}",
                row.name,
                row.seconds,
                row.seconds / floor(row.calls),
                floor(row.calls),
                row.seconds <= 1.15 * floor(row.calls)
            );
        }
        sim.shutdown().await;
        return;
    }
    let bulk = rows.pop().unwrap();

    // Per unit: the hierarchy pages (as in the bulk read) plus one read_unit per unit.
    sim.reset_stats();
    reset_peak();
    let units: Vec<_> = read.snapshot.units.iter().map(|u| u.uuid).collect();
    let sample: Vec<_> = units
        .iter()
        .copied()
        .take(per_unit_max.unwrap_or(units.len()))
        .collect();
    let started = Instant::now();
    let calls_before = client.calls();
    let mut tasks = JoinSet::new();
    let client = Arc::new(client);
    for unit in sample.iter().copied() {
        let client = client.clone();
        tasks.spawn(async move { client.read_unit(unit).await.map(|r| r.partial.is_none()) });
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        if !matches!(done, Ok(Ok(true))) {
            failed += 1;
        }
    }
    let scale = units.len() as f64 / sample.len().max(1) as f64;
    let per_unit_calls = ((client.calls() - calls_before) as f64 * scale) as u64 + hierarchy_calls;
    let per_unit = Row {
        name: if scale > 1.0 {
            "per unit (extrapolated)"
        } else {
            "per unit"
        },
        calls: per_unit_calls,
        seconds: started.elapsed().as_secs_f64() * scale,
        peak_mib: peak_rss_mib(),
    };
    println!(
        "per-unit reads: {} units read, {failed} incomplete; calls by operation: {:?}",
        sample.len(),
        sim.stats().by_operation
    );
    rows.push(bulk);
    rows.push(per_unit);
    print_rows(&rows, floor);
    let (bulk, per_unit) = (&rows[rows.len() - 2], &rows[rows.len() - 1]);
    println!(
        "ratio of calls, per unit / bulk: {:.1}",
        per_unit.calls as f64 / bulk.calls as f64
    );
    if size == Size::Xl {
        println!(
            "bulk read of xl within 6,000 calls: {}",
            bulk.calls <= 6_000
        );
    }
    Arc::try_unwrap(client).ok();
    sim.shutdown().await;
}
