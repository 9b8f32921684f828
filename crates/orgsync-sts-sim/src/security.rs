//! The simulated STS (SOAP WS-Trust and REST JSON) issuing holder-of-key SAML assertions, and the WS-Security checks of the Organisation services under `--require-signatures`.
//!
//! Assertions follow KOMBIT's real exttest response (docs/sts-protocol.md §5): issuer, enveloped
//! RSA-SHA256 signature with the STS certificate, holder-of-key subject confirmation with the
//! caller's certificate, audience = the entity ID asked for, the `CvrNumberIdentifier`
//! attribute, 8 hours. The STS refuses a CVR the simulator does not serve with
//! `ServiceAgreementNotFound`, like a municipality without a service agreement.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use crate::dsig::{self, DSIG_NS, ENVELOPED, EXC_C14N, Element, RSA_SHA256, SHA256};
use crate::pki::{Signer, SimPki};
use crate::xml::XmlWriter;

pub(crate) const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const WST_NS: &str = "http://docs.oasis-open.org/ws-sx/ws-trust/200512";
const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const WSP_NS: &str = "http://schemas.xmlsoap.org/ws/2004/09/policy";
const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
const CVR_CLAIM: &str = "dk:gov:saml:attribute:CvrNumberIdentifier";
const SAML_TOKEN_TYPE: &str =
    "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV2.0";

/// The simulator's security: mutual TLS, the STS, and (optionally) signature checks on every service call.
#[derive(Clone, Debug)]
pub struct SimSecurity {
    /// The PKI (CA, STS, TLS and client certificates).
    pub pki: Arc<SimPki>,
    /// Refuse Organisation calls without a valid WS-Security header (`--require-signatures`).
    pub require_signatures: bool,
    /// The audience the Organisation services accept.
    pub entity_id: String,
    /// The SAML Issuer of assertions.
    pub issuer: String,
    /// Token lifetime (8 hours, like KOMBIT's).
    pub token_lifetime: Duration,
    /// Clock skew tolerated on timestamps and token validity.
    pub clock_skew: Duration,
    /// The assertions issued and those revoked (shared by the clones of these options).
    pub ledger: Arc<TokenLedger>,
}

/// The IDs of assertions the STS issued, and of those revoked since.
#[derive(Debug, Default)]
pub struct TokenLedger {
    issued: std::sync::Mutex<Vec<String>>,
    revoked: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl TokenLedger {
    fn issued(&self, id: &str) {
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_owned());
    }

    /// Revokes every assertion issued so far: the services refuse them as
    /// `wsse:InvalidSecurityToken` from now on. Returns how many were revoked.
    pub fn revoke_all(&self) -> usize {
        let issued = std::mem::take(&mut *self.issued.lock().unwrap_or_else(|e| e.into_inner()));
        let n = issued.len();
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(issued);
        n
    }

    fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }
}

impl SimSecurity {
    /// Defaults: entity ID of Organisation 6, 8 h tokens, 5 min skew.
    pub fn new(pki: Arc<SimPki>, require_signatures: bool) -> SimSecurity {
        SimSecurity {
            pki,
            require_signatures,
            entity_id: "http://stoettesystemerne.dk/service/organisation/3".to_owned(),
            issuer: "https://saml.sts-sim.orgsync.invalid/runtime".to_owned(),
            token_lifetime: Duration::from_secs(8 * 3600),
            clock_skew: Duration::from_secs(5 * 60),
            ledger: Arc::new(TokenLedger::default()),
        }
    }

    fn skew(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.clock_skew).unwrap_or_default()
    }
}

/// A refusal: SOAP fault code, subcode and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: &'static str,
    pub subcode: &'static str,
    pub reason: String,
}

