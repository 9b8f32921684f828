//! Names on the wire (docs/sts-protocol.md §2, §9): services, operations, namespaces, SOAP actions and well-known class UUIDs, for Organisation 6 and for the legacy Serviceplatformen contract (v5), selected by [`Dialect`].

use uuid::Uuid;

use crate::signed::SoapVersion;

/// SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The sagdok namespace: every generic element (UUIDIdentifikator, Virkning, relations, StandardRetur, paging).
pub const SAGDOK_NS: &str = "urn:oio:sagdok:3.0.0";
/// `orgfaelles`: Gyldighed and GyldighedStatusKode.
pub const ORGFAELLES_NS: &str = "http://stoettesystemerne.dk/organisation/6/";
/// `sts`: CVR-NummerTekst, AdresseTekst, NavnTekst of Virksomhed.
pub const STS_NS: &str = "urn:oio:sts:6";
/// The KOMBIT request header namespace.
pub const REQUEST_HEADER_NS: &str = "http://kombit.dk/xml/schemas/RequestHeader/1/";
/// WS-Addressing.
pub const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
/// SOAP 1.1 envelope namespace (the legacy Serviceplatformen profile).
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// WS-Security 1.0 (`wsse`, `o`).
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security 1.1 (`TokenType` attribute of a SecurityTokenReference).
pub const WSSE11_NS: &str = "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd";
/// WS-Security utility (`wsu`, `u`): `Id`, `Timestamp`.
pub const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
/// XML-DSig.
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// WS-Trust 1.3.
pub const WST_NS: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
/// WS-Policy 2004/09 (`AppliesTo`).
pub const WSP_NS: &str = "http://schemas.xmlsoap.org/ws/2004/09/policy";
/// SAML 2.0 assertions.
pub const SAML2_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
/// WS-Federation authorization claims (the CVR claim).
pub const AUTH_NS: &str = "http://docs.oasis-open.org/wsfed/authorization/200706";
/// The Liberty ID-WSF SOAP binding framework header (signed in the legacy profile).
pub const LIBERTY_SB_NS: &str = "urn:liberty:sb:2006-08";
/// The Liberty profile attribute namespace.
pub const LIBERTY_PROFILE_NS: &str = "urn:liberty:sb:profile";

/// WS-Trust `Issue` action of the token request.
pub const WST_ISSUE_ACTION: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue";
/// WS-Trust request type `Issue`.
pub const WST_ISSUE: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue";
/// Token type: SAML 2.0.
pub const SAML20_TOKEN_TYPE: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV2.0";
/// Key type: holder-of-key with a public key.
pub const PUBLIC_KEY_TYPE: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/PublicKey";
/// The claims dialect of the CVR claim.
pub const AUTH_CLAIMS_DIALECT: &str =
    "http://docs.oasis-open.org/wsfed/authorization/200706/authclaims";
/// The SAML attribute carrying the municipality's CVR.
pub const CVR_CLAIM: &str = "dk:gov:saml:attribute:CvrNumberIdentifier";
/// BinarySecurityToken value type: X.509 v3.
pub const X509V3_VALUE_TYPE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
/// BinarySecurityToken encoding: base64.
pub const BASE64_ENCODING: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";
/// KeyIdentifier value type: a SAML assertion ID.
pub const SAMLID_VALUE_TYPE: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLID";
/// Exclusive canonicalization, no comments.
pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
/// RSA with SHA-256.
pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
/// SHA-256 digest.
pub const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
/// The enveloped-signature transform.
pub const ENVELOPED_SIGNATURE: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
/// The WS-Security STR-Transform (dereferences a SecurityTokenReference).
pub const STR_TRANSFORM: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#STR-Transform";
/// The anonymous WS-Addressing endpoint.
pub const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

