//! The parser applies the bitemporal rules, reports bad data as issues naming object and element, and never panics.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions may unwrap: a panic is the failure message

use chrono::{TimeZone, Utc};
use orgsync_sts::client::inspect_response;
use orgsync_sts::error::StsError;
use orgsync_sts::issues::ReadIssueCode;
use orgsync_sts::wire::{Operation, Service};
use proptest::prelude::*;

const NOW: (i32, u32, u32) = (2026, 6, 15);

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(NOW.0, NOW.1, NOW.2, 12, 0, 0).unwrap()
}

fn envelope(payload: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body>{payload}</soap:Body></soap:Envelope>"#
    )
}

fn virkning(from: &str, to: &str) -> String {
    let bound = |v: &str| {
        if v.is_empty() {
            "<ns2:GraenseIndikator>true</ns2:GraenseIndikator>".to_owned()
        } else {
            format!("<ns2:TidsstempelDatoTid>{v}</ns2:TidsstempelDatoTid>")
        }
    };
    format!(
        "<ns2:Virkning><ns2:FraTidspunkt>{}</ns2:FraTidspunkt><ns2:TilTidspunkt>{}</ns2:TilTidspunkt></ns2:Virkning>",
        bound(from),
        bound(to)
    )
}

const UNIT: &str = "5dbc66a1-94ab-4097-aacc-3931adb52b34";
const ORG: &str = "e851ea31-98fb-4383-8831-7a4f8192bcbb";

fn unit_registration(
    time: &str,
    lifecycle: &str,
    names: &[(&str, &str, &str)],
    parent: &str,
) -> String {
    let properties: String = names
        .iter()
        .map(|(from, to, name)| {
            format!(
                "<ns5:Egenskab>{}<ns2:EnhedNavn>{name}</ns2:EnhedNavn></ns5:Egenskab>",
                virkning(from, to)
            )
        })
        .collect();
    format!(
        "<ns5:Registrering><ns2:Tidspunkt>{time}</ns2:Tidspunkt><ns2:LivscyklusKode>{lifecycle}</ns2:LivscyklusKode><ns5:AttributListe>{properties}</ns5:AttributListe><ns5:TilstandListe><ns3:Gyldighed>{}<ns3:GyldighedStatusKode>Aktiv</ns3:GyldighedStatusKode></ns3:Gyldighed></ns5:TilstandListe><ns5:RelationListe><ns2:Overordnet>{}<ns2:ReferenceID><ns2:UUIDIdentifikator>{parent}</ns2:UUIDIdentifikator></ns2:ReferenceID></ns2:Overordnet><ns2:Tilhoerer><ns2:ReferenceID><ns2:UUIDIdentifikator>{ORG}</ns2:UUIDIdentifikator></ns2:ReferenceID></ns2:Tilhoerer></ns5:RelationListe></ns5:Registrering>",
        virkning("", ""),
        virkning("", "")
    )
}

fn unit_list(id: &str, registrations: &str) -> String {
    envelope(&format!(
        r#"<ns5:ListOutput xmlns:ns2="urn:oio:sagdok:3.0.0" xmlns:ns3="http://stoettesystemerne.dk/organisation/6/" xmlns:ns5="http://stoettesystemerne.dk/organisation/organisationenhed/6/"><ns2:StandardRetur><ns2:StatusKode>20</ns2:StatusKode><ns2:FejlbeskedTekst>OK</ns2:FejlbeskedTekst></ns2:StandardRetur><ns5:FiltreretOejebliksbillede><ns5:ObjektType><ns2:UUIDIdentifikator>{id}</ns2:UUIDIdentifikator></ns5:ObjektType>{registrations}</ns5:FiltreretOejebliksbillede></ns5:ListOutput>"#
    ))
}

fn inspect(body: &str) -> Result<orgsync_sts::client::Inspection, StsError> {
    inspect_response(
        Service::OrganisationEnhed,
        Operation::List,
        200,
        body.as_bytes(),
        now(),
    )
}