fn refuse(subcode: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code: "Sender",
        subcode,
        reason: reason.into(),
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Builds and signs an assertion for `cvr`, audience `entity_id`, holder-of-key `holder` (DER), signed by `signer`.
pub fn assertion(
    security: &SimSecurity,
    signer: &Signer,
    cvr: &str,
    entity_id: &str,
    holder: &[u8],
    now: DateTime<Utc>,
) -> String {
    let id = format!("_{}", Uuid::new_v4());
    security.ledger.issued(&id);
    let until = now + chrono::Duration::from_std(security.token_lifetime).unwrap_or_default();
    let (now_text, until_text) = (time(now), time(until));
    let (now_text, until_text) = (now_text.as_str(), until_text.as_str());
    let subject = x509_parser::parse_x509_certificate(holder)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default();
    let mut w = XmlWriter::new();
    w.start(
        "Assertion",
        &[
            ("ID", id.as_str()),
            ("IssueInstant", now_text),
            ("Version", "2.0"),
            ("xmlns", SAML_NS),
        ],
    );
    w.start(
        "Issuer",
        &[("Format", "urn:oasis:names:tc:SAML:2.0:nameid-format:entity")],
    );
    w.raw(&quick_xml::escape::escape(&security.issuer));
    w.end("Issuer");
    w.raw("<!--signature-->");
    w.open("Subject");
    w.start(
        "NameID",
        &[(
            "Format",
            "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
        )],
    );
    w.raw(&quick_xml::escape::escape(&subject));
    w.end("NameID");
    w.start(
        "SubjectConfirmation",
        &[("Method", "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key")],
    );
    w.start(
        "SubjectConfirmationData",
        &[
            ("a:type", "KeyInfoConfirmationDataType"),
            ("NotBefore", now_text),
            ("NotOnOrAfter", until_text),
            ("Recipient", entity_id),
            ("xmlns:a", "http://www.w3.org/2001/XMLSchema-instance"),
        ],
    );
    w.start("KeyInfo", &[("xmlns", DSIG_NS)]);
    w.open("X509Data");
    w.leaf("X509Certificate", &BASE64.encode(holder));
    w.end("X509Data");
    w.end("KeyInfo");
    w.end("SubjectConfirmationData");
    w.end("SubjectConfirmation");
    w.end("Subject");
    w.start(
        "Conditions",
        &[("NotBefore", now_text), ("NotOnOrAfter", until_text)],
    );
    w.open("AudienceRestriction");
    w.leaf("Audience", entity_id);
    w.end("AudienceRestriction");
    w.end("Conditions");
    w.open("AttributeStatement");
    for (name, value) in [
        (CVR_CLAIM, cvr),
        ("dk:gov:saml:attribute:AssuranceLevel", "3"),
        ("dk:gov:saml:attribute:SpecVer", "DK-SAML-2.0"),
        ("dk:gov:saml:attribute:KombitSpecVer", "1.0"),
    ] {
        w.start(
            "Attribute",
            &[
                ("Name", name),
                (
                    "NameFormat",
                    "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
                ),
            ],
        );
        w.leaf("AttributeValue", value);
        w.end("Attribute");
    }
    w.end("AttributeStatement");
    w.start("AuthnStatement", &[("AuthnInstant", now_text)]);
    w.open("AuthnContext");
    w.leaf(
        "AuthnContextClassRef",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:X509",
    );
    w.end("AuthnContext");
    w.end("AuthnStatement");
    w.end("Assertion");
    sign_enveloped(&w.finish(), &id, signer)
}

/// Signs an element whose text holds `<!--signature-->` where the Signature goes (enveloped).
fn sign_enveloped(unsigned: &str, id: &str, signer: &Signer) -> String {
    let without = unsigned.replacen("<!--signature-->", "", 1);
    let digest = dsig::parse(&without)
        .and_then(|root| dsig::canonical(&root, &root, None))
        .map(|c| dsig::sha256_base64(c.as_bytes()))
        .unwrap_or_default();
    let mut s = XmlWriter::new();
    s.start("Signature", &[("xmlns", DSIG_NS)]);
    s.open("SignedInfo");
    s.start("CanonicalizationMethod", &[("Algorithm", EXC_C14N)]);
    s.end("CanonicalizationMethod");
    s.start("SignatureMethod", &[("Algorithm", RSA_SHA256)]);
    s.end("SignatureMethod");
    s.start("Reference", &[("URI", format!("#{id}").as_str())]);
    s.open("Transforms");
    s.start("Transform", &[("Algorithm", ENVELOPED)]);
    s.end("Transform");
    s.start("Transform", &[("Algorithm", EXC_C14N)]);
    s.end("Transform");
    s.end("Transforms");
    s.start("DigestMethod", &[("Algorithm", SHA256)]);
    s.end("DigestMethod");
    s.leaf("DigestValue", &digest);
    s.end("Reference");
    s.end("SignedInfo");
    s.leaf("SignatureValue", "SIGNATURE-VALUE");
    s.open("KeyInfo");
    s.open("X509Data");
    s.leaf("X509Certificate", &signer.certificate_base64());
    s.end("X509Data");
    s.end("KeyInfo");
    s.end("Signature");
    let with = unsigned.replacen("<!--signature-->", &s.finish(), 1);
    let value = dsig::parse(&with)
        .ok()
        .and_then(|root| {
            let signed_info = root.find("SignedInfo")?.clone();
            dsig::canonical(&root, &signed_info, None).ok()
        })
        .map(|c| BASE64.encode(signer.sign(c.as_bytes())))
        .unwrap_or_default();
    with.replacen("SIGNATURE-VALUE", &value, 1)
}

/// What a token request asked for.
#[derive(Debug)]
pub(crate) struct TokenRequest {
    pub cvr: String,
    pub entity_id: String,
    pub holder: Vec<u8>,
}

fn certificate_ok(security: &SimSecurity, der: &[u8], now: DateTime<Utc>) -> Result<(), Refusal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|_| refuse("InvalidSecurity", "the certificate cannot be parsed"))?;
    let (_, ca) = x509_parser::parse_x509_certificate(&security.pki.ca)
        .map_err(|_| refuse("InvalidSecurity", "the simulator CA is broken"))?;
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(refuse(
            "FailedAuthentication",
            "the certificate is not issued by a CA the STS trusts (no tilslutningsaftale for this system)",
        ));
    }
    let t = now.timestamp();
    if t < cert.validity().not_before.timestamp() || t > cert.validity().not_after.timestamp() {
        return Err(refuse(
            "FailedAuthentication",
            "the certificate is expired or not yet valid",
        ));
    }
    Ok(())
}

