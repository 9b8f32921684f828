//! Our signatures checked by tools that share no code with us: `xmlsec1 --verify` (libxmlsec1), `xmllint --exc-c14n` (libxml2) and `openssl`; and KOMBIT's real exttest token response.
//!
//! Fails when `xmlsec1` (Debian `xmlsec1`), `xmllint` (`libxml2-utils`) or `openssl` is missing.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::signed::*;
use orgsync_model::ids::Cvr;
use orgsync_sts::c14n;
use orgsync_sts::signed::{SignedOptions, SignedSession, SoapVersion};
use orgsync_sts::token::{self, SamlToken, TokenOptions};
use orgsync_sts::transport::SoapCall;
use orgsync_sts::wire::{Dialect, Operation, Service};
use orgsync_sts_sim::security::SimSecurity;
use url::Url;
use uuid::Uuid;

const WSA: &str = "http://www.w3.org/2005/08/addressing";
const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";
const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const KOMBIT_RESPONSE: &str = "tests/fixtures/kombit/exttest-token-response.xml";

fn run(command: &mut Command) -> (bool, String) {
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?} (install xmlsec1, libxml2-utils, openssl): {e}")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The message signature: `wsse:Security/ds:Signature` (not the assertion's).
const MESSAGE_SIGNATURE: &str = "/*[local-name()='Envelope']/*[local-name()='Header']/*[local-name()='Security']/*[local-name()='Signature']";

/// `xmlsec1 --verify` of the Signature at `xpath`, with every ID attribute of the WS-Security profile registered.
fn xmlsec1_verify_at(document: &Path, certificate_pem: &Path, xpath: &str) -> (bool, String) {
    let mut command = Command::new("xmlsec1");
    command.arg("--verify").arg("--node-xpath").arg(xpath);
    for (ns, name) in [
        (WSA, "Action"),
        (WSA, "MessageID"),
        (WSA, "To"),
        (WSA, "ReplyTo"),
        (WSU, "Timestamp"),
        (WSSE, "BinarySecurityToken"),
        (WSSE, "SecurityTokenReference"),
        (SOAP12, "Body"),
        (SOAP11, "Body"),
        ("urn:liberty:sb:2006-08", "Framework"),
    ] {
        command.arg("--id-attr:Id").arg(format!("{ns}:{name}"));
    }
    command
        .arg("--id-attr:ID")
        .arg(format!("{SAML}:Assertion"))
        .arg("--pubkey-cert-pem")
        .arg(certificate_pem)
        .arg(document);
    run(&mut command)
}

fn xmlsec1_verify(document: &Path, certificate_pem: &Path) -> (bool, String) {
    xmlsec1_verify_at(document, certificate_pem, MESSAGE_SIGNATURE)
}

fn identity_files(dir: &Path) -> std::path::PathBuf {
    let pem = dir.join("client.pem");
    std::fs::write(&pem, &pki().client.certificate_pem).unwrap();
    pem
}

fn offline_session(options: TokenOptions) -> SignedSession {
    SignedSession::new(identity(), &[], options).unwrap()
}

fn dummy_token_options() -> TokenOptions {
    TokenOptions::new(
        Url::parse("https://127.0.0.1:1/sts").unwrap(),
        Url::parse("https://127.0.0.1:1/rest").unwrap(),
        "http://stoettesystemerne.dk/service/organisation/3",
    )
}

fn call() -> SoapCall {
    SoapCall {
        cvr: Cvr::parse("29189846").unwrap(),
        service: Service::OrganisationSystem,
        operation: Operation::FremsoegObjekthierarki,
        dialect: Dialect::Organisation6,
        url: Url::parse("https://organisation.eksterntest-stoettesystemerne.dk/organisation/organisationsystem/6/").unwrap(),
        action: Service::OrganisationSystem.action(Operation::FremsoegObjekthierarki),
        payload: "<FremsoegObjekthierarkiInput xmlns=\"http://stoettesystemerne.dk/organisation/organisationsystem/6/\"><FoersteResultatReference xmlns=\"urn:oio:sagdok:3.0.0\">0</FoersteResultatReference><MaksimalAntalKvantitet xmlns=\"urn:oio:sagdok:3.0.0\">500</MaksimalAntalKvantitet></FremsoegObjekthierarkiInput>".to_owned(),
        transaction_id: Uuid::new_v4(),
    }
}

