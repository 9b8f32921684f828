//! Wire names the simulator speaks (docs/sts-protocol.md §2, §9), written down independently of the client so that the XSD tests check both.

use uuid::Uuid;

pub(crate) const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
pub(crate) const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub(crate) const AUTHORITY_CONTEXT_NS: &str =
    "http://serviceplatformen.dk/xml/schemas/AuthorityContext/1/";
pub(crate) const SERVICEPLATFORM_FAULT_NS: &str =
    "http://serviceplatformen.dk/xml/schemas/ServiceplatformFault/1/";
pub(crate) const SAGDOK_NS: &str = "urn:oio:sagdok:3.0.0";
pub(crate) const ORGFAELLES_NS: &str = "http://stoettesystemerne.dk/organisation/6/";
pub(crate) const STS_NS: &str = "urn:oio:sts:6";
pub(crate) const REQUEST_HEADER_NS: &str = "http://kombit.dk/xml/schemas/RequestHeader/1/";

/// The services the simulator answers, by URL path segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// `organisationsystem/6/`.
    OrganisationSystem,
    /// `organisation/6/`.
    Organisation,
    /// `organisationenhed/6/`.
    OrganisationEnhed,
    /// `organisationfunktion/6/`.
    OrganisationFunktion,
    /// `bruger/6/`.
    Bruger,
    /// `person/6/`.
    Person,
    /// `adresse/6/`.
    Adresse,
    /// `virksomhed/6/`.
    Virksomhed,
}

impl Service {
    pub(crate) fn from_segment(segment: &str) -> Option<Service> {
        Some(match segment {
            "organisationsystem" => Service::OrganisationSystem,
            "organisation" => Service::Organisation,
            "organisationenhed" => Service::OrganisationEnhed,
            "organisationfunktion" => Service::OrganisationFunktion,
            "bruger" => Service::Bruger,
            "person" => Service::Person,
            "adresse" => Service::Adresse,
            "virksomhed" => Service::Virksomhed,
            _ => return None,
        })
    }

    /// A v5 path segment (`OrganisationEnhed`); v5 has no Virksomhed service.
    pub(crate) fn from_name(name: &str) -> Option<Service> {
        Some(match name {
            "OrganisationSystem" => Service::OrganisationSystem,
            "Organisation" => Service::Organisation,
            "OrganisationEnhed" => Service::OrganisationEnhed,
            "OrganisationFunktion" => Service::OrganisationFunktion,
            "Bruger" => Service::Bruger,
            "Person" => Service::Person,
            "Adresse" => Service::Adresse,
            _ => return None,
        })
    }

    /// The v5 name of the service.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Service::OrganisationSystem => "OrganisationSystem",
            Service::Organisation => "Organisation",
            Service::OrganisationEnhed => "OrganisationEnhed",
            Service::OrganisationFunktion => "OrganisationFunktion",
            Service::Bruger => "Bruger",
            Service::Person => "Person",
            Service::Adresse => "Adresse",
            Service::Virksomhed => "Virksomhed",
        }
    }

    /// The URL path and namespace segment.
    pub fn segment(self) -> &'static str {
        match self {
            Service::OrganisationSystem => "organisationsystem",
            Service::Organisation => "organisation",
            Service::OrganisationEnhed => "organisationenhed",
            Service::OrganisationFunktion => "organisationfunktion",
            Service::Bruger => "bruger",
            Service::Person => "person",
            Service::Adresse => "adresse",
            Service::Virksomhed => "virksomhed",
        }
    }

    pub(crate) fn namespace(self) -> String {
        format!(
            "http://stoettesystemerne.dk/organisation/{}/6/",
            self.segment()
        )
    }

    /// The SOAP action prefix; OrganisationSystem's action says `organisationssystem`.
    pub(crate) fn action(self, operation: &str) -> String {
        let segment = match self {
            Service::OrganisationSystem => "organisationssystem",
            other => other.segment(),
        };
        format!("http://kombit.dk/sts/organisation/{segment}/{operation}")
    }
}

/// Which contract the simulator speaks on a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// Organisation 6: SOAP 1.2 at `/organisation/<svc>/6/`, payloads in
    /// `http://stoettesystemerne.dk/organisation/<svc>/6/`.
    #[default]
    Organisation6,
    /// The legacy Serviceplatformen contract (v5): SOAP 1.1 at `/organisation/<Svc>/5` (and
    /// `/service/Organisation/<Svc>/5`), payloads in `urn:oio:sts:organisation:<svc>:1.1.3.0`
    /// inside `XxxRequest`/`XxxResponse` wrappers; the caller's municipality is the request's
    /// `AuthorityContext/MunicipalityCVR`.
    Serviceplatformen5,
}

