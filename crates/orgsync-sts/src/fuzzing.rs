//! Entry points for the fuzz targets under `fuzz/` and their regression tests. Not an API: each
//! function feeds bytes through the same code a real answer from STS goes through and throws
//! the result away; a panic, a hang or a blown allocation is the finding.

use chrono::{DateTime, TimeZone, Utc};

use crate::error::CallSite;
use crate::response::{HasStatus, HierarchyOutput, ListOutput, ObjectXml, SoegOutput};
use crate::transport::SoapResponse;
use crate::wire::{Dialect, Operation, Service};

/// A fixed "now", so that a finding replays the same way on any day.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// The first byte of a [`soap_response`] input for an answer to `operation` of `service`: bit 0
/// the contract (v5), bit 1 an HTTP error status, bit 2 unit contact data, bits 3-5 the service,
/// bits 6-7 the operation.
pub fn soap_selector(
    dialect: Dialect,
    http_ok: bool,
    contact: bool,
    service: Service,
    operation: Operation,
) -> u8 {
    let service = Service::ALL
        .iter()
        .position(|s| *s == service)
        .unwrap_or_default() as u8;
    let operation = match operation {
        Operation::FremsoegObjekthierarki => 0,
        Operation::Soeg => 1,
        Operation::List => 2,
        Operation::Laes => 3,
    };
    u8::from(dialect == Dialect::Serviceplatformen5)
        | u8::from(!http_ok) << 1
        | u8::from(contact) << 2
        | service << 3
        | operation << 6
}

/// One SOAP answer of STS Organisation (v6 or v5) as the client reads it: the envelope or fault,
/// the payload for the operation, `StandardRetur`, and every object through the bitemporal
/// reader. The first input byte picks the contract, the service and operation, the HTTP status
/// and whether unit contact data is read ([`soap_selector`]); the rest is the body. Returns
/// how many UUIDs or objects the answer gave (0 for StatusKode 44, "nothing found"), `None`
/// when it was refused (an error or a fault), so that tests can tell a seed that decodes from one that only reaches an
/// error path.
pub fn soap_response(data: &[u8]) -> Option<usize> {
    let (&selector, body) = data.split_first()?;
    let dialect = if selector & 1 == 0 {
        Dialect::Organisation6
    } else {
        Dialect::Serviceplatformen5
    };
    let status = if selector & 2 == 0 { 200 } else { 500 };
    let contact = selector & 4 != 0;
    let service = Service::ALL[usize::from((selector >> 3) & 7) % Service::ALL.len()];
    let response = SoapResponse::new(status, body.to_vec());
    let objects = match selector >> 6 {
        0 => {
            let site = site(
                Service::OrganisationSystem,
                Operation::FremsoegObjekthierarki,
            );
            interpret::<HierarchyOutput>(dialect, &site, &response).map(|o| {
                o.and_then(|o| o.units)
                    .map(|u| u.objects)
                    .unwrap_or_default()
            })
        }
        1 => {
            let site = site(service, Operation::Soeg);
            let found = interpret::<SoegOutput>(dialect, &site, &response)?;
            return Some(
                found
                    .into_iter()
                    .flat_map(|f| f.ids)
                    .flat_map(|l| l.ids)
                    .filter(|id| uuid::Uuid::parse_str(id.trim()).is_ok())
                    .count(),
            );
        }
        _ => {
            let operation = if selector >> 6 == 2 {
                Operation::List
            } else {
                Operation::Laes
            };
            interpret::<ListOutput>(dialect, &site(service, operation), &response)
                .map(|o| o.map(|o| o.objects).unwrap_or_default())
        }
    };
    let objects = objects?;
    let read_as = if selector >> 6 == 0 {
        Service::OrganisationSystem
    } else {
        service
    };
    for object in &objects {
        read_object(read_as, object, contact);
    }
    Some(objects.len())
}

fn site(service: Service, operation: Operation) -> CallSite {
    CallSite { service, operation }
}

fn interpret<T: serde::de::DeserializeOwned + HasStatus>(
    dialect: Dialect,
    site: &CallSite,
    response: &SoapResponse,
) -> Option<Option<T>> {
    crate::client::interpret::<T>(dialect, site, response).ok()
}

fn read_object(service: Service, object: &ObjectXml, contact: bool) {
    use crate::bitemporal as b;
    let now = now();
    let mut issues = Vec::new();
    match service {
        Service::OrganisationSystem | Service::OrganisationEnhed => {
            let _ = b::unit(object, now, contact, &mut issues);
        }
        Service::Organisation => {
            let _ = b::object_uuid(object, "Organisation", &mut issues);
        }
        Service::OrganisationFunktion => {
            let _ = b::function(object, now, &mut issues);
        }
        Service::Bruger => {
            let _ = b::user(object, now, &mut issues);
        }
        Service::Person => {
            let _ = b::named_value(object, "Person", now, &mut issues);
        }
        Service::Adresse => {
            let _ = b::named_value(object, "Adresse", now, &mut issues);
        }
        Service::Virksomhed => {
            let _ = b::company(object, now, &mut issues);
        }
    }
    for issue in &issues {
        let _ = issue.to_string();
    }
}

/// A security token service's answer, both profiles: the WS-Trust SOAP response and the REST
/// JSON one, and the assertion inside either.
pub fn token_response(data: &[u8]) {
    let _ = crate::token::parse_response(data);
    let _ = crate::token::parse_rest_response(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::token::SamlToken::from_assertion(text);
    }
}
