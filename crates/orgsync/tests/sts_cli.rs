//! `orgsync sim` and `orgsync sts snapshot`, driven through the binary: the simulator as a
//! child process, the client reading it through the configured `[sts]`.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::CommandCargoExt as _;
use predicates::prelude::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn orgsync() -> Command {
    let mut cmd = Command::cargo_bin("orgsync").unwrap();
    for (name, _) in std::env::vars() {
        if name.starts_with("ORGSYNC") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--config").arg(shipped());
    cmd
}

struct Sim(Child, String);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim() -> Sim {
    start_sim_with(&[])
}

fn start_sim_with(extra: &[&str]) -> Sim {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::cargo_bin("orgsync")
        .unwrap()
        .args([
            "sim",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--size",
            "xs",
            "--seed",
            "7",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "orgsync sim did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sim(child, format!("http://127.0.0.1:{port}/organisation/"))
}

#[test]
fn sts_snapshot_reads_the_simulator_through_the_configured_sts() {
    let sim = start_sim();
    let output = orgsync()
        .env("ORGSYNC__STS__BASE_URL", &sim.1)
        .args(["sts", "snapshot", "11111111", "--format", "json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&output.get_output().stdout).unwrap();
    let units = json["units"].as_array().unwrap();
    let users = json["users"].as_array().unwrap();
    assert!(
        units.len() >= 10 && users.len() >= 100,
        "{} units, {} users",
        units.len(),
        users.len()
    );
    for key in ["uuid", "name", "user_key", "parent_uuid", "active"] {
        assert!(units[0].get(key).is_some(), "unit key {key}");
    }
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
        assert!(users[0].get(key).is_some(), "user key {key}");
    }
    assert!(json["issues"].is_array());

    orgsync()
        .env("ORGSYNC__STS__BASE_URL", &sim.1)
        .args(["sts", "snapshot", "11111111", "--format", "summary"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("municipality 11111111")
                .and(predicate::str::contains("complete     yes")),
        );
}

#[test]
fn a_municipality_without_a_service_agreement_is_a_clear_error() {
    let sim = start_sim();
    orgsync()
        .env("ORGSYNC__STS__BASE_URL", &sim.1)
        .args(["sts", "snapshot", "22222222"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("ServiceAgreementNotFound"));
}

#[test]
fn the_unsigned_profile_is_refused_for_anything_but_a_loopback_simulator() {
    orgsync()
        .env(
            "ORGSYNC__STS__BASE_URL",
            "http://sts.example.invalid/organisation/",
        )
        .args(["sts", "snapshot", "11111111"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("signed"));
}

#[test]
fn the_legacy_serviceplatformen_profile_reads_the_same_municipality() {
    let v6 = start_sim();
    let v5 = start_sim_with(&["--profile", "serviceplatformen"]);
    let snapshot = |sim: &Sim, profile: &str| -> serde_json::Value {
        let output = orgsync()
            .env("ORGSYNC__STS__BASE_URL", &sim.1)
            .env("ORGSYNC__STS__PROFILE", profile)
            .args(["sts", "snapshot", "11111111", "--format", "json"])
            .assert()
            .success();
        serde_json::from_slice(&output.get_output().stdout).unwrap()
    };
    let legacy = snapshot(&v5, "serviceplatformen");
    let current = snapshot(&v6, "stoettesystemerne");
    assert!(legacy["units"].as_array().unwrap().len() >= 10);
    assert!(legacy["users"].as_array().unwrap().len() >= 100);
    for key in ["cvr", "units", "users", "partial", "issues"] {
        assert_eq!(legacy[key], current[key], "{key}");
    }

    // Each simulator serves its own contract only: the Organisation 6 client gets a 404 from
    // the v5 simulator, which says which URL was called.
    orgsync()
        .env("ORGSYNC__STS__BASE_URL", &v5.1)
        .args(["sts", "snapshot", "11111111"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("/organisation/virksomhed/6/")
                .and(predicate::str::contains("404")),
        );
}

#[test]
fn sts_snapshot_fails_with_a_clear_message_when_sts_returns_no_units() {
    // A municipality the simulator knows, without units or users: every search finds nothing.
    let dir = tempfile::tempdir().unwrap();
    let fixture = dir.path().join("empty.json");
    std::fs::write(
        &fixture,
        r#"{"cvr":"22222222","units":[],"users":[],"partial":null}"#,
    )
    .unwrap();
    let sim = start_sim_with(&["--fixture", fixture.to_str().unwrap()]);
    let output = orgsync()
        .env("ORGSYNC__STS__BASE_URL", &sim.1)
        .args(["sts", "snapshot", "22222222", "--format", "json"])
        .assert()
        .failure()
        .code(1)
        .stderr(predicate::str::contains(
            "STS returned no units for CVR 22222222",
        ));
    // Nothing that could pass for a snapshot is printed.
    assert!(output.get_output().stdout.is_empty());
}