/// A token issued by the simulator's STS code (no server needed).
fn simulated_token() -> SamlToken {
    let security = SimSecurity::new(pki(), true);
    let xml = orgsync_sts_sim::security::assertion(
        &security,
        &pki().sts,
        "29189846",
        "http://stoettesystemerne.dk/service/organisation/3",
        &pki().client.certificate,
        chrono::Utc::now(),
    );
    SamlToken::from_assertion(&xml).unwrap()
}

/// libxml2's exclusive c14n of a self-contained element (its text as a document).
fn xmllint_exc_c14n(dir: &Path, name: &str, element: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, element).unwrap();
    let output = Command::new("xmllint")
        .arg("--exc-c14n")
        .arg(&file)
        .output()
        .expect("xmllint (Debian libxml2-utils) is needed");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn sha256_base64(data: &[u8]) -> String {
    let output = {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, data).unwrap();
        Command::new("openssl")
            .args(["dgst", "-sha256", "-binary"])
            .arg(&file)
            .output()
            .expect("openssl is needed")
    };
    BASE64.encode(output.stdout)
}

/// The text between `<tag` … `</tag>` (first occurrence), found by plain string search.
fn element<'a>(document: &'a str, open: &str, close: &str) -> &'a str {
    let start = document
        .find(open)
        .unwrap_or_else(|| panic!("{open} not found"));
    let end = document[start..].find(close).unwrap() + start + close.len();
    &document[start..end]
}

#[test]
fn xmlsec1_verifies_the_signed_token_request_and_refuses_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = identity_files(dir.path());
    let request = token::soap_request(
        &dummy_token_options(),
        &identity(),
        &Cvr::parse("29189846").unwrap(),
    )
    .unwrap();
    let file = dir.path().join("request.xml");
    std::fs::write(&file, &request).unwrap();
    let (ok, output) = xmlsec1_verify(&file, &certificate);
    assert!(ok, "{output}\n{request}");
    assert!(output.contains("OK"), "{output}");
    assert!(
        output.contains("SignedInfo References (ok/all): 7/7"),
        "{output}"
    );
    // docs/sts-protocol.md §5: the CVR claim, the AppliesTo and the certificate in the body.
    assert!(request.contains("<auth:Value>29189846</auth:Value>"));
    assert!(
        request.contains(
            "<wsa:Address>http://stoettesystemerne.dk/service/organisation/3</wsa:Address>"
        )
    );
    // The check is not vacuous: another CVR in the signed body fails.
    std::fs::write(
        &file,
        request.replace("<auth:Value>29189846<", "<auth:Value>11111111<"),
    )
    .unwrap();
    let (ok, output) = xmlsec1_verify(&file, &certificate);
    assert!(!ok, "{output}");
}

