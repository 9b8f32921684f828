//! The signed profile through the binary: `orgsync sim --require-signatures` as a child process, `orgsync sts snapshot` and `orgsync config check` with a PKCS#12 system certificate, and no secret in any log line.
//!
//! Fails when `openssl` is missing (it makes the PKCS#12 file, as a certificate vendor would).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::CommandCargoExt as _;
use predicates::prelude::*;

const PASSWORD: &str = "Hemmeligt-Kodeord-42";

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

fn orgsync(config: &Path) -> Command {
    let mut cmd = Command::cargo_bin("orgsync").unwrap();
    for (name, _) in std::env::vars() {
        if name.starts_with("ORGSYNC") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.arg("--config").arg(config);
    cmd
}

struct Sim(Child, u16);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_signed_sim(pki_dir: &Path) -> Sim {
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
            "--latency-ms",
            "0",
            "--require-signatures",
            "--pki-dir",
        ])
        .arg(pki_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        || !pki_dir.join("client-key.pem").exists()
    {
        assert!(Instant::now() < deadline, "orgsync sim did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Sim(child, port)
}

/// The shipped configuration with `[sts]` pointed at the signed simulator and a PKCS#12 file.
fn signed_config(dir: &Path, pki: &Path, port: u16) -> PathBuf {
    let p12 = dir.join("system.p12");
    let output = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-name", "orgsync test"])
        .arg("-in")
        .arg(pki.join("client.pem"))
        .arg("-inkey")
        .arg(pki.join("client-key.pem"))
        .arg("-out")
        .arg(&p12)
        .args(["-passout", &format!("pass:{PASSWORD}")])
        .output()
        .expect("openssl is needed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = dir.join("config");
    std::fs::create_dir_all(config.join("customers")).unwrap();
    std::fs::copy(
        shipped().join("customers/demo.toml"),
        config.join("customers/demo.toml"),
    )
    .unwrap();
    let service = std::fs::read_to_string(shipped().join("orgsync.toml")).unwrap();
    let sts = format!(
        "environment = \"sim\"\nsigned = true\nbase_url = \"https://127.0.0.1:{port}/organisation/\"\ncertificate_file = {:?}\ntls_ca_file = {:?}\n",
        p12.display().to_string(),
        pki.join("ca.pem").display().to_string(),
    );
    let service = service
        .replacen("environment = \"sim\"\n", &sts, 1)
        .replacen(
            "sts_certificate_files = []",
            &format!(
                "sts_certificate_files = [{:?}]",
                pki.join("sts.pem").display().to_string()
            ),
            1,
        );
    std::fs::write(config.join("orgsync.toml"), service).unwrap();
    config
}

#[test]
fn a_signed_snapshot_reads_the_simulator_with_one_token_and_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let sim = start_signed_sim(&pki);
    let config = signed_config(dir.path(), &pki, sim.1);
    let output = orgsync(&config)
        .env("ORGSYNC_STS_CERTIFICATE_PASSWORD", PASSWORD)
        .env("RUST_LOG", "trace")
        .args(["sts", "snapshot", "11111111", "--format", "summary"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("municipality 11111111")
                .and(predicate::str::contains("complete     yes")),
        );
    let logs = String::from_utf8_lossy(&output.get_output().stderr).into_owned();
    assert_eq!(
        logs.matches("STS token issued").count(),
        1,
        "one token for the run:\n{logs}"
    );
    assert!(logs.contains("loaded the system certificate"), "{logs}");
    assert!(!logs.contains(PASSWORD));
    let key = std::fs::read_to_string(pki.join("client-key.pem")).unwrap();
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !logs.contains(line),
            "a line of the private key is in the logs"
        );
    }
    for marker in ["Assertion", "SignatureValue", "X509Certificate", "BEGIN"] {
        assert!(!logs.contains(marker), "{marker} in the logs:\n{logs}");
    }
}

#[test]
fn config_check_gets_a_token_per_customer_from_the_sts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let sim = start_signed_sim(&pki);
    let config = signed_config(dir.path(), &pki, sim.1);
    orgsync(&config)
        .env("ORGSYNC_STS_CERTIFICATE_PASSWORD", PASSWORD)
        .args(["config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "sts       ok: token for CVR 11111111 from the STS, valid until",
        ));
    // A customer the STS has no service agreement for fails the check, saying what to do.
    let demo = std::fs::read_to_string(config.join("customers/demo.toml")).unwrap();
    std::fs::write(
        config.join("customers/demo.toml"),
        demo.replacen("cvr = \"11111111\"", "cvr = \"29189846\"", 1),
    )
    .unwrap();
    orgsync(&config)
        .env("ORGSYNC_STS_CERTIFICATE_PASSWORD", PASSWORD)
        .args(["config", "check"])
        .assert()
        .failure()
        .stdout(
            predicate::str::contains("sts       FAILED")
                .and(predicate::str::contains("ServiceAgreementNotFound"))
                .and(predicate::str::contains("administration module")),
        );
}