/// The Organisation 6 services this client calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// `organisationsystem/6/`: FremsoegObjekthierarki.
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
    /// Every service, for tables and tests.
    pub const ALL: [Service; 8] = [
        Service::OrganisationSystem,
        Service::Organisation,
        Service::OrganisationEnhed,
        Service::OrganisationFunktion,
        Service::Bruger,
        Service::Person,
        Service::Adresse,
        Service::Virksomhed,
    ];

    /// The lower-case segment used in the URL path and the payload namespace.
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

    /// The object type's name as the v5 contract spells it in paths and namespaces
    /// (`OrganisationEnhed`).
    pub fn name(self) -> &'static str {
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

    /// The segment of the SOAP action, which differs from the path for OrganisationSystem
    /// (`organisationssystem`, double "s").
    pub fn action_segment(self) -> &'static str {
        match self {
            Service::OrganisationSystem => "organisationssystem",
            other => other.segment(),
        }
    }

    /// Path below the base URL, with the trailing slash the real services use.
    pub fn path(self) -> String {
        format!("{}/6/", self.segment())
    }

    /// The payload namespace, `http://stoettesystemerne.dk/organisation/<svc>/6/`.
    pub fn namespace(self) -> String {
        format!(
            "http://stoettesystemerne.dk/organisation/{}/6/",
            self.segment()
        )
    }

    /// The SOAP action of an operation on this service.
    pub fn action(self, operation: Operation) -> String {
        format!(
            "http://kombit.dk/sts/organisation/{}/{}",
            self.action_segment(),
            operation.action_name()
        )
    }
}

/// Which contract the Organisation services speak. Everything that differs between the two
/// is here, as data; request bodies, response parsing and the client use one code path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// Organisation 6 on Støttesystemerne: SOAP 1.2, `<svc>/6/`, payloads in
    /// `http://stoettesystemerne.dk/organisation/<svc>/6/`, KOMBIT SOAP actions; the
    /// municipality comes from the token alone.
    #[default]
    Organisation6,
    /// The legacy Serviceplatformen contract (SF1500 v5, schemas 1.1.STS-3): SOAP 1.1,
    /// `<Svc>/5`, payloads in `urn:oio:sts:organisation:<svc>:1.1.3.0`, each wrapped in an
    /// `XxxRequest`/`XxxResponse` of `http://serviceplatformen.dk/xml/wsdl/soap11/Organisation/<Svc>/5/`
    /// whose `AuthorityContext/MunicipalityCVR` names the municipality. It has no Virksomhed
    /// service.
    Serviceplatformen5,
}

impl Dialect {
    /// SOAP 1.2 or 1.1.
    pub fn soap_version(self) -> SoapVersion {
        match self {
            Dialect::Organisation6 => SoapVersion::Soap12,
            Dialect::Serviceplatformen5 => SoapVersion::Soap11,
        }
    }

    /// Whether the contract has this service (v5 has no Virksomhed).
    pub fn offers(self, service: Service) -> bool {
        !(self == Dialect::Serviceplatformen5 && service == Service::Virksomhed)
    }

    /// Path of a service below the base URL: `organisationenhed/6/` or `OrganisationEnhed/5`.
    pub fn path(self, service: Service) -> String {
        match self {
            Dialect::Organisation6 => service.path(),
            Dialect::Serviceplatformen5 => format!("{}/5", service.name()),
        }
    }

    /// The namespace of a service's payloads (`SoegInput`, `ListOutput`, the objects).
    pub fn namespace(self, service: Service) -> String {
        match self {
            Dialect::Organisation6 => service.namespace(),
            Dialect::Serviceplatformen5 => {
                format!("urn:oio:sts:organisation:{}:1.1.3.0", service.segment())
            }
        }
    }