/// The service call: xmlsec1 has no STR-Transform, so (1) a copy whose STR reference points at
/// the assertion directly lets xmlsec1 check every digest (the assertion's included, with its own
/// c14n), and (2) the signature value is checked over libxml2's c14n of the original SignedInfo
/// with openssl.
fn check_signed_call_independently(envelope: &str, token: &SamlToken, references: usize) {
    let dir = tempfile::tempdir().unwrap();
    let certificate = identity_files(dir.path());

    // (1) Every digest, by xmlsec1.
    let reference_start = envelope.find("<Reference URI=\"#_str").unwrap();
    let reference_end = envelope[reference_start..].find("</Reference>").unwrap() + reference_start;
    let original = &envelope[reference_start..reference_end];
    let transforms = element(original, "<Transforms>", "</Transforms>");
    let redirected = original
        .replacen(&format!("#_str{}", token.id()), &format!("#{}", token.id()), 1)
        .replacen(
            transforms,
            "<Transforms><Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"></Transform></Transforms>",
            1,
        );
    let copy = envelope.replacen(original, &redirected, 1);
    let file = dir.path().join("call.xml");
    std::fs::write(&file, &copy).unwrap();
    let (ok, output) = xmlsec1_verify(&file, &certificate);
    assert!(
        output.contains(&format!(
            "SignedInfo References (ok/all): {references}/{references}"
        )),
        "xmlsec1 found a bad digest:\n{output}"
    );
    assert!(!ok, "the changed SignedInfo must not verify: {output}");

    // The STR digest is the SHA-256 of libxml2's exclusive c14n of the assertion.
    let canonical_assertion = xmllint_exc_c14n(dir.path(), "assertion.xml", token.assertion_xml());
    let digest = element(original, "<DigestValue>", "</DigestValue>")
        .trim_start_matches("<DigestValue>")
        .trim_end_matches("</DigestValue>");
    assert_eq!(sha256_base64(canonical_assertion.as_bytes()), digest);

    // (2) The signature value, over libxml2's c14n of SignedInfo, with openssl. The message's
    // Signature is the last one (the assertion's comes first).
    let message_signature = &envelope[envelope.rfind("<Signature ").unwrap()..];
    let signed_info = element(message_signature, "<SignedInfo>", "</SignedInfo>").replacen(
        "<SignedInfo>",
        "<SignedInfo xmlns=\"http://www.w3.org/2000/09/xmldsig#\">",
        1,
    );
    let canonical = xmllint_exc_c14n(dir.path(), "signed-info.xml", &signed_info);
    std::fs::write(dir.path().join("signed-info.c14n"), &canonical).unwrap();
    let value = element(message_signature, "<SignatureValue>", "</SignatureValue>")
        .trim_start_matches("<SignatureValue>")
        .trim_end_matches("</SignatureValue>");
    std::fs::write(
        dir.path().join("signature.bin"),
        BASE64.decode(value).unwrap(),
    )
    .unwrap();
    let (ok, output) = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&certificate)
        .arg("-out")
        .arg(dir.path().join("public.pem")));
    assert!(ok, "{output}");
    let (ok, output) = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.path().join("public.pem"))
        .arg("-signature")
        .arg(dir.path().join("signature.bin"))
        .arg(dir.path().join("signed-info.c14n")));
    assert!(ok && output.contains("Verified OK"), "{output}");
}

#[test]
fn the_signed_service_call_verifies_independently_of_our_code() {
    let token = simulated_token();
    let session = offline_session(dummy_token_options());
    let envelope = session
        .transport(SignedOptions::default())
        .signed_envelope(&call(), &token)
        .unwrap();
    // docs/sts-protocol.md §6: the assertion unchanged, the reference, millisecond UTC timestamps.
    assert!(envelope.contains(token.assertion_xml()));
    assert!(envelope.contains(&format!("<o:KeyIdentifier ValueType=\"http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLID\">{}</o:KeyIdentifier>", token.id())));
    let created = element(&envelope, "<u:Created>", "</u:Created>");
    assert_eq!(
        created.len(),
        "<u:Created>2025-11-22T01:00:00.000Z</u:Created>".len(),
        "{created}"
    );
    assert!(created.ends_with("Z</u:Created>"));
    assert!(envelope.contains("<h:TransactionUUID>"));
    // Body, Action, MessageID, ReplyTo, To, Timestamp and the assertion.
    check_signed_call_independently(&envelope, &token, 7);

    // The simulator's assertion signature verifies with its STS certificate in xmlsec1 too.
    let dir = tempfile::tempdir().unwrap();
    let sts = dir.path().join("sts.pem");
    std::fs::write(&sts, &pki().sts.certificate_pem).unwrap();
    let file = dir.path().join("call.xml");
    std::fs::write(&file, &envelope).unwrap();
    let (ok, output) = xmlsec1_verify_at(
        &file,
        &sts,
        "//*[local-name()='Assertion']/*[local-name()='Signature']",
    );
    assert!(ok && output.contains("OK"), "{output}");
}