#[test]
fn the_latest_registration_and_the_entry_valid_now_count() {
    let old = unit_registration(
        "2020-01-01T00:00:00.000+01:00",
        "Importeret",
        &[("", "", "Gammelt navn")],
        UNIT,
    );
    let current = unit_registration(
        "2024-06-06T11:57:42.000+02:00",
        "Importeret",
        &[
            (
                "2019-01-01T00:00:00.000+01:00",
                "2026-01-01T00:00:00.000+01:00",
                "Udløbet navn",
            ),
            (
                "2026-01-01T00:00:00.000+01:00",
                "2026-09-01T00:00:00.000+02:00",
                "Borgerservice",
            ),
            ("2026-09-01T00:00:00.000+02:00", "", "Fremtidigt navn"),
        ],
        "a1b2c3d4-0000-4000-8000-000000000001",
    );
    let body = unit_list(UNIT, &format!("{current}{old}"));
    let found = inspect(&body).unwrap();
    assert_eq!(found.found, 1);
    assert!(found.issues.is_empty(), "{:?}", found.issues);
}

#[test]
fn a_passivated_or_deleted_object_is_absent() {
    for code in ["Passiveret", "Slettet"] {
        let body = unit_list(
            UNIT,
            &unit_registration(
                "2024-06-06T11:57:42.000+02:00",
                code,
                &[("", "", "X")],
                UNIT,
            ),
        );
        assert_eq!(inspect(&body).unwrap().found, 0, "{code}");
    }
}

#[test]
fn bad_values_become_issues_naming_the_object_and_the_element() {
    let registration = unit_registration(
        "2024-06-06T11:57:42.000+02:00",
        "Importeret",
        &[("not a date", "", "X")],
        "not-a-uuid",
    );
    let found = inspect(&unit_list(UNIT, &registration)).unwrap();
    assert_eq!(found.found, 1);
    let elements: Vec<(&ReadIssueCode, &str)> = found
        .issues
        .iter()
        .map(|i| (&i.code, i.element.as_str()))
        .collect();
    assert!(
        elements.contains(&(
            &ReadIssueCode::Malformed,
            "AttributListe/Egenskab/Virkning/FraTidspunkt/TidsstempelDatoTid"
        )),
        "{elements:?}"
    );
    assert!(
        elements.contains(&(&ReadIssueCode::Missing, "AttributListe/Egenskab/EnhedNavn")),
        "{elements:?}"
    );
    assert!(
        elements.contains(&(
            &ReadIssueCode::Malformed,
            "RelationListe/Overordnet/ReferenceID/UUIDIdentifikator"
        )),
        "{elements:?}"
    );
    assert!(
        found
            .issues
            .iter()
            .all(|i| i.object.map(|o| o.to_string()) == Some(UNIT.to_owned()))
    );

    let found = inspect(&unit_list("nope", "")).unwrap();
    assert_eq!(found.found, 0);
    assert_eq!(found.issues[0].element, "ObjektType/UUIDIdentifikator");
}

#[test]
fn a_urn_reference_is_read_and_reported_as_unusable() {
    let registration = unit_registration("2024-06-06T11:57:42.000+02:00", "Importeret", &[("", "", "X")], UNIT)
        .replace(&format!("<ns2:Overordnet>{}<ns2:ReferenceID><ns2:UUIDIdentifikator>{UNIT}</ns2:UUIDIdentifikator>", virkning("", "")), &format!("<ns2:Overordnet>{}<ns2:ReferenceID><ns2:URNIdentifikator>urn:x:y</ns2:URNIdentifikator>", virkning("", "")));
    let found = inspect(&unit_list(UNIT, &registration)).unwrap();
    assert_eq!(found.found, 1);
    assert_eq!(found.issues[0].code, ReadIssueCode::Ignored);
}