fn timestamp_ok(
    security: &SimSecurity,
    header: &Element,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Refusal> {
    let security_header = header
        .elements()
        .find(|e| e.local == "Security")
        .ok_or_else(|| refuse("InvalidSecurity", "no wsse:Security header"))?;
    let stamp = security_header
        .child("Timestamp")
        .ok_or_else(|| refuse("InvalidSecurity", "no wsu:Timestamp in the Security header"))?;
    let created = stamp.child("Created").and_then(|c| parse_time(&c.text()));
    let expires = stamp.child("Expires").and_then(|c| parse_time(&c.text()));
    let (Some(created), Some(expires)) = (created, expires) else {
        return Err(refuse(
            "InvalidSecurity",
            "the Timestamp has no Created/Expires",
        ));
    };
    if created > now + security.skew() {
        return Err(refuse(
            "MessageExpired",
            format!("the Timestamp is created in the future ({created})"),
        ));
    }
    if expires <= now - security.skew() {
        return Err(refuse(
            "MessageExpired",
            format!("the Timestamp expired at {expires}; check the client's clock"),
        ));
    }
    Ok(vec![stamp.attribute("Id").unwrap_or_default().to_owned()])
}

fn id_of<'a>(header: &'a Element, local: &str) -> Option<&'a str> {
    header
        .elements()
        .find(|e| e.local == local)
        .and_then(|e| e.attribute("Id"))
}

