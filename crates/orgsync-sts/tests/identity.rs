//! The system certificate: PKCS#12 files as OpenSSL makes them (modern AES and legacy 3DES/RC2), PEM with PKCS#8 or PKCS#1 keys, and no secret in any error or Debug output.
//!
//! Fails when `openssl` is missing (it makes the PKCS#12 files, as a certificate vendor would).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::path::Path;
use std::process::Command;

use common::signed::*;
use orgsync_sts::identity::{ClientIdentity, verify_rsa_sha256};

const PASSWORD: &str = "Hemmeligt-Kodeord-42";

fn pkcs12(dir: &Path, legacy: bool) -> Vec<u8> {
    let pki = pki();
    std::fs::write(dir.join("cert.pem"), &pki.client.certificate_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.client.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    let out = dir.join(if legacy { "legacy.p12" } else { "modern.p12" });
    let mut command = Command::new("openssl");
    command
        .args(["pkcs12", "-export", "-name", "orgsync test"])
        .arg("-in")
        .arg(dir.join("cert.pem"))
        .arg("-inkey")
        .arg(dir.join("key.pem"))
        .arg("-certfile")
        .arg(dir.join("ca.pem"))
        .arg("-out")
        .arg(&out)
        .args(["-passout", &format!("pass:{PASSWORD}")]);
    if legacy {
        command.args([
            "-certpbe",
            "PBE-SHA1-3DES",
            "-keypbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ]);
    }
    let output = command
        .output()
        .expect("openssl is needed to make PKCS#12 files");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).unwrap()
}

#[test]
fn pkcs12_files_from_openssl_load_in_modern_and_legacy_encryption() {
    let dir = tempfile::tempdir().unwrap();
    for legacy in [false, true] {
        let identity = ClientIdentity::from_pkcs12(&pkcs12(dir.path(), legacy), PASSWORD).unwrap();
        assert_eq!(
            identity.certificate_der(),
            pki().client.certificate.as_slice()
        );
        assert!(
            identity.info().subject.contains("orgsync test system"),
            "{:?}",
            identity.info()
        );
        assert!(identity.info().issuer.contains("orgsync simulator CA"));
        assert!(identity.info().days_until_expiry(chrono::Utc::now()) >= 364);
        let signature = identity.sign_rsa_sha256(b"data").unwrap();
        assert!(verify_rsa_sha256(
            identity.certificate_der(),
            b"data",
            &signature
        ));
        assert!(!verify_rsa_sha256(
            identity.certificate_der(),
            b"other",
            &signature
        ));
    }
}

#[test]
fn a_wrong_password_is_a_clear_error_that_does_not_echo_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = pkcs12(dir.path(), false);
    let error = ClientIdentity::from_pkcs12(&file, "not-the-password-123").unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(text.contains("password"), "{text}");
    assert!(!text.contains("not-the-password-123"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn pem_keys_load_as_pkcs8_and_pkcs1_and_a_foreign_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let identity = ClientIdentity::from_pem(
        pki.client.certificate_pem.as_bytes(),
        pki.client.key_pem.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        identity.certificate_der(),
        pki.client.certificate.as_slice()
    );
    // PKCS#1 ("RSA PRIVATE KEY"), as older tools write it.
    std::fs::write(dir.path().join("key.pem"), &pki.client.key_pem).unwrap();
    let output = Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(dir.path().join("key.pem"))
        .output()
        .expect("openssl is needed");
    assert!(String::from_utf8_lossy(&output.stdout).contains("BEGIN RSA PRIVATE KEY"));
    let pkcs1 =
        ClientIdentity::from_pem(pki.client.certificate_pem.as_bytes(), &output.stdout).unwrap();
    assert_eq!(pkcs1.certificate_base64(), identity.certificate_base64());
    // Certificate and key in one file.
    let both = format!("{}{}", pki.client.certificate_pem, pki.client.key_pem);
    assert!(ClientIdentity::from_pem(both.as_bytes(), both.as_bytes()).is_ok());
    // The STS key does not belong to the client certificate.
    let error = ClientIdentity::from_pem(
        pki.client.certificate_pem.as_bytes(),
        pki.sts.key_pem.as_bytes(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("does not belong"), "{error}");
}

#[test]
fn debug_output_of_the_identity_and_a_token_shows_no_key_material() {
    let pki = pki();
    let identity = ClientIdentity::from_pem(
        pki.client.certificate_pem.as_bytes(),
        pki.client.key_pem.as_bytes(),
    )
    .unwrap();
    let debug = format!("{identity:?}");
    assert!(debug.contains("redacted"), "{debug}");
    let key_body: Vec<&str> = pki
        .client
        .key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for line in &key_body {
        assert!(!debug.contains(line), "{debug}");
    }
    let security = orgsync_sts_sim::security::SimSecurity::new(pki.clone(), true);
    let xml = orgsync_sts_sim::security::assertion(
        &security,
        &pki.sts,
        "29189846",
        "urn:x",
        &pki.client.certificate,
        chrono::Utc::now(),
    );
    let token = orgsync_sts::token::SamlToken::from_assertion(&xml).unwrap();
    let debug = format!("{token:?}");
    assert!(debug.contains("29189846"), "{debug}");
    assert!(
        !debug.contains("<"),
        "the assertion XML is not in Debug: {debug}"
    );
    assert!(!debug.contains("SignatureValue"), "{debug}");
}
