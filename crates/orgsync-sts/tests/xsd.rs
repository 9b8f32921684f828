//! Every request body the client sends and every response body the simulator returns validates against the official v6 XSDs (xmllint).

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use orgsync_model::ids::UnitId;
use orgsync_sts::client::StsClient;
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::transport::{SoapCall, Transport};
use orgsync_sts::wire::{Dialect, Operation, Service};
use orgsync_sts::xml::{Body, read_body};
use orgsync_sts_sim::generate::Size;
use orgsync_sts_sim::server::SimOptions;

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas/v6/6.0.STS-0/OrganisationSystemOperationer.xsd")
}

/// Runs xmllint on the files; panics (never skips) when xmllint is missing.
fn xmllint(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(schema())
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

fn payload_of(envelope: &[u8]) -> String {
    match read_body(envelope).unwrap() {
        Body::Payload { xml, .. } => xml.to_owned(),
        Body::Fault(fault) => panic!("unexpected fault {fault:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_on_the_wire_validates_against_the_official_schemas() {
    let sim = start(municipality(Size::Xs, 11), SimOptions::default()).await;
    // With the units' contact data, so the Adresse and Virksomhed lists it costs are checked too.
    let options = orgsync_sts::options::ClientOptions {
        unit_contact: true,
        ..fast_options(&sim)
    };
    let recording = Recording::new(&options);
    let client =
        StsClient::with_transport(cvr(), &options, SystemLimits::new(0.0), recording.clone());
    let read = client.read_snapshot().await.unwrap();
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

    // Operations the client does not use, and error answers, straight through the transport.
    let extra = |service: Service, operation: Operation, payload: String| SoapCall {
        cvr: cvr(),
        service,
        operation,
        dialect: Dialect::Organisation6,
        url: sim.base_url().join(&service.path()).unwrap(),
        action: service.action(operation),
        payload,
        transaction_id: uuid::Uuid::new_v4(),
    };
    let sd = "xmlns:sd=\"urn:oio:sagdok:3.0.0\"";
    let user = read.snapshot.users[0].uuid;
    let calls = [
        extra(
            Service::Bruger,
            Operation::Laes,
            format!(
                "<b:LaesInput xmlns:b=\"{}\" {sd}><sd:UUIDIdentifikator>{user}</sd:UUIDIdentifikator></b:LaesInput>",
                Service::Bruger.namespace()
            ),
        ),
        extra(
            Service::OrganisationEnhed,
            Operation::Laes,
            format!(
                "<b:LaesInput xmlns:b=\"{}\" {sd}><sd:UUIDIdentifikator>{unit}</sd:UUIDIdentifikator></b:LaesInput>",
                Service::OrganisationEnhed.namespace()
            ),
        ),
        extra(
            Service::OrganisationSystem,
            Operation::FremsoegObjekthierarki,
            format!(
                "<o:FremsoegObjekthierarkiInput xmlns:o=\"{}\" {sd}><sd:FoersteResultatReference>0</sd:FoersteResultatReference><sd:MaksimalAntalKvantitet>900</sd:MaksimalAntalKvantitet></o:FremsoegObjekthierarkiInput>",
                Service::OrganisationSystem.namespace()
            ),
        ),
    ];
    let mut log = recording.log.lock().unwrap().clone();
    for call in calls {
        let response = recording.inner.send(&call).await.unwrap();
        log.push((call, response.status, response.body));
    }

    // A few samples of each (service, operation, direction, StatusKode).
    let dir = tempfile::tempdir().unwrap();
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    let mut files = Vec::new();
    for (call, status, body) in &log {
        assert_eq!(
            *status,
            200,
            "{} {}",
            call.service.segment(),
            call.operation.action_name()
        );
        let response = payload_of(body);
        let code = response
            .split("StatusKode>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .unwrap_or("?")
            .to_owned();
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
        "virksomhed-soeg-request-20",
        "virksomhed-soeg-response-20",
        "organisation-soeg-response-20",
        "bruger-soeg-response-20",
        // No "bruger-soeg-response-44": the pager makes no empty-page call after a short page,
        // so the users search never asks for an empty page here; the empty-result (44) shape is
        // validated through organisationenhed-list and organisationfunktion-soeg.
        "bruger-list-request-20",
        "bruger-list-response-20",
        "bruger-laes-response-20",
        "organisationenhed-list-response-20",
        "organisationenhed-list-response-44",
        "organisationenhed-laes-response-20",
        "organisationfunktion-soeg-request-20",
        "organisationfunktion-soeg-response-44",
        "organisationfunktion-list-response-20",
        "person-list-response-20",
        "adresse-list-response-20",
        "virksomhed-list-request-20",
        "virksomhed-list-response-20",
    ] {
        assert!(
            keys.iter().any(|k| k.as_str() == must),
            "no sample of {must}; have {keys:?}"
        );
    }
    let (ok, report) = xmllint(&files);
    assert!(ok, "xmllint refused some bodies:\n{report}");
    assert_eq!(
        report.matches(" validates").count(),
        files.len(),
        "{report}"
    );

    // The check is not vacuous: a body with elements out of XSD order is refused.
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        format!("<b:ListInput xmlns:b=\"{}\" {sd}><sd:VirkningTilFilter><sd:GraenseIndikator>true</sd:GraenseIndikator></sd:VirkningTilFilter><sd:UUIDIdentifikator>{user}</sd:UUIDIdentifikator></b:ListInput>", Service::Bruger.namespace()),
    )
    .unwrap();
    assert!(!xmllint(&[bad]).0);
    sim.shutdown().await;
}
