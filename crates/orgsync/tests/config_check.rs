//! `orgsync config check`, driven as a user would: the binary on the shipped config and on broken copies.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn orgsync() -> Command {
    let mut cmd = Command::cargo_bin("orgsync").unwrap();
    // The developer's own overrides must not leak into the tests.
    for (name, _) in std::env::vars() {
        if name.starts_with("ORGSYNC") {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn copy_of_shipped() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("customers")).unwrap();
    fs::copy(
        shipped().join("orgsync.toml"),
        dir.path().join("orgsync.toml"),
    )
    .unwrap();
    fs::copy(
        shipped().join("customers/demo.toml"),
        dir.path().join("customers/demo.toml"),
    )
    .unwrap();
    dir
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn config_check_passes_on_the_shipped_config_and_summarises_it() {
    orgsync()
        .args(["config", "check", "--config"])
        .arg(shipped())
        .assert()
        .success()
        .stdout(predicate::str::contains("customer 11111111 Demo Kommune"))
        .stdout(predicate::str::contains(
            "schedule  \"0 0 * * *\" in Europe/Copenhagen",
        ))
        .stdout(predicate::str::contains(
            "target    sqlite data/11111111.sqlite",
        ))
        .stdout(predicate::str::contains("warning:").and(predicate::str::contains("modulus-11")))
        .stdout(predicate::str::ends_with("Configuration OK.\n"));
}

#[test]
fn config_check_reports_every_problem_of_a_broken_copy_in_one_run() {
    let dir = copy_of_shipped();
    let demo = dir.path().join("customers/demo.toml");
    edit(&demo, "cvr = \"11111111\"", "cvr = \"1111111\"");
    edit(
        &demo,
        "domains = [\"demo-kommune.dk\"]",
        "domains = [\"demo kommune.dk\"]",
    );
    edit(&demo, "schedule = \"0 0 * * *\"", "schedule = \"0 0 * *\"");
    edit(
        &demo,
        "max_deactivation_percent = 10.0",
        "max_deactivation_percent = -1.0",
    );
    edit(&demo, "enabled = true", "enabled = true\nenable = false");
    // A second customer: a copy with the same CVR and an unknown time zone.
    let other = dir.path().join("customers/other.toml");
    fs::copy(shipped().join("customers/demo.toml"), &other).unwrap();
    edit(
        &other,
        "timezone = \"Europe/Copenhagen\"",
        "timezone = \"Mars/Olympus\"",
    );
    let third = dir.path().join("customers/third.toml");
    fs::copy(shipped().join("customers/demo.toml"), &third).unwrap();

    let assert = orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .assert()
        .failure()
        .code(1);
    let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
    let demo = demo.display().to_string();
    for (file, needle) in [
        (&demo, "cvr: expected exactly 8 digits, got \"1111111\""),
        (
            &demo,
            "domains[0]: \"demo kommune.dk\" is not a mail domain",
        ),
        (&demo, "schedule: \"0 0 * *\" has 4 fields"),
        (
            &demo,
            "guards.max_deactivation_percent: -1; expected a percentage from 0 to 100",
        ),
        (&demo, "enable: unknown field"),
        (
            &other.display().to_string(),
            "timezone: \"Mars/Olympus\" is not a time zone",
        ),
        (
            &third.display().to_string(),
            "cvr: CVR 11111111 is already configured in",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(file.as_str()) && l.contains(needle)),
            "missing {needle:?} for {file} in:\n{stderr}"
        );
    }
    assert!(
        stderr.starts_with("error: 7 problems in the configuration:"),
        "{stderr}"
    );
    assert!(
        assert.get_output().stdout.is_empty(),
        "nothing on stdout when refused"
    );
}

#[test]
fn config_check_names_line_and_column() {
    let dir = copy_of_shipped();
    let demo = dir.path().join("customers/demo.toml");
    edit(&demo, "cvr = \"11111111\"", "cvr = \"ABCDEFGH\"");
    orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!(
            "{}:6:7: cvr: expected exactly 8 digits",
            demo.display()
        )));
}

#[test]
fn environment_overrides_apply_and_are_blamed_when_wrong() {
    orgsync()
        .args(["config", "check", "--config"])
        .arg(shipped())
        .env("ORGSYNC__REDIS__KEY_PREFIX", "tenant-a")
        .env("ORGSYNC__REDIS__URL", "redis://:s3cret@127.0.0.1:6390")
        .assert()
        .success()
        .stdout(predicate::str::contains("key prefix \"tenant-a\""))
        .stdout(predicate::str::contains("redis://:***@127.0.0.1:6390"))
        .stdout(predicate::str::contains("s3cret").not());

    orgsync()
        .args(["config", "check", "--config"])
        .arg(shipped())
        .env("ORGSYNC__STS__MAX_CALLS_PER_SECOND", "5000")
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "environment: ORGSYNC__STS__MAX_CALLS_PER_SECOND: 5000; expected 1 to 1000",
        ));
}