impl Dialect {
    pub(crate) fn soap_namespace(self) -> &'static str {
        match self {
            Dialect::Organisation6 => SOAP12_NS,
            Dialect::Serviceplatformen5 => SOAP11_NS,
        }
    }

    pub(crate) fn namespace(self, service: Service) -> String {
        match self {
            Dialect::Organisation6 => service.namespace(),
            Dialect::Serviceplatformen5 => {
                format!("urn:oio:sts:organisation:{}:1.1.3.0", service.segment())
            }
        }
    }

    pub(crate) fn orgfaelles_namespace(self) -> &'static str {
        match self {
            Dialect::Organisation6 => ORGFAELLES_NS,
            Dialect::Serviceplatformen5 => "urn:oio:sts:organisation:1.1.3.0",
        }
    }

    pub(crate) fn sts_namespace(self) -> &'static str {
        match self {
            Dialect::Organisation6 => STS_NS,
            Dialect::Serviceplatformen5 => "urn:oio:sts:1.1.3.0",
        }
    }

    /// The namespace of the v5 request and response wrappers.
    pub(crate) fn wrapper_namespace(self, service: Service) -> Option<String> {
        match self {
            Dialect::Organisation6 => None,
            Dialect::Serviceplatformen5 => Some(format!(
                "http://serviceplatformen.dk/xml/wsdl/soap11/Organisation/{}/5/",
                service.name()
            )),
        }
    }

    pub(crate) fn action(self, service: Service, operation: &str) -> String {
        match self.wrapper_namespace(service) {
            None => service.action(operation),
            Some(base) => format!("{base}{operation}"),
        }
    }
}

const fn uuid(text: &str) -> Uuid {
    match Uuid::try_parse(text) {
        Ok(id) => id,
        Err(_) => panic!("a well-known UUID constant is malformed"),
    }
}

pub(crate) const FUNCTION_TYPE_POSITION: Uuid = uuid("02e61900-33e0-407f-a2a7-22f70221f003");
pub(crate) const FUNCTION_TYPE_MANAGER: Uuid = uuid("46c73630-f7ad-4000-9624-c06131cde671");
pub(crate) const ADDRESS_ROLE_EMAIL: Uuid = uuid("5d13e891-162a-456b-abf2-fd9b864df96d");
pub(crate) const ADDRESS_ROLE_MOBILE: Uuid = uuid("5ef6be2d-59f4-4652-a680-585929924ba9");
pub(crate) const ADDRESS_ROLE_LANDLINE: Uuid = uuid("47c05422-5379-4c27-9ddf-e02b52b3d961");
pub(crate) const ADDRESS_ROLE_LOCATION: Uuid = uuid("ad04ac80-e24a-45a5-9dd9-8537a916ac74");
pub(crate) const ADDRESS_TYPE_USER: Uuid = uuid("71a08d28-3af7-4bb4-9964-bc2b76b93d64");
pub(crate) const ADDRESS_TYPE_UNIT: Uuid = uuid("9b33c0a0-a566-4ec0-8200-325cb1e5bb9a");
pub(crate) const UNIT_ADDRESS_ROLE_POSTAL: Uuid = uuid("80b610c6-314b-485a-a014-a9a1d7070bc4");
pub(crate) const UNIT_ADDRESS_ROLE_EMAIL: Uuid = uuid("2b670843-ce42-411a-8fb5-311dfdd5caf0");
pub(crate) const UNIT_ADDRESS_ROLE_PHONE: Uuid = uuid("8dcfa714-5ed3-4000-b551-2ba520e7d8ad");
pub(crate) const UNIT_ADDRESS_ROLE_EAN: Uuid = uuid("9ccaafe4-c4b2-4d25-942a-2ec5730d4ed8");
/// A unit address role the client does not read (the unit's web address).
pub(crate) const UNIT_ADDRESS_ROLE_URL: Uuid = uuid("a99c073d-482e-47d3-9275-13c79f453c3a");
pub(crate) const UNIT_TYPE_DEPARTMENT: Uuid = uuid("16bf18c3-ed6f-44b0-b7a1-35f94984e519");
pub(crate) const UNIT_TYPE_TEAM: Uuid = uuid("2d9710bf-e9cc-465f-8ec7-46d5f2a64412");
/// A unit type the client does not know (stands for any other Enhedstype class).
pub(crate) const UNIT_TYPE_OTHER: Uuid = uuid("9c3bd1a4-5b7e-4f0a-8e21-3d6c0b1f7a55");
