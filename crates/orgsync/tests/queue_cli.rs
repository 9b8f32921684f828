//! `orgsync queue stats` and `orgsync dlq`, driven through the binary against the configured Redis.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn orgsync(prefix: &str) -> Command {
    let mut cmd = Command::cargo_bin("orgsync").unwrap();
    for (name, _) in std::env::vars() {
        if name.starts_with("ORGSYNC") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--config")
        .arg(shipped())
        .env("ORGSYNC__REDIS__KEY_PREFIX", prefix);
    cmd
}

fn prefix(test: &str) -> String {
    format!("orgsync-test-bin-{test}-{}", std::process::id())
}

#[test]
fn queue_stats_prints_json_for_scripts_and_a_table_for_people() {
    let prefix = prefix("stats");
    let output = orgsync(&prefix)
        .args(["queue", "stats", "--format", "json"])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_slice(&output.get_output().stdout).unwrap();
    assert!(
        json["job_types"].is_array() && json["workers"].is_array(),
        "{json}"
    );

    orgsync(&prefix)
        .args(["queue", "stats"])
        .assert()
        .success()
        .stdout(predicate::str::contains("WAITING").and(predicate::str::contains("live workers")));
}

#[test]
fn dlq_list_on_an_empty_queue_says_so() {
    let prefix = prefix("dlq");
    orgsync(&prefix)
        .args(["dlq", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 dead letters"));
    // Listing marks the (empty) dead-letter index as built: remove that key again.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let queue = orgsync_queue::QueueHandle::connect(orgsync_queue::QueueConfig::new(
            "redis://127.0.0.1:6379",
            prefix.as_str(),
        ))
        .await
        .unwrap();
        queue.purge_all_keys().await.unwrap();
    });
}

#[test]
fn an_unreachable_redis_is_named_without_its_password() {
    orgsync(&prefix("down"))
        .env("ORGSYNC__REDIS__URL", "redis://:hunter2@127.0.0.1:1")
        .args(["dlq", "list"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot open the job queue"))
        .stderr(predicate::str::contains("redis://:***@127.0.0.1:1"))
        .stderr(predicate::str::contains("hunter2").not());
}

#[test]
fn an_invalid_configuration_stops_queue_commands_with_every_problem() {
    orgsync(&prefix("badcfg"))
        .env("ORGSYNC__REDIS__KEY_PREFIX", "no spaces allowed")
        .args(["queue", "stats"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("ORGSYNC__REDIS__KEY_PREFIX"))
        .stderr(predicate::str::contains("orgsync config check"));
}