#[test]
fn a_missing_config_directory_says_how_to_name_another() {
    orgsync()
        .args(["config", "check", "--config", "/nonexistent/orgsync"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "/nonexistent/orgsync: the configuration directory does not exist",
        ))
        .stderr(predicate::str::contains("--config DIR"));
}

/// A copy of the shipped config whose customer writes to a SCIM target at `base_url`.
fn copy_with_scim_target(base_url: &str) -> tempfile::TempDir {
    let dir = copy_of_shipped();
    let demo = dir.path().join("customers/demo.toml");
    let text = fs::read_to_string(&demo).unwrap();
    let head = &text[..text.find("[target]").unwrap()];
    let target = format!(
        "[target]\nkind = \"scim\"\nbase_url = \"{base_url}\"\ntoken_env = \"ORGSYNC_TEST_SCIM_TOKEN\"\n"
    );
    fs::write(&demo, format!("{head}{target}")).unwrap();
    dir
}

struct ScimServer(std::process::Child);

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_scim_server(token: &str) -> (ScimServer, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("scim2-server")
        .args([
            "--hostname",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--tenant",
            "11111111",
            "--bearer-token",
            token,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("scim2-server starts (pip install scim2-server; .ci/run does)");
    let server = ScimServer(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "scim2-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (server, format!("http://127.0.0.1:{port}/11111111/v2/"))
}

#[test]
fn config_check_runs_each_customers_target_health_check() {
    let (_server, base_url) = start_scim_server("health-token");
    let dir = copy_with_scim_target(&base_url);
    orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .env("ORGSYNC_TEST_SCIM_TOKEN", "health-token")
        .assert()
        .success()
        .stdout(predicate::str::contains("health    ok: SCIM"))
        .stdout(predicate::str::contains("accepts the token"))
        .stdout(predicate::str::contains("(0 users for this customer)"));

    // The wrong token: the check fails, says why, and never prints the token.
    orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .env("ORGSYNC_TEST_SCIM_TOKEN", "wrong-token")
        .assert()
        .failure()
        .stdout(predicate::str::contains(
            "health    FAILED: the target refused the credentials (HTTP 401)",
        ))
        .stdout(predicate::str::contains("1 health check failed"))
        .stdout(predicate::str::contains("wrong-token").not());

    // No token at all: named, and --offline skips the check.
    orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .assert()
        .failure()
        .stdout(predicate::str::contains(
            "ORGSYNC_TEST_SCIM_TOKEN, which is not set",
        ));
    orgsync()
        .args(["config", "check", "--offline", "--config"])
        .arg(dir.path())
        .assert()
        .success()
        .stdout(predicate::str::contains("health").not());
}

#[test]
fn config_check_reports_an_unreachable_target_and_an_existing_sqlite_directory() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = copy_with_scim_target(&format!("http://127.0.0.1:{port}/scim/v2/"));
    orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .env("ORGSYNC_TEST_SCIM_TOKEN", "t")
        .assert()
        .failure()
        .stdout(predicate::str::contains(
            "health    FAILED: the target is unreachable",
        ));

    let dir = copy_of_shipped();
    let db = dir.path().join("directory.sqlite");
    edit(
        &dir.path().join("customers/demo.toml"),
        "path = \"data/11111111.sqlite\"",
        &format!("path = {:?}", db.display().to_string()),
    );
    create_empty_file(&db);
    orgsync()
        .args(["config", "check", "--config"])
        .arg(dir.path())
        .assert()
        .success()
        .stdout(
            predicate::str::contains("health    ok: SQLite")
                .and(predicate::str::contains("readable and writable")),
        );
}

/// An empty file is a valid empty SQLite database; the health check opens and migrates it.
fn create_empty_file(path: &Path) {
    fs::write(path, b"").unwrap();
}

#[test]
fn a_malformed_environment_override_is_named_by_its_variable() {
    orgsync()
        .args(["config", "check", "--offline", "--config"])
        .arg(shipped())
        .env("ORGSYNC__STS__CALL_TIMEOUT_MS", "soon")
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "environment: ORGSYNC__STS__CALL_TIMEOUT_MS:",
        ));
}
