//! The simulator: deterministic synthetic data with the docs/sizes.md shapes, fixtures, live replacement, several municipalities, and the CLI.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

use std::collections::{HashMap, HashSet};

use clap::{CommandFactory, Parser};
use orgsync_model::ids::Cvr;
use orgsync_model::snapshot::UnitKind;
use orgsync_sts_sim::cli::SimArgs;
use orgsync_sts_sim::generate::{Size, generate};
use orgsync_sts_sim::server::{SimOptions, Simulator};

fn cvr() -> Cvr {
    Cvr::parse("11111111").unwrap()
}

fn today() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
}

#[test]
fn the_same_size_and_seed_give_the_same_municipality() {
    assert_eq!(
        generate(&cvr(), Size::S, 5, today()),
        generate(&cvr(), Size::S, 5, today())
    );
    assert_ne!(
        generate(&cvr(), Size::S, 5, today()),
        generate(&cvr(), Size::S, 6, today())
    );
}

#[test]
fn a_median_municipality_has_the_shape_sizes_md_asks_for() {
    let m = generate(&cvr(), Size::M, 1, today());
    let profile = Size::M.profile();
    let active_units = m.units.iter().filter(|u| u.active).count();
    assert_eq!(active_units, profile.units);
    assert!(m.units.iter().any(|u| !u.active));
    assert_eq!(
        m.users.iter().filter(|u| u.active).count(),
        profile.active_users
    );
    assert_eq!(
        m.users.iter().filter(|u| !u.active).count(),
        profile.inactive_users
    );
    // Depth.
    let parent: HashMap<_, _> = m.units.iter().map(|u| (u.uuid, u.parent_uuid)).collect();
    let depth = |mut id| {
        let mut d = 1;
        while let Some(Some(p)) = parent.get(&id) {
            d += 1;
            id = *p;
        }
        d
    };
    assert_eq!(
        m.units.iter().map(|u| depth(u.uuid)).max(),
        Some(profile.max_depth)
    );
    assert_eq!(
        m.units.iter().filter(|u| u.parent_uuid.is_none()).count(),
        1
    );
    // Names with æøå, Team and Afdeling types.
    assert!(
        m.units
            .iter()
            .any(|u| u.name.contains('ø') || u.name.contains('æ') || u.name.contains('å'))
    );
    assert!(m.users.iter().any(|u| {
        u.name
            .as_deref()
            .is_some_and(|n| n.contains('ø') || n.contains('å'))
    }));
    assert!(m.units.iter().any(|u| u.kind == Some(UnitKind::Team)));
    assert!(m.units.iter().any(|u| u.kind == Some(UnitKind::Department)));
    // Positions: several per user, future-dated, ended, managers; users without e-mail; containers.
    let today = today();
    assert!(m.users.iter().any(|u| {
        u.positions
            .iter()
            .filter(|p| p.valid_to.is_none_or(|t| t > today))
            .count()
            >= 2
    }));
    assert!(
        m.users
            .iter()
            .flat_map(|u| &u.positions)
            .any(|p| p.valid_from.is_some_and(|f| f > today))
    );
    assert!(
        m.users
            .iter()
            .flat_map(|u| &u.positions)
            .any(|p| p.valid_to.is_some_and(|t| t <= today))
    );
    let managers = m
        .users
        .iter()
        .flat_map(|u| &u.positions)
        .filter(|p| p.manager)
        .count();
    assert_eq!(managers, profile.managers);
    assert!(m.users.iter().any(|u| u.active && u.email.is_none()));
    let staffed: HashSet<_> = m
        .users
        .iter()
        .flat_map(|u| &u.positions)
        .map(|p| p.unit_uuid)
        .collect();
    let empty = m
        .units
        .iter()
        .filter(|u| u.active && !staffed.contains(&u.uuid))
        .count();
    assert!(empty > 0, "no containers without users");
    let root = m
        .units
        .iter()
        .find(|u| u.parent_uuid.is_none())
        .unwrap()
        .uuid;
    assert!(staffed.contains(&root), "nobody works in the root unit");
}

#[test]
fn the_xl_profile_stays_within_the_documented_sizes() {
    let xl = generate(&cvr(), Size::Xl, 1, today());
    assert!(xl.units.len() >= 4_000 && xl.units.len() < 4_600);
    assert_eq!(xl.users.len(), 61_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_serves_several_municipalities_and_replaces_one_while_running() {
    let a = generate(&cvr(), Size::Xs, 1, today());
    let other = Cvr::parse("29189846").unwrap();
    let b = generate(&other, Size::Xs, 2, today());
    let sim = Simulator::start(vec![a.clone(), b.clone()], SimOptions::default())
        .await
        .unwrap();
    assert!(sim.address().ip().is_loopback());
    assert_eq!(sim.world(&cvr()).unwrap().snapshot(), &a);
    assert_ne!(
        sim.world(&cvr()).unwrap().organisation(),
        sim.world(&other).unwrap().organisation()
    );
    let mut changed = a.clone();
    changed.users.truncate(10);
    sim.replace(changed.clone());
    assert_eq!(sim.world(&cvr()).unwrap().snapshot(), &changed);
    sim.remove(&other);
    assert!(sim.world(&other).is_none());
    sim.shutdown().await;
}

#[test]
fn a_fixture_in_snapshot_json_loads() {
    let snapshot = generate(&cvr(), Size::Xs, 1, today());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("korsbaek.json");
    std::fs::write(&path, serde_json::to_string_pretty(&snapshot).unwrap()).unwrap();
    assert_eq!(orgsync_sts_sim::load_fixture(&path).unwrap(), snapshot);
    let error = orgsync_sts_sim::load_fixture(&dir.path().join("missing.json")).unwrap_err();
    assert!(error.to_string().contains("missing.json"));
}

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
}

#[test]
fn the_sim_cli_definition_is_consistent() {
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "sim",
        "--size",
        "m",
        "--seed",
        "3",
        "--latency-ms",
        "0",
        "--fault-rate",
        "0.01",
        "--cvr",
        "11111111",
    ])
    .unwrap();
    assert_eq!(cli.sim.size, Size::M);
    let options = orgsync_sts_sim::cli::options(&cli.sim).unwrap();
    assert_eq!(options.faults.fault_rate, 0.01);
    assert!(Cli::try_parse_from(["sim", "--size", "huge"]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_command_serves_until_shut_down() {
    let cli = Cli::try_parse_from([
        "sim",
        "--bind",
        "127.0.0.1:0",
        "--size",
        "xs",
        "--latency-ms",
        "0",
    ])
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(orgsync_sts_sim::cli::run(cli.sim, async move {
        let _ = rx.await;
    }));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
