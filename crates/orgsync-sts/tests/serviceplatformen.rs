//! The legacy Serviceplatformen contract (v5): every body on the wire validates against the
//! official v5 schemas (xmllint), and a v5 read of a simulated municipality equals its
//! Organisation 6 read.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use orgsync_model::ids::UnitId;
use orgsync_sts::client::StsClient;
use orgsync_sts::error::StsError;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::ClientOptions;
use orgsync_sts::transport::{SoapCall, Transport, unsigned_envelope};
use orgsync_sts::wire::{Dialect, Operation, SOAP11_NS, Service};
use orgsync_sts::xml::{Body, read_body};
use orgsync_sts_sim::Dialect as SimDialect;
use orgsync_sts_sim::generate::{Size, expected_read};
use orgsync_sts_sim::server::SimOptions;

const V5: Dialect = Dialect::Serviceplatformen5;

/// The seven v5 services and the folder of their `<Object>ServiceMsg.xsd`.
const SERVICES: [Service; 7] = [
    Service::Adresse,
    Service::Bruger,
    Service::Organisation,
    Service::OrganisationEnhed,
    Service::OrganisationFunktion,
    Service::OrganisationSystem,
    Service::Person,
];

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/v5")
}

/// A driver schema importing every service's request/response wrappers (the copied schemas
/// stay unchanged).
fn driver(dir: &Path) -> PathBuf {
    let mut xsd = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:orgsync:test:v5" elementFormDefault="qualified">
"#,
    );
    for service in SERVICES {
        let name = service_name(service);
        let file = schemas().join(name).join(format!("{name}ServiceMsg.xsd"));
        assert!(file.exists(), "{} is missing", file.display());
        xsd.push_str(&format!(
            "  <xsd:import namespace=\"{}\" schemaLocation=\"{}\"/>\n",
            V5.wrapper_namespace(service).unwrap(),
            file.display()
        ));
    }
    xsd.push_str("</xsd:schema>\n");
    let path = dir.join("driver.xsd");
    std::fs::write(&path, xsd).unwrap();
    path
}

fn service_name(service: Service) -> &'static str {
    service.name()
}

/// Runs xmllint on the files; panics (never skips) when xmllint is missing.
fn xmllint(schema: &Path, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema)
        .args(files)
        .output()
        .unwrap_or_else(|e| {
            panic!("xmllint is required for the XSD tests (Debian package libxml2-utils): {e}")
        });
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The first element of the SOAP Body: for v5 the `XxxResponse` wrapper.
fn body_element(envelope: &[u8]) -> String {
    match read_body(envelope).unwrap() {
        Body::Payload { xml, .. } => xml.to_owned(),
        Body::Fault(fault) => panic!("unexpected fault {fault:?}"),
    }
}

fn v5_options(sim: &orgsync_sts_sim::server::Simulator) -> ClientOptions {
    ClientOptions {
        dialect: V5,
        ..fast_options(sim)
    }
}