/// Checks a signed WS-Trust request and reads what it asks for.
pub(crate) fn token_request(
    security: &SimSecurity,
    body: &str,
    now: DateTime<Utc>,
) -> Result<TokenRequest, Refusal> {
    let root = dsig::parse(body).map_err(|e| refuse("InvalidRequest", e))?;
    let header = root
        .child("Header")
        .ok_or_else(|| refuse("InvalidSecurity", "no SOAP Header"))?;
    let soap_body = root
        .child("Body")
        .ok_or_else(|| refuse("InvalidRequest", "no SOAP Body"))?;
    let rst = soap_body
        .elements()
        .find(|e| e.local == "RequestSecurityToken")
        .ok_or_else(|| refuse("InvalidRequest", "no RequestSecurityToken"))?;
    let mut required = timestamp_ok(security, header, now)?;
    let security_header = header
        .elements()
        .find(|e| e.local == "Security")
        .ok_or_else(|| refuse("InvalidSecurity", "no Security"))?;
    let bst = security_header
        .child("BinarySecurityToken")
        .ok_or_else(|| refuse("InvalidSecurity", "no BinarySecurityToken"))?;
    let certificate = BASE64
        .decode(bst.text().split_whitespace().collect::<String>())
        .map_err(|_| refuse("InvalidSecurity", "the BinarySecurityToken is not base64"))?;
    certificate_ok(security, &certificate, now)?;
    let signature = security_header
        .child("Signature")
        .ok_or_else(|| refuse("InvalidSecurity", "the token request is not signed"))?;
    let referenced = dsig::verify_signature(&root, signature, &certificate)
        .map_err(|e| refuse("FailedCheck", format!("the request signature: {e}")))?;
    required.push(soap_body.attribute("Id").unwrap_or_default().to_owned());
    required.push(bst.attribute("Id").unwrap_or_default().to_owned());
    for part in ["Action", "MessageID", "To"] {
        required.push(id_of(header, part).unwrap_or_default().to_owned());
    }
    if let Some(missing) = required
        .iter()
        .find(|id| id.is_empty() || !referenced.contains(id))
    {
        return Err(refuse(
            "FailedCheck",
            format!(
                "a required part is not signed ({missing:?}): Body, Timestamp, BinarySecurityToken, Action, MessageID, To"
            ),
        ));
    }
    let request_type = rst
        .child("RequestType")
        .map(Element::text)
        .unwrap_or_default();
    if !request_type.ends_with("/Issue") {
        return Err(refuse(
            "InvalidRequest",
            format!("RequestType {request_type:?}"),
        ));
    }
    let entity_id = rst
        .child("AppliesTo")
        .and_then(|a| a.find("Address"))
        .map(Element::text)
        .ok_or_else(|| refuse("InvalidRequest", "no AppliesTo/EndpointReference/Address"))?;
    let cvr = rst
        .child("Claims")
        .and_then(|c| c.elements().find(|t| t.attribute("Uri") == Some(CVR_CLAIM)))
        .and_then(|t| t.child("Value"))
        .map(Element::text)
        .ok_or_else(|| refuse("InvalidRequest", "no CvrNumberIdentifier claim"))?;
    let holder = rst
        .child("UseKey")
        .and_then(|u| u.find("BinarySecurityToken"))
        .map(Element::text)
        .and_then(|t| BASE64.decode(t.split_whitespace().collect::<String>()).ok())
        .ok_or_else(|| refuse("InvalidRequest", "no UseKey/BinarySecurityToken"))?;
    if holder != certificate {
        return Err(refuse(
            "InvalidRequest",
            "UseKey is not the certificate that signed the request",
        ));
    }
    Ok(TokenRequest {
        cvr,
        entity_id,
        holder,
    })
}