#[test]
fn a_municipality_without_a_service_agreement_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let sim = start_signed_sim(&pki);
    let config = signed_config(dir.path(), &pki, sim.1);
    orgsync(&config)
        .env("ORGSYNC_STS_CERTIFICATE_PASSWORD", PASSWORD)
        .args(["sts", "snapshot", "22222222"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("ServiceAgreementNotFound")
                .and(predicate::str::contains("administration module"))
                .and(predicate::str::contains(PASSWORD).not()),
        );
}

#[test]
fn config_check_shows_the_certificates_and_warns_before_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let sim = orgsync_sts_sim::pki::SimPki::generate().unwrap();
    sim.write_to(&pki).unwrap();
    let config = signed_config(dir.path(), &pki, 1);
    orgsync(&config)
        .env("ORGSYNC_STS_CERTIFICATE_PASSWORD", PASSWORD)
        .args(["config", "check", "--offline"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(
                "certificate  C=DK, O=orgsync test, CN=orgsync test system (funktionscertifikat)",
            )
            .and(predicate::str::contains(
                "issuer C=DK, O=orgsync test, CN=orgsync simulator CA",
            ))
            .and(predicate::str::is_match(r"\((36[45]) days\)").unwrap())
            .and(predicate::str::contains(
                "sts cert     C=DK, O=orgsync test, CN=ADG_SIM_Adgangsstyring_1",
            ))
            .and(predicate::str::contains("expires in").not()),
        );
    // A PEM certificate (with its key file) that runs out in ten days: a warning, still OK.
    let soon = sim
        .client_certificate("orgsync expiring system", 10)
        .unwrap();
    std::fs::write(dir.path().join("soon.pem"), &soon.certificate_pem).unwrap();
    let service = std::fs::read_to_string(config.join("orgsync.toml")).unwrap();
    let p12_line = service
        .lines()
        .find(|l| l.starts_with("certificate_file"))
        .unwrap()
        .to_owned();
    let service = service.replacen(
        &p12_line,
        &format!(
            "certificate_file = {:?}\nprivate_key_file = {:?}",
            dir.path().join("soon.pem").display().to_string(),
            pki.join("client-key.pem").display().to_string()
        ),
        1,
    );
    std::fs::write(config.join("orgsync.toml"), service).unwrap();
    orgsync(&config)
        .args(["config", "check", "--offline"])
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(r"warning: the system certificate C=DK, O=orgsync test, CN=orgsync expiring system expires in (9|10) days \(\d{4}-\d\d-\d\d\): renew it and register the new one with KOMBIT")
                .unwrap(),
        );
    // Without the password the PKCS#12 cannot be opened: the check fails and says which variable.
    let service = std::fs::read_to_string(config.join("orgsync.toml")).unwrap();
    std::fs::write(
        config.join("orgsync.toml"),
        service.replacen(
            "certificate_file = ",
            "certificate_file = \"/nonexistent.p12\"\n# ",
            1,
        ),
    )
    .unwrap();
    orgsync(&config)
        .args(["config", "check", "--offline"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("sts.certificate_file")
                .and(predicate::str::contains("does not exist")),
        );
}

#[test]
fn exttest_without_a_certificate_is_refused_by_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("customers")).unwrap();
    std::fs::copy(
        shipped().join("customers/demo.toml"),
        config.join("customers/demo.toml"),
    )
    .unwrap();
    let service = std::fs::read_to_string(shipped().join("orgsync.toml"))
        .unwrap()
        .replacen("environment = \"sim\"", "environment = \"exttest\"", 1);
    std::fs::write(config.join("orgsync.toml"), service).unwrap();
    orgsync(&config)
        .args(["config", "check", "--offline"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("sts.certificate_file")
                .and(predicate::str::contains("needs the system certificate")),
        );
}