    /// `orgfaelles`: Gyldighed and GyldighedStatusKode.
    pub fn orgfaelles_namespace(self) -> &'static str {
        match self {
            Dialect::Organisation6 => ORGFAELLES_NS,
            Dialect::Serviceplatformen5 => "urn:oio:sts:organisation:1.1.3.0",
        }
    }

    /// `sts`: CVR-NummerTekst, AdresseTekst, NavnTekst.
    pub fn sts_namespace(self) -> &'static str {
        match self {
            Dialect::Organisation6 => STS_NS,
            Dialect::Serviceplatformen5 => "urn:oio:sts:1.1.3.0",
        }
    }

    /// The namespace of the v5 `XxxRequest`/`XxxResponse` wrappers; `None` for Organisation 6,
    /// whose payloads stand directly in the SOAP Body.
    pub fn wrapper_namespace(self, service: Service) -> Option<String> {
        match self {
            Dialect::Organisation6 => None,
            Dialect::Serviceplatformen5 => Some(format!(
                "http://serviceplatformen.dk/xml/wsdl/soap11/Organisation/{}/5/",
                service.name()
            )),
        }
    }

    /// The SOAP action of an operation on a service.
    pub fn action(self, service: Service, operation: Operation) -> String {
        match self.wrapper_namespace(service) {
            None => service.action(operation),
            Some(base) => format!("{base}{}", operation.action_name()),
        }
    }
}

/// The read operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `soeg`: search, returns UUIDs.
    Soeg,
    /// `list`: read many by UUID.
    List,
    /// `laes`: read one by UUID.
    Laes,
    /// `fremsoegobjekthierarki`: the whole unit tree, in pages.
    FremsoegObjekthierarki,
}

impl Operation {
    /// The last segment of the SOAP action.
    pub fn action_name(self) -> &'static str {
        match self {
            Operation::Soeg => "soeg",
            Operation::List => "list",
            Operation::Laes => "laes",
            Operation::FremsoegObjekthierarki => "fremsoegobjekthierarki",
        }
    }

    /// The local name of the request payload element.
    pub fn input_element(self) -> &'static str {
        match self {
            Operation::Soeg => "SoegInput",
            Operation::List => "ListInput",
            Operation::Laes => "LaesInput",
            Operation::FremsoegObjekthierarki => "FremsoegObjekthierarkiInput",
        }
    }

    /// The local name of the v5 request wrapper (`SoegRequest`; note the lower-case "o" of
    /// `FremsoegobjekthierarkiRequest`).
    pub fn request_wrapper(self) -> &'static str {
        match self {
            Operation::Soeg => "SoegRequest",
            Operation::List => "ListRequest",
            Operation::Laes => "LaesRequest",
            Operation::FremsoegObjekthierarki => "FremsoegobjekthierarkiRequest",
        }
    }

    /// The local name of the v5 response wrapper.
    pub fn response_wrapper(self) -> &'static str {
        match self {
            Operation::Soeg => "SoegResponse",
            Operation::List => "ListResponse",
            Operation::Laes => "LaesResponse",
            Operation::FremsoegObjekthierarki => "FremsoegobjekthierarkiResponse",
        }
    }

    /// The local name of the response payload element.
    pub fn output_element(self) -> &'static str {
        match self {
            Operation::Soeg => "SoegOutput",
            Operation::List => "ListOutput",
            Operation::Laes => "LaesOutput",
            Operation::FremsoegObjekthierarki => "FremsoegObjekthierarkiOutput",
        }
    }
}

const fn uuid(text: &str) -> Uuid {
    match Uuid::try_parse(text) {
        Ok(id) => id,
        Err(_) => panic!("a well-known UUID constant is malformed"),
    }
}