/// Reads a REST JSON token request (the client certificate is the TLS one; `UseKey` names it).
pub(crate) fn rest_token_request(
    security: &SimSecurity,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<TokenRequest, Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| refuse("InvalidRequest", format!("not JSON: {e}")))?;
    let get = |keys: &[&str]| -> Option<serde_json::Value> {
        let object = value.as_object()?;
        keys.iter().find_map(|k| {
            object
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        })
    };
    let cvr = get(&["AnvenderKontekst"])
        .and_then(|a| {
            a.as_object().and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("Cvr"))
                    .map(|(_, v)| v.clone())
            })
        })
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| refuse("InvalidRequest", "no AnvenderKontekst.Cvr"))?;
    let entity_id = get(&["AppliesTo"])
        .and_then(|a| {
            a.get("EndpointReference")
                .and_then(|e| e.get("Address"))
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .ok_or_else(|| refuse("InvalidRequest", "no AppliesTo.EndpointReference.Address"))?;
    let holder = get(&["UseKey"])
        .and_then(|v| v.as_str().map(str::to_owned))
        .and_then(|t| BASE64.decode(t).ok())
        .ok_or_else(|| refuse("InvalidRequest", "no UseKey"))?;
    certificate_ok(security, &holder, now)?;
    Ok(TokenRequest {
        cvr,
        entity_id,
        holder,
    })
}

/// The WS-Trust response around an assertion (SOAP 1.2, like KOMBIT's).
pub(crate) fn token_response(
    security: &SimSecurity,
    assertion_xml: &str,
    assertion_id: &str,
    entity_id: &str,
    now: DateTime<Utc>,
) -> String {
    let until = now + chrono::Duration::from_std(security.token_lifetime).unwrap_or_default();
    let mut w = XmlWriter::new();
    w.raw(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.start(
        "s:Envelope",
        &[
            ("xmlns:s", SOAP12_NS),
            ("xmlns:a", WSA_NS),
            ("xmlns:u", WSU_NS),
        ],
    );
    w.open("s:Header");
    w.start("a:Action", &[("s:mustUnderstand", "1")]);
    w.raw("http://docs.oasis-open.org/ws-sx/ws-trust/200512/RSTRC/IssueFinal");
    w.end("a:Action");
    w.end("s:Header");
    w.open("s:Body");
    w.start(
        "trust:RequestSecurityTokenResponseCollection",
        &[("xmlns:trust", WST_NS)],
    );
    w.open("trust:RequestSecurityTokenResponse");
    w.open("trust:Lifetime");
    w.leaf("u:Created", &time(now));
    w.leaf("u:Expires", &time(until));
    w.end("trust:Lifetime");
    w.start("wsp:AppliesTo", &[("xmlns:wsp", WSP_NS)]);
    w.start("wsa:EndpointReference", &[("xmlns:wsa", WSA_NS)]);
    w.leaf("wsa:Address", entity_id);
    w.end("wsa:EndpointReference");
    w.end("wsp:AppliesTo");
    w.open("trust:RequestedSecurityToken");
    w.raw(assertion_xml);
    w.end("trust:RequestedSecurityToken");
    for reference in [
        "trust:RequestedAttachedReference",
        "trust:RequestedUnattachedReference",
    ] {
        w.open(reference);
        w.start(
            "o:SecurityTokenReference",
            &[
                ("xmlns:o", WSSE_NS),
                (
                    "xmlns:b",
                    "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd",
                ),
                ("b:TokenType", SAML_TOKEN_TYPE),
            ],
        );
        w.start(
            "o:KeyIdentifier",
            &[(
                "ValueType",
                "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLID",
            )],
        );
        w.raw(assertion_id);
        w.end("o:KeyIdentifier");
        w.end("o:SecurityTokenReference");
        w.end(reference);
    }
    w.leaf("trust:TokenType", SAML_TOKEN_TYPE);
    w.leaf(
        "trust:RequestType",
        "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue",
    );
    w.leaf(
        "trust:KeyType",
        "http://docs.oasis-open.org/ws-sx/ws-trust/200512/PublicKey",
    );
    w.end("trust:RequestSecurityTokenResponse");
    w.end("trust:RequestSecurityTokenResponseCollection");
    w.end("s:Body");
    w.end("s:Envelope");
    w.finish()
}

/// The CVR an Organisation call may see, after every check of `--require-signatures`.
pub(crate) fn check_call(
    security: &SimSecurity,
    body: &str,
    now: DateTime<Utc>,
) -> Result<String, Refusal> {
    let root = dsig::parse(body).map_err(|e| refuse("InvalidRequest", e))?;
    let header = root
        .child("Header")
        .ok_or_else(|| refuse("InvalidSecurity", "no SOAP Header: the call is not signed"))?;
    let soap_body = root
        .child("Body")
        .ok_or_else(|| refuse("InvalidRequest", "no SOAP Body"))?;
    let mut required = timestamp_ok(security, header, now)?;
    let security_header = header
        .elements()
        .find(|e| e.local == "Security")
        .ok_or_else(|| refuse("InvalidSecurity", "no Security header"))?;
    let assertion = security_header
        .elements()
        .find(|e| e.local == "Assertion")
        .ok_or_else(|| {
            refuse(
                "InvalidSecurity",
                "no SAML assertion in the Security header",
            )
        })?;

    // The assertion: signed by the STS, valid now, for this service.
    let assertion_signature = assertion
        .child("Signature")
        .ok_or_else(|| refuse("InvalidSecurityToken", "the assertion is not signed"))?;
    let signer = assertion_signature
        .find("X509Certificate")
        .map(Element::text)
        .and_then(|t| BASE64.decode(t.split_whitespace().collect::<String>()).ok())
        .unwrap_or_default();
    if signer != security.pki.sts.certificate {
        return Err(refuse(
            "InvalidSecurityToken",
            "the assertion is signed by a key the service does not trust (not the STS certificate)",
        ));
    }
    dsig::verify_signature(&root, assertion_signature, &signer).map_err(|e| {
        refuse(
            "InvalidSecurityToken",
            format!("the assertion's signature: {e}"),
        )
    })?;
    let conditions = assertion
        .child("Conditions")
        .ok_or_else(|| refuse("InvalidSecurityToken", "the assertion has no Conditions"))?;
    let not_before = conditions.attribute("NotBefore").and_then(parse_time);
    let not_after = conditions.attribute("NotOnOrAfter").and_then(parse_time);
    if not_before.is_none_or(|t| t > now + security.skew())
        || not_after.is_none_or(|t| t <= now - security.skew())
    {
        return Err(refuse(
            "InvalidSecurityToken",
            "the assertion is not valid now (NotBefore/NotOnOrAfter): get a new token",
        ));
    }
    if security
        .ledger
        .is_revoked(assertion.attribute("ID").unwrap_or_default())
    {
        return Err(refuse(
            "InvalidSecurityToken",
            "the assertion was revoked: get a new token",
        ));
    }
    let audience = assertion
        .find("Audience")
        .map(Element::text)
        .unwrap_or_default();
    if audience != security.entity_id {
        return Err(refuse(
            "InvalidSecurityToken",
            format!(
                "the assertion's Audience {audience:?} is not this service's entity ID {:?}",
                security.entity_id
            ),
        ));
    }
    let holder = assertion
        .find("SubjectConfirmationData")
        .and_then(|d| d.find("X509Certificate"))
        .map(Element::text)
        .and_then(|t| BASE64.decode(t.split_whitespace().collect::<String>()).ok())
        .ok_or_else(|| {
            refuse(
                "InvalidSecurityToken",
                "the assertion names no holder-of-key certificate",
            )
        })?;

    // The message: signed with the holder's key over Body, addressing, Timestamp and the token.
    let signature = security_header
        .child("Signature")
        .ok_or_else(|| refuse("InvalidSecurity", "the message is not signed"))?;
    let referenced = dsig::verify_signature(&root, signature, &holder).map_err(|e| {
        refuse(
            "FailedCheck",
            format!("the message signature (holder-of-key): {e}"),
        )
    })?;
    required.push(soap_body.attribute("Id").unwrap_or_default().to_owned());
    for part in ["Action", "MessageID", "To"] {
        required.push(id_of(header, part).unwrap_or_default().to_owned());
    }
    required.push(assertion.attribute("ID").unwrap_or_default().to_owned());
    if let Some(missing) = required
        .iter()
        .find(|id| id.is_empty() || !referenced.contains(id))
    {
        return Err(refuse(
            "FailedCheck",
            format!(
                "a required part is not signed ({missing:?}): Body, Timestamp, Action, MessageID, To and the assertion"
            ),
        ));
    }
    let cvr = assertion
        .find("AttributeStatement")
        .and_then(|s| {
            s.elements()
                .find(|a| a.attribute("Name") == Some(CVR_CLAIM))
        })
        .map(Element::text)
        .ok_or_else(|| {
            refuse(
                "InvalidSecurityToken",
                "the assertion has no CvrNumberIdentifier",
            )
        })?;
    Ok(cvr)
}

pub(crate) fn refused_body(refusal: &Refusal) -> String {
    let mut w = XmlWriter::new();
    w.raw(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.start(
        "S:Envelope",
        &[("xmlns:S", SOAP12_NS), ("xmlns:wsse", WSSE_NS)],
    );
    w.open("S:Body");
    w.open("S:Fault");
    w.open("S:Code");
    w.leaf("S:Value", &format!("S:{}", refusal.code));
    w.open("S:Subcode");
    w.leaf("S:Value", &format!("wsse:{}", refusal.subcode));
    w.end("S:Subcode");
    w.end("S:Code");
    w.open("S:Reason");
    w.start("S:Text", &[("xml:lang", "en")]);
    w.raw(&quick_xml::escape::escape(&refusal.reason));
    w.end("S:Text");
    w.end("S:Reason");
    w.end("S:Fault");
    w.end("S:Body");
    w.end("S:Envelope");
    w.finish()
}
