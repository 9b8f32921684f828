//! `orgsync worker` starts Sentry from the variable `[support] sentry_dsn_env` names: a DSN that
//! does not parse stops the worker with an error naming the variable, never its value.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

#[test]
fn a_worker_with_an_invalid_sentry_dsn_stops_naming_the_variable_not_its_value() {
    let mut cmd = Command::cargo_bin("orgsync").unwrap();
    for (name, _) in std::env::vars() {
        if name.starts_with("ORGSYNC") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG")
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config"))
        .arg("worker")
        .env("ORGSYNC_SENTRY_DSN", "not-a-dsn-hunter2")
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("cannot start Sentry: ORGSYNC_SENTRY_DSN: not a Sentry DSN")
                .and(predicate::str::contains("hunter2").not()),
        );
}
