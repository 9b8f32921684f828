//! `orgsync sts snapshot`: JSON with the required keys plus issues, a summary for people, and clap wiring.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use clap::{CommandFactory, Parser};
use common::*;
use orgsync_model::ids::UnitId;
use orgsync_sts::cli::{StsCommand, run};
use orgsync_sts_sim::generate::Size;
use orgsync_sts_sim::server::SimOptions;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    command: StsCommand,
}

#[test]
fn the_cli_definition_is_consistent() {
    Cli::command().debug_assert();
    let cli =
        Cli::try_parse_from(["orgsync", "snapshot", "29189846", "--format", "summary"]).unwrap();
    assert!(matches!(cli.command, StsCommand::Snapshot(ref a) if a.cvr.as_str() == "29189846"));
    assert!(Cli::try_parse_from(["orgsync", "snapshot", "2918984"]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_json_has_the_documented_keys_and_validation_issues() {
    let mut truth = municipality(Size::Xs, 4);
    // A unit whose parent is missing, and two units in a cycle: validation issues, not a crash.
    let orphan = uuid::Uuid::new_v4();
    truth.units[5].parent_uuid = Some(UnitId(orphan));
    let (a, b) = (truth.units[6].uuid, truth.units[7].uuid);
    truth.units[6].parent_uuid = Some(b);
    truth.units[7].parent_uuid = Some(a);
    let sim = start(truth, SimOptions::default()).await;
    let cli = Cli::try_parse_from(["orgsync", "snapshot", "29189846", "--format", "json"]).unwrap();
    let mut out = Vec::new();
    run(&cli.command, &fast_options(&sim), &mut out)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in ["uuid", "name", "user_key", "parent_uuid", "active"] {
        assert!(json["units"][0].get(key).is_some(), "units[].{key}");
    }
    let user = json["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| !u["positions"].as_array().unwrap().is_empty())
        .unwrap();
    for key in [
        "uuid",
        "user_name",
        "first_name",
        "last_name",
        "email",
        "phone",
        "active",
        "positions",
    ] {
        assert!(user.get(key).is_some(), "users[].{key}");
    }
    for key in ["unit_uuid", "title", "manager"] {
        assert!(user["positions"][0].get(key).is_some(), "positions[].{key}");
    }
    let issues = json["issues"].as_array().unwrap();
    let codes: Vec<&str> = issues.iter().filter_map(|i| i["code"].as_str()).collect();
    assert!(codes.contains(&"missing_parent"), "{codes:?}");
    assert!(codes.contains(&"cycle"), "{codes:?}");
    assert!(
        issues
            .iter()
            .any(|i| i["message"].as_str().unwrap().contains(&orphan.to_string()))
    );

    let cli =
        Cli::try_parse_from(["orgsync", "snapshot", "29189846", "--format", "summary"]).unwrap();
    let mut out = Vec::new();
    run(&cli.command, &fast_options(&sim), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("units") && text.contains("users") && text.contains("issues"),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_shows_the_reads_progress_every_second_and_at_the_end() {
    let sim = start(
        municipality(Size::S, 4),
        SimOptions {
            latency: orgsync_sts_sim::server::LatencyModel::fixed(200),
            ..SimOptions::default()
        },
    )
    .await;
    let cli = Cli::try_parse_from([
        "orgsync",
        "snapshot",
        "29189846",
        "--format",
        "summary",
        "--progress",
    ])
    .unwrap();
    assert!(matches!(cli.command, StsCommand::Snapshot(ref a) if a.progress));
    let mut out = Vec::new();
    let mut progress = Vec::new();
    orgsync_sts::cli::run_with_progress(
        &cli.command,
        &fast_options(&sim),
        &mut out,
        Some(&mut progress),
    )
    .await
    .unwrap();
    let progress = String::from_utf8(progress).unwrap();
    let lines: Vec<&str> = progress.lines().collect();
    // The read takes more than a second: a line while reading, and the final one.
    assert!(lines.len() >= 2, "{progress}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("calls left") && !l.starts_with("reading STS: 0 calls")),
        "{progress}"
    );
    let calls = sim.stats().calls;
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("reading STS: {calls} calls, ")) && last.ends_with(", done"),
        "{last}"
    );
    let summary = String::from_utf8(out).unwrap();
    assert!(
        summary.contains(&format!("sts calls    {calls}")),
        "{summary}"
    );
    sim.shutdown().await;
}