fn both() -> SimOptions {
    SimOptions {
        dialects: vec![SimDialect::Organisation6, SimDialect::Serviceplatformen5],
        ..SimOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v5_body_on_the_wire_validates_against_the_v5_schemas() {
    let sim = start(
        municipality(Size::Xs, 11),
        SimOptions {
            dialects: vec![SimDialect::Serviceplatformen5],
            ..SimOptions::default()
        },
    )
    .await;
    // With the units' contact data: v5 reads the Adresse roles, but has no Virksomhed service,
    // so P-number and CVR stay empty (and cost no call).
    let options = orgsync_sts::options::ClientOptions {
        unit_contact: true,
        ..v5_options(&sim)
    };
    let recording = Recording::new(&options);
    let client =
        StsClient::with_transport(cvr(), &options, SystemLimits::new(0.0), recording.clone());
    let read = client.read_snapshot().await.unwrap();
    assert_eq!(read.snapshot.partial, None);
    assert!(!read.snapshot.units.is_empty() && !read.snapshot.users.is_empty());
    assert!(
        read.snapshot
            .units
            .iter()
            .any(|u| u.contact.postal_address.is_some())
    );
    assert!(
        read.snapshot
            .units
            .iter()
            .all(|u| u.contact.p_number.is_none() && u.contact.cvr.is_none())
    );
    let unit = read
        .snapshot
        .units
        .iter()
        .find(|u| u.parent_uuid.is_some())
        .unwrap()
        .uuid;
    client.read_unit(unit).await.unwrap();
    client
        .read_unit(UnitId(uuid::Uuid::new_v4()))
        .await
        .unwrap();

    // Operations the client does not use, and an error answer, straight through the transport.
    let extra = |service: Service, operation: Operation, input: String| {
        let wrapper = format!("w:{}", operation.request_wrapper());
        SoapCall {
            cvr: cvr(),
            service,
            operation,
            dialect: V5,
            url: sim.base_url().join(&V5.path(service)).unwrap(),
            action: V5.action(service, operation),
            payload: format!(
                "<{wrapper} xmlns:w=\"{}\"><a:AuthorityContext xmlns:a=\"http://serviceplatformen.dk/xml/schemas/AuthorityContext/1/\"><a:MunicipalityCVR>{}</a:MunicipalityCVR></a:AuthorityContext>{input}</{wrapper}>",
                V5.wrapper_namespace(service).unwrap(),
                cvr()
            ),
            transaction_id: uuid::Uuid::new_v4(),
        }
    };
    let sd = "xmlns:sd=\"urn:oio:sagdok:3.0.0\"";
    let user = read.snapshot.users[0].uuid;
    let calls = [
        extra(
            Service::Bruger,
            Operation::Laes,
            format!(
                "<b:LaesInput xmlns:b=\"{}\" {sd}><sd:UUIDIdentifikator>{user}</sd:UUIDIdentifikator></b:LaesInput>",
                V5.namespace(Service::Bruger)
            ),
        ),
        extra(
            Service::OrganisationSystem,
            Operation::FremsoegObjekthierarki,
            format!(
                "<o:FremsoegObjekthierarkiInput xmlns:o=\"{}\" {sd}><sd:FoersteResultatReference>0</sd:FoersteResultatReference><sd:MaksimalAntalKvantitet>900</sd:MaksimalAntalKvantitet></o:FremsoegObjekthierarkiInput>",
                V5.namespace(Service::OrganisationSystem)
            ),
        ),
    ];
    let mut log = recording.log.lock().unwrap().clone();
    for call in calls {
        let response = recording.inner.send(&call).await.unwrap();
        log.push((call, response.status, response.body));
    }

    // SOAP 1.1 both ways.
    let (first, _, first_response) = &log[0];
    assert!(unsigned_envelope(first).contains(&format!("xmlns:s=\"{SOAP11_NS}\"")));
    assert!(String::from_utf8_lossy(first_response).contains(SOAP11_NS));
    // No Virksomhed service in v5: the Organisation is found within the AuthorityContext.
    assert!(log.iter().all(|(c, _, _)| c.service != Service::Virksomhed));

    let dir = tempfile::tempdir().unwrap();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = Vec::new();
    for (call, status, body) in &log {
        assert_eq!(
            *status,
            200,
            "{} {}",
            call.service.name(),
            call.operation.action_name()
        );
        assert!(
            call.url
                .path()
                .ends_with(&format!("/{}/5", call.service.name())),
            "{}",
            call.url
        );
        let response = body_element(body);
        let code = response
            .split("StatusKode>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap_or("?")
            .to_owned();
        assert!(
            call.payload
                .starts_with(&format!("<w:{}", call.operation.request_wrapper())),
            "{}",
            call.payload
        );
        assert!(
            response.contains(call.operation.response_wrapper()),
            "{response}"
        );
        for (direction, xml) in [("request", call.payload.clone()), ("response", response)] {
            let key = format!(
                "{}-{}-{direction}-{code}",
                call.service.segment(),
                call.operation.action_name()
            );
            let n = groups.entry(key.clone()).or_default();
            *n += 1;
            if *n <= 2 {
                let path = dir.path().join(format!("{key}-{n}.xml"));
                std::fs::write(&path, xml).unwrap();
                files.push(path);
            }
        }
    }
    let keys: Vec<&String> = groups.keys().collect();
    for must in [
        "organisationsystem-fremsoegobjekthierarki-request-20",
        "organisationsystem-fremsoegobjekthierarki-response-20",
        "organisationsystem-fremsoegobjekthierarki-response-40",
        "organisation-soeg-request-20",
        "organisation-soeg-response-20",
        "bruger-soeg-request-20",
        "bruger-soeg-response-20",
        "bruger-list-request-20",
        "bruger-list-response-20",
        "bruger-laes-response-20",
        "organisationenhed-list-request-20",
        "organisationenhed-list-response-20",
        "organisationenhed-list-response-44",
        "organisationfunktion-soeg-request-20",
        "organisationfunktion-soeg-response-20",
        "organisationfunktion-soeg-response-44",
        "organisationfunktion-list-request-20",
        "organisationfunktion-list-response-20",
        "person-list-request-20",
        "person-list-response-20",
        "adresse-list-request-20",
        "adresse-list-response-20",
    ] {
        assert!(
            keys.iter().any(|k| k.as_str() == must),
            "no sample of {must}; have {keys:?}"
        );
    }
    let schema = driver(dir.path());
    let (ok, report) = xmllint(&schema, &files);
    assert!(ok, "xmllint refused some bodies:\n{report}");
    assert_eq!(
        report.matches(" validates").count(),
        files.len(),
        "{report}"
    );

    // The check is not vacuous: an Organisation 6 input in the wrapper, a CVR of 7 digits and
    // a wrapper with the AuthorityContext after the input are each refused.
    let list = format!(
        "<b:ListInput xmlns:b=\"{}\" {sd}><sd:UUIDIdentifikator>{user}</sd:UUIDIdentifikator></b:ListInput>",
        V5.namespace(Service::Bruger)
    );
    let authority = format!(
        "<a:AuthorityContext xmlns:a=\"http://serviceplatformen.dk/xml/schemas/AuthorityContext/1/\"><a:MunicipalityCVR>{}</a:MunicipalityCVR></a:AuthorityContext>",
        cvr()
    );
    let wrapper = V5.wrapper_namespace(Service::Bruger).unwrap();
    let bad = [
        format!(
            "<w:ListRequest xmlns:w=\"{wrapper}\">{authority}{}</w:ListRequest>",
            list.replace(&V5.namespace(Service::Bruger), &Service::Bruger.namespace())
        ),
        format!(
            "<w:ListRequest xmlns:w=\"{wrapper}\">{}{list}</w:ListRequest>",
            authority.replace(&format!(">{}<", cvr()), ">2918984<")
        ),
        format!("<w:ListRequest xmlns:w=\"{wrapper}\">{list}{authority}</w:ListRequest>"),
    ];
    for (i, xml) in bad.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.xml"));
        std::fs::write(&path, xml).unwrap();
        assert!(!xmllint(&schema, &[path]).0, "accepted: {xml}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v5_and_v6_reads_of_one_municipality_are_equal() {
    let truth = municipality(Size::M, 7);
    let sim = start(truth.clone(), both()).await;
    let v6 = client(&sim).read_snapshot().await.unwrap();
    let v5_client = StsClient::new(cvr(), &v5_options(&sim), SystemLimits::new(0.0)).unwrap();
    let v5 = v5_client.read_snapshot().await.unwrap();
    let by_operation = sim.stats().by_operation;

    assert_eq!(v5.snapshot.partial, None);
    assert!(v5.snapshot.units.len() > 100 && v5.snapshot.users.len() > 1000);
    assert_eq!(normalised(v5.snapshot.clone()), normalised(v6.snapshot));
    assert_eq!(
        normalised(v5.snapshot),
        normalised(expected_read(&truth, today()))
    );
    let describe = |issues: &[orgsync_sts::issues::ReadIssue]| {
        let mut all: Vec<String> = issues
            .iter()
            .map(|i| {
                format!(
                    "{:?} {} {:?} {}",
                    i.code, i.object_kind, i.object, i.element
                )
            })
            .collect();
        all.sort();
        all
    };
    let (a, b) = (describe(&v5.issues), describe(&v6.issues));
    let only_v5: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
    let only_v6: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
    assert!(
        only_v5.is_empty() && only_v6.is_empty() && a.len() == b.len(),
        "v5 only: {only_v5:#?}\nv6 only: {only_v6:#?}"
    );
    // v5 finds the Organisation with one search within its AuthorityContext: the one
    // Virksomhed search was v6's, and each read searched Organisation once.
    assert_eq!(by_operation.get("virksomhed/soeg"), Some(&1));
    assert_eq!(by_operation.get("organisation/soeg"), Some(&2));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_the_simulator_does_not_serve_is_not_found() {
    let sim = start(municipality(Size::Xs, 2), SimOptions::default()).await;
    let v5_client = StsClient::new(cvr(), &v5_options(&sim), SystemLimits::new(0.0)).unwrap();
    let error = v5_client.read_snapshot().await.unwrap_err();
    assert!(matches!(error, StsError::NotFound { .. }), "{error:?}");
    assert!(
        error.to_string().contains("/organisation/Organisation/5"),
        "{error}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authority_context_decides_the_municipality_in_v5() {
    // Two municipalities: the AuthorityContext's CVR picks the data, and the simulator's
    // Organisation search finds only that municipality's Organisation.
    let other = orgsync_model::ids::Cvr::parse("11111111").unwrap();
    let sim = orgsync_sts_sim::server::Simulator::start(
        vec![
            municipality(Size::Xs, 4),
            orgsync_sts_sim::generate::generate(&other, Size::Xs, 5, today()),
        ],
        both(),
    )
    .await
    .unwrap();
    let options = v5_options(&sim);
    let mine = StsClient::new(cvr(), &options, SystemLimits::new(0.0)).unwrap();
    let theirs = StsClient::new(other.clone(), &options, SystemLimits::new(0.0)).unwrap();
    let (mine, theirs) = tokio::join!(mine.read_snapshot(), theirs.read_snapshot());
    let (mine, theirs) = (mine.unwrap().snapshot, theirs.unwrap().snapshot);
    assert_eq!(mine.cvr, cvr());
    assert_eq!(theirs.cvr, other);
    assert_eq!(
        normalised(mine),
        normalised(expected_read(&municipality(Size::Xs, 4), today()))
    );
    assert!(theirs.units.iter().all(|u| {
        sim.world(&other)
            .unwrap()
            .snapshot()
            .units
            .iter()
            .any(|x| x.uuid == u.uuid)
    }));
    sim.shutdown().await;
}