#[test]
fn the_legacy_soap11_envelope_also_signs_the_liberty_framework_header() {
    let token = simulated_token();
    let session = offline_session(dummy_token_options());
    let envelope = session
        .transport(SignedOptions {
            soap_version: SoapVersion::Soap11,
            ..SignedOptions::default()
        })
        .signed_envelope(&call(), &token)
        .unwrap();
    assert!(envelope.contains(&format!("xmlns:s=\"{SOAP11}\"")));
    assert!(envelope.contains("<sbf:Framework"));
    check_signed_call_independently(&envelope, &token, 8);
}

#[test]
fn kombits_real_exttest_token_response_parses_and_its_assertion_is_embedded_unchanged() {
    let response = std::fs::read(KOMBIT_RESPONSE).unwrap();
    let token = token::parse_response(&response).unwrap();
    assert_eq!(token.id(), "_d96384ca-31d6-4c30-b904-514f5c10e8b3");
    assert_eq!(token.cvr(), "11111111");
    assert_eq!(
        token.audience(),
        "http://wsp12.oioidws-net.dk/service/service/1"
    );
    assert_eq!(
        token.not_on_or_after().to_rfc3339(),
        "2023-04-04T16:21:43.668+00:00"
    );
    // Byte for byte: the assertion is a slice of the response as received (CRLF line ends included).
    let text = String::from_utf8(response).unwrap();
    assert!(text.contains(token.assertion_xml()));
    assert!(
        token
            .assertion_xml()
            .starts_with("<Assertion ID=\"_d96384ca")
    );
    assert!(token.assertion_xml().ends_with("</Assertion>"));
    assert!(token.assertion_xml().contains("\r\n"));

    // Our exclusive c14n of KOMBIT's assertion equals libxml2's.
    let dir = tempfile::tempdir().unwrap();
    let ours = c14n::canonicalize(token.assertion_xml(), 0, None).unwrap();
    let theirs = xmllint_exc_c14n(dir.path(), "kombit-assertion.xml", token.assertion_xml());
    assert_eq!(ours, theirs);

    // Embedded in a signed call, unchanged, with the STR digest over it checked independently.
    let session = offline_session(dummy_token_options());
    let envelope = session
        .transport(SignedOptions::default())
        .signed_envelope(&call(), &token)
        .unwrap();
    assert!(envelope.contains(token.assertion_xml()));
    check_signed_call_independently(&envelope, &token, 7);
}

#[test]
fn our_c14n_matches_libxml2_on_every_signed_part_of_our_messages() {
    let dir = tempfile::tempdir().unwrap();
    let token = simulated_token();
    let envelope = offline_session(dummy_token_options())
        .transport(SignedOptions::default())
        .signed_envelope(&call(), &token)
        .unwrap();
    // The simulator's assertion (default namespaces, xsi-prefixed attribute, enveloped Signature).
    let ours = c14n::canonicalize(token.assertion_xml(), 0, None).unwrap();
    assert_eq!(
        ours,
        xmllint_exc_c14n(dir.path(), "sim-assertion.xml", token.assertion_xml())
    );
    // Body and Timestamp, made self-contained by hand for libxml2.
    for (id, open, close, namespaces) in [
        (
            "_1",
            "<s:Body",
            "</s:Body>",
            format!("xmlns:s=\"{SOAP12}\" xmlns:u=\"{WSU}\""),
        ),
        (
            "_6",
            "<u:Timestamp",
            "</u:Timestamp>",
            format!("xmlns:u=\"{WSU}\""),
        ),
        (
            "_2",
            "<a:Action",
            "</a:Action>",
            format!("xmlns:a=\"{WSA}\" xmlns:s=\"{SOAP12}\" xmlns:u=\"{WSU}\""),
        ),
    ] {
        let text = element(&envelope, open, close);
        let standalone = text.replacen(open, &format!("{open} {namespaces}"), 1);
        let at = c14n::find_by_id(&envelope, id).unwrap();
        assert_eq!(
            c14n::canonicalize(&envelope, at, None).unwrap(),
            xmllint_exc_c14n(dir.path(), "part.xml", &standalone),
            "part {id}"
        );
    }
}