#[test]
fn status_codes_mean_data_empty_or_error() {
    let with = |code: &str| {
        envelope(&format!(
            r#"<b:SoegOutput xmlns:b="http://stoettesystemerne.dk/organisation/bruger/6/" xmlns:s="urn:oio:sagdok:3.0.0"><s:StandardRetur><s:StatusKode>{code}</s:StatusKode><s:FejlbeskedTekst>tekst</s:FejlbeskedTekst></s:StandardRetur></b:SoegOutput>"#
        ))
    };
    let soeg = |body: &str| {
        inspect_response(
            Service::Bruger,
            Operation::Soeg,
            200,
            body.as_bytes(),
            now(),
        )
    };
    assert_eq!(soeg(&with("44")).unwrap().found, 0);
    assert!(
        matches!(soeg(&with("49")), Err(StsError::Status { code: 49, ref message, .. }) if message == "tekst")
    );
    assert!(matches!(soeg(&with("x")), Err(StsError::Malformed { .. })));
    let wrong_namespace = with("20").replace("organisation/bruger/6/", "organisation/person/6/");
    let error = soeg(&wrong_namespace).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("expected {http://stoettesystemerne.dk/organisation/bruger/6/}SoegOutput"),
        "{error}"
    );
    let missing = with("20").replace("<s:StandardRetur><s:StatusKode>20</s:StatusKode><s:FejlbeskedTekst>tekst</s:FejlbeskedTekst></s:StandardRetur>", "");
    assert!(
        soeg(&missing)
            .unwrap_err()
            .to_string()
            .contains("StandardRetur")
    );
}

#[test]
fn cpr_numbers_are_never_read() {
    let body = envelope(
        r#"<p:ListOutput xmlns:p="http://stoettesystemerne.dk/organisation/person/6/" xmlns:s="urn:oio:sagdok:3.0.0" xmlns:t="urn:oio:sts:6"><s:StandardRetur><s:StatusKode>20</s:StatusKode></s:StandardRetur><p:FiltreretOejebliksbillede><p:ObjektType><s:UUIDIdentifikator>6b1f0c3a-2d4e-4f5a-8b9c-0d1e2f3a4b5c</s:UUIDIdentifikator></p:ObjektType><p:Registrering><p:AttributListe><p:Egenskab><t:CPR-NummerTekst>0101801234</t:CPR-NummerTekst><p:NavnTekst>Hanne Jensen</p:NavnTekst></p:Egenskab></p:AttributListe></p:Registrering></p:FiltreretOejebliksbillede></p:ListOutput>"#,
    );
    let found = inspect_response(
        Service::Person,
        Operation::List,
        200,
        body.as_bytes(),
        now(),
    )
    .unwrap();
    assert_eq!(found.found, 1);
    assert!(!format!("{found:?}").contains("0101801234"));
}

fn valid_body() -> String {
    unit_list(
        UNIT,
        &unit_registration(
            "2024-06-06T11:57:42.000+02:00",
            "Importeret",
            &[(
                "2020-01-01T00:00:00.000+01:00",
                "",
                "Børneområdet Æblehaven",
            )],
            ORG,
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_of_a_valid_response_never_panic_the_parser(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>(), 0usize..40), 1..6),
        service in prop::sample::select(vec![Service::OrganisationEnhed, Service::Bruger, Service::OrganisationFunktion, Service::Person, Service::Adresse, Service::OrganisationSystem]),
    ) {
        let mut bytes = valid_body().into_bytes();
        for (at, kind, byte, len) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => { bytes.truncate(i); }
                2 => { let end = (i + len).min(bytes.len()); bytes.drain(i..end); }
                _ => { let chunk: Vec<u8> = bytes[i..(i + len).min(bytes.len())].to_vec(); bytes.splice(i..i, chunk); }
            }
        }
        let operation = if service == Service::OrganisationSystem { Operation::FremsoegObjekthierarki } else { Operation::List };
        let _ = inspect_response(service, operation, 200, &bytes, now());
        let _ = inspect_response(service, Operation::Soeg, 500, &bytes, now());
    }
}
