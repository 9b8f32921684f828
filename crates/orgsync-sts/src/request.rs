//! Request payloads, element order exactly as the v6 and v5 XSDs say (validated in tests with xmllint); the dialect gives the namespaces and, for v5, the `XxxRequest` wrapper.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::wire::{Dialect, Operation, SAGDOK_NS, Service};
use crate::xml::XmlWriter;

/// The v5 `AuthorityContext` namespace (`MunicipalityCVR`).
pub(crate) const AUTHORITY_CONTEXT_NS: &str =
    "http://serviceplatformen.dk/xml/schemas/AuthorityContext/1/";

/// The SOAP Body content of a call: the input element itself (Organisation 6), or for v5 the
/// `XxxRequest` wrapper with `AuthorityContext/MunicipalityCVR` followed by the input.
pub(crate) fn body(
    dialect: Dialect,
    service: Service,
    operation: Operation,
    cvr: &str,
    input: String,
) -> String {
    let Some(wrapper_ns) = dialect.wrapper_namespace(service) else {
        return input;
    };
    let wrapper = format!("w:{}", operation.request_wrapper());
    let mut w = XmlWriter::new();
    w.start(&wrapper, &[("xmlns:w", wrapper_ns.as_str())]);
    w.start("ac:AuthorityContext", &[("xmlns:ac", AUTHORITY_CONTEXT_NS)]);
    w.leaf("ac:MunicipalityCVR", cvr);
    w.end("ac:AuthorityContext");
    w.raw(&input);
    w.end(&wrapper);
    w.finish()
}

/// A search: paging plus the filters the XSD allows, in XSD order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Search {
    /// Virksomhed only: `sts:CVR-NummerTekst`.
    pub cvr: Option<String>,
    /// `Gyldighed/GyldighedStatusKode` filter (`Aktiv`).
    pub validity: Option<&'static str>,
    /// Relation filters as `(element, uuid)`, already in XSD order for the service.
    pub relations: Vec<(&'static str, Uuid)>,
    /// `sd:SoegVirkning` from this time to the open end (finds future entries too).
    pub from: Option<DateTime<Utc>>,
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn reference(w: &mut XmlWriter, element: &str, id: Uuid) {
    w.start(element, &[]);
    w.start("sd:ReferenceID", &[]);
    w.leaf("sd:UUIDIdentifikator", &id.to_string());
    w.end("sd:ReferenceID");
    w.end(element);
}

/// `SoegInput` of `service`.
pub(crate) fn soeg(
    dialect: Dialect,
    service: Service,
    offset: u64,
    limit: u32,
    search: &Search,
) -> String {
    let ns = dialect.namespace(service);
    let mut w = XmlWriter::new();
    w.start(
        "o:SoegInput",
        &[
            ("xmlns:o", &ns),
            ("xmlns:sd", SAGDOK_NS),
            ("xmlns:of", dialect.orgfaelles_namespace()),
            ("xmlns:sts", dialect.sts_namespace()),
        ],
    );
    w.leaf("sd:FoersteResultatReference", &offset.to_string());
    w.leaf("sd:MaksimalAntalKvantitet", &limit.to_string());
    if let Some(from) = search.from {
        w.start("sd:SoegVirkning", &[]);
        w.start("sd:FraTidspunkt", &[])
            .leaf("sd:TidsstempelDatoTid", &timestamp(from))
            .end("sd:FraTidspunkt");
        w.start("sd:TilTidspunkt", &[])
            .leaf("sd:GraenseIndikator", "true")
            .end("sd:TilTidspunkt");
        w.end("sd:SoegVirkning");
    }
    match &search.cvr {
        Some(cvr) => {
            w.start("o:AttributListe", &[]);
            w.start("o:Egenskab", &[])
                .leaf("sts:CVR-NummerTekst", cvr)
                .end("o:Egenskab");
            w.end("o:AttributListe");
        }
        None => {
            w.empty("o:AttributListe");
        }
    }
    match search.validity {
        Some(status) => {
            w.start("o:TilstandListe", &[]);
            w.start("of:Gyldighed", &[])
                .leaf("of:GyldighedStatusKode", status)
                .end("of:Gyldighed");
            w.end("o:TilstandListe");
        }
        None => {
            w.empty("o:TilstandListe");
        }
    }
    if search.relations.is_empty() {
        w.empty("o:RelationListe");
    } else {
        w.start("o:RelationListe", &[]);
        for (element, id) in &search.relations {
            reference(&mut w, &format!("sd:{element}"), *id);
        }
        w.end("o:RelationListe");
    }
    w.end("o:SoegInput");
    w.finish()
}

/// `ListInput` of `service`; with `from`, entries valid from then to the open end are included.
pub(crate) fn list(
    dialect: Dialect,
    service: Service,
    ids: &[Uuid],
    from: Option<DateTime<Utc>>,
) -> String {
    let ns = dialect.namespace(service);
    let mut w = XmlWriter::new();
    w.start("o:ListInput", &[("xmlns:o", &ns), ("xmlns:sd", SAGDOK_NS)]);
    for id in ids {
        w.leaf("sd:UUIDIdentifikator", &id.to_string());
    }
    if let Some(from) = from {
        w.start("sd:VirkningFraFilter", &[])
            .leaf("sd:TidsstempelDatoTid", &timestamp(from))
            .end("sd:VirkningFraFilter");
        w.start("sd:VirkningTilFilter", &[])
            .leaf("sd:GraenseIndikator", "true")
            .end("sd:VirkningTilFilter");
    }
    w.end("o:ListInput");
    w.finish()
}

/// `FremsoegObjekthierarkiInput`: one page of the unit tree.
pub(crate) fn hierarchy(dialect: Dialect, offset: u64, limit: u32) -> String {
    let ns = dialect.namespace(Service::OrganisationSystem);
    let mut w = XmlWriter::new();
    w.start(
        "o:FremsoegObjekthierarkiInput",
        &[("xmlns:o", &ns), ("xmlns:sd", SAGDOK_NS)],
    );
    w.leaf("sd:FoersteResultatReference", &offset.to_string());
    w.leaf("sd:MaksimalAntalKvantitet", &limit.to_string());
    w.end("o:FremsoegObjekthierarkiInput");
    w.finish()
}