/// Funktionstype Enhedsrolle ("Arbejder i"): a position.
pub const FUNCTION_TYPE_POSITION: Uuid = uuid("02e61900-33e0-407f-a2a7-22f70221f003");
/// Funktionstype Lederrolle: a manager position.
pub const FUNCTION_TYPE_MANAGER: Uuid = uuid("46c73630-f7ad-4000-9624-c06131cde671");
/// Bruger address role: e-mail.
pub const ADDRESS_ROLE_EMAIL: Uuid = uuid("5d13e891-162a-456b-abf2-fd9b864df96d");
/// Bruger address role: mobile phone ("Telefon").
pub const ADDRESS_ROLE_MOBILE: Uuid = uuid("5ef6be2d-59f4-4652-a680-585929924ba9");
/// Bruger address role: landline.
pub const ADDRESS_ROLE_LANDLINE: Uuid = uuid("47c05422-5379-4c27-9ddf-e02b52b3d961");
/// Bruger address role: location.
pub const ADDRESS_ROLE_LOCATION: Uuid = uuid("ad04ac80-e24a-45a5-9dd9-8537a916ac74");
/// OrganisationEnhed address role: postal address ("Postadresse").
pub const UNIT_ADDRESS_ROLE_POSTAL: Uuid = uuid("80b610c6-314b-485a-a014-a9a1d7070bc4");
/// OrganisationEnhed address role: e-mail.
pub const UNIT_ADDRESS_ROLE_EMAIL: Uuid = uuid("2b670843-ce42-411a-8fb5-311dfdd5caf0");
/// OrganisationEnhed address role: phone ("Telefon").
pub const UNIT_ADDRESS_ROLE_PHONE: Uuid = uuid("8dcfa714-5ed3-4000-b551-2ba520e7d8ad");
/// OrganisationEnhed address role: EAN location number.
pub const UNIT_ADDRESS_ROLE_EAN: Uuid = uuid("9ccaafe4-c4b2-4d25-942a-2ec5730d4ed8");
/// Enhedstype Afdeling.
pub const UNIT_TYPE_DEPARTMENT: Uuid = uuid("16bf18c3-ed6f-44b0-b7a1-35f94984e519");
/// Enhedstype Team.
pub const UNIT_TYPE_TEAM: Uuid = uuid("2d9710bf-e9cc-465f-8ec7-46d5f2a64412");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organisation_system_has_a_double_s_in_its_action_only() {
        let service = Service::OrganisationSystem;
        assert_eq!(service.path(), "organisationsystem/6/");
        assert_eq!(
            service.action(Operation::FremsoegObjekthierarki),
            "http://kombit.dk/sts/organisation/organisationssystem/fremsoegobjekthierarki"
        );
        assert_eq!(
            Service::Bruger.action(Operation::List),
            "http://kombit.dk/sts/organisation/bruger/list"
        );
        assert_eq!(
            Service::Person.namespace(),
            "http://stoettesystemerne.dk/organisation/person/6/"
        );
    }

    #[test]
    fn the_legacy_dialect_names_follow_the_v5_wsdls() {
        let v5 = Dialect::Serviceplatformen5;
        assert_eq!(v5.path(Service::OrganisationEnhed), "OrganisationEnhed/5");
        assert_eq!(
            v5.namespace(Service::OrganisationFunktion),
            "urn:oio:sts:organisation:organisationfunktion:1.1.3.0"
        );
        assert_eq!(
            v5.action(
                Service::OrganisationSystem,
                Operation::FremsoegObjekthierarki
            ),
            "http://serviceplatformen.dk/xml/wsdl/soap11/Organisation/OrganisationSystem/5/fremsoegobjekthierarki"
        );
        assert_eq!(
            v5.action(Service::Bruger, Operation::List),
            "http://serviceplatformen.dk/xml/wsdl/soap11/Organisation/Bruger/5/list"
        );
        assert!(!v5.offers(Service::Virksomhed));
        assert_eq!(v5.soap_version(), SoapVersion::Soap11);
        let v6 = Dialect::Organisation6;
        assert_eq!(v6.path(Service::Bruger), Service::Bruger.path());
        assert_eq!(
            v6.action(Service::Bruger, Operation::Soeg),
            Service::Bruger.action(Operation::Soeg)
        );
        assert_eq!(v6.wrapper_namespace(Service::Bruger), None);
    }
}
