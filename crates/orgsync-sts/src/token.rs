//! STS tokens: the signed WS-Trust 1.3 issue request (docs/sts-protocol.md §5) or its REST JSON variant, the response with the SAML assertion kept byte for byte, and the cache per (entity ID, CVR).
//!
//! One token per municipality: every signed call for a CVR uses the cached assertion until its
//! `NotOnOrAfter` minus a margin; concurrent callers wait for the one issue request in flight.
//! The assertion is a bearer of the municipality's data: it is never logged, and `Debug`
//! shows its ID and expiry only.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use orgsync_model::error_class::ErrorClass;
use orgsync_model::ids::Cvr;
use quick_xml::Reader;
use quick_xml::events::Event;
use url::Url;
use uuid::Uuid;

use crate::c14n;
use crate::dsig::{self, SIGNATURE_MARKER, SignedPart};
use crate::error::FaultKind;
use crate::identity::{ClientIdentity, verify_rsa_sha256};
use crate::wire::{
    AUTH_CLAIMS_DIALECT, AUTH_NS, BASE64_ENCODING, CVR_CLAIM, PUBLIC_KEY_TYPE, SAML20_TOKEN_TYPE,
    SOAP12_NS, WSA_NS, WSP_NS, WSSE_NS, WST_ISSUE, WST_ISSUE_ACTION, WST_NS, WSU_NS,
    X509V3_VALUE_TYPE,
};
use crate::xml::{self, Body, XmlWriter};

/// How tokens are requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TokenProtocol {
    /// SOAP 1.2 WS-Trust 1.3, signed (docs/sts-protocol.md §5): the default.
    #[default]
    Soap,
    /// The REST JSON issue endpoint (`…/runtime/api/rest/wstrust/v1/issue`), mutual TLS only.
    Rest,
}

/// Where and how to get tokens.
#[derive(Clone, Debug)]
pub struct TokenOptions {
    /// SOAP or REST.
    pub protocol: TokenProtocol,
    /// The STS SOAP endpoint (`…/kombittrust/14/certificatemixed`).
    pub soap_url: Url,
    /// The STS REST endpoint (`…/rest/wstrust/v1/issue`).
    pub rest_url: Url,
    /// AppliesTo: the service's entity ID (`http://stoettesystemerne.dk/service/organisation/3`).
    pub entity_id: String,
    /// Renew a cached token this long before its `NotOnOrAfter` (default 15 min, like itk-dev).
    pub expiry_margin: Duration,
    /// Validity of the request's `wsu:Timestamp` (default 5 min).
    pub timestamp_validity: Duration,
    /// DER certificates the assertion's signature must verify with (the STS certificates of the
    /// environment). Empty = the assertion's signature is left to the service to verify.
    pub trusted_sts_certificates: Vec<Vec<u8>>,
    /// The SAML `Issuer` the environment's STS signs its assertions as. `None` = not checked
    /// (an assertion from any signer in `trusted_sts_certificates` is accepted, whatever its
    /// issuer says).
    pub issuer: Option<String>,
    /// Timeout of one token request.
    pub timeout: Duration,
    /// Added to the clock when stamping requests (tests; a host with a known skew).
    pub clock_offset: chrono::Duration,
}

impl TokenOptions {
    /// The defaults for an STS at `soap_url`/`rest_url` and an entity ID.
    pub fn new(soap_url: Url, rest_url: Url, entity_id: impl Into<String>) -> TokenOptions {
        TokenOptions {
            protocol: TokenProtocol::Soap,
            soap_url,
            rest_url,
            entity_id: entity_id.into(),
            expiry_margin: Duration::from_secs(15 * 60),
            timestamp_validity: Duration::from_secs(5 * 60),
            trusted_sts_certificates: Vec::new(),
            issuer: None,
            timeout: Duration::from_secs(60),
            clock_offset: chrono::Duration::zero(),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }
}

/// Why no token could be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The STS answered with a SOAP fault or an HTTP error with a message: it refuses this
    /// system, this CVR or this entity ID.
    #[error(
        "the STS refused a token for CVR {cvr} and entity ID {entity_id}: {code}{}: {reason}{}",
        subcode.as_ref().map(|s| format!("/{s}")).unwrap_or_default(),
        kind.hint()
    )]
    Refused {
        /// What the refusal is about (parsed once from `subcode` and `reason`).
        kind: crate::error::FaultKind,
        /// The municipality.
        cvr: String,
        /// The entity ID asked for.
        entity_id: String,
        /// Fault code (`Sender`, `Receiver`) or `HTTP <status>`.
        code: String,
        /// Fault subcode.
        subcode: Option<String>,
        /// The reason the STS gave.
        reason: String,
        /// The HTTP status.
        http_status: u16,
    },
    /// The STS could not be reached or did not answer in time. Retriable.
    #[error("the STS at {url} could not be reached: {message}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What the transport said.
        message: String,
    },
    /// The STS answered with something that is not a token response.
    #[error("the STS answer is not a token response: {0}")]
    Malformed(String),
    /// The token does not fit the request (other CVR, other audience, other key, expired, bad signature).
    #[error("the STS token cannot be used: {0}")]
    Invalid(String),
    /// The certificate or key could not be used.
    #[error("the system certificate cannot be used: {0}")]
    Identity(String),
}

impl TokenError {
    /// Whether asking again later may succeed: only when the STS was unreachable or answered
    /// with a server-side problem that is not about agreements, certificates or security.
    pub fn is_retriable(&self) -> bool {
        match self {
            TokenError::Unreachable { .. } => true,
            TokenError::Refused {
                code,
                kind,
                http_status,
                ..
            } => {
                let transient = code == "Receiver" || *http_status >= 500 || *http_status == 429;
                transient && !kind.is_about_trust()
            }
            TokenError::Malformed(_) | TokenError::Invalid(_) | TokenError::Identity(_) => false,
        }
    }

    /// The error class (see `orgsync_model::error_class`), from the variant alone.
    pub fn class(&self) -> ErrorClass {
        match self {
            TokenError::Unreachable { .. } => ErrorClass::StsUnavailable,
            TokenError::Refused { kind, .. } if kind.is_about_trust() => kind.class(),
            TokenError::Refused { .. } if self.is_retriable() => ErrorClass::StsUnavailable,
            // The STS refused without saying why in words orgsync knows: treat it as a
            // refusal of this system (a person must look), not as an outage.
            TokenError::Refused { .. } => ErrorClass::StsAuth,
            TokenError::Malformed(_) => ErrorClass::StsBadData,
            TokenError::Invalid(_) | TokenError::Identity(_) => ErrorClass::StsAuth,
        }
    }
}

/// A SAML assertion from the STS.
#[derive(Clone)]
pub struct SamlToken {
    xml: Arc<str>,
    id: String,
    cvr: String,
    audience: String,
    not_on_or_after: DateTime<Utc>,
}

impl fmt::Debug for SamlToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamlToken")
            .field("id", &self.id)
            .field("cvr", &self.cvr)
            .field("audience", &self.audience)
            .field("not_on_or_after", &self.not_on_or_after)
            .finish_non_exhaustive()
    }
}

impl SamlToken {
    /// The assertion, exactly as the STS sent it (plus namespace declarations from its
    /// surroundings only if it used prefixes declared outside itself).
    pub fn assertion_xml(&self) -> &str {
        &self.xml
    }

    /// The assertion's `ID`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `CvrNumberIdentifier`.
    pub fn cvr(&self) -> &str {
        &self.cvr
    }

    /// `Conditions/AudienceRestriction/Audience`.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// `Conditions/@NotOnOrAfter`.
    pub fn not_on_or_after(&self) -> DateTime<Utc> {
        self.not_on_or_after
    }

    /// Parses an assertion on its own (for example one from the REST endpoint, or a test's).
    pub fn from_assertion(xml: &str) -> Result<SamlToken, TokenError> {
        let fields = assertion_fields(xml)?;
        Ok(SamlToken {
            xml: Arc::from(xml),
            id: fields.id,
            cvr: fields.cvr,
            audience: fields.audience,
            not_on_or_after: fields.not_on_or_after,
        })
    }
}

#[derive(Default)]
struct AssertionFields {
    id: String,
    issuer: String,
    cvr: String,
    audience: String,
    not_on_or_after: DateTime<Utc>,
    holder_certificate: Option<String>,
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads the fields the client checks from an assertion (by local names; any prefixes).
fn assertion_fields(xml: &str) -> Result<AssertionFields, TokenError> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut fields = AssertionFields::default();
    let mut attribute_name = String::new();
    let mut not_on_or_after = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| TokenError::Malformed(format!("the assertion is not XML: {e}")))?;
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let local = String::from_utf8_lossy(tag.local_name().as_ref()).into_owned();
                for attribute in tag.attributes().flatten() {
                    let key =
                        String::from_utf8_lossy(attribute.key.local_name().as_ref()).into_owned();
                    let value = attribute
                        .unescape_value()
                        .map(|v| v.into_owned())
                        .unwrap_or_default();
                    match (local.as_str(), key.as_str()) {
                        ("Assertion", "ID") if path.is_empty() => fields.id = value,
                        ("Conditions", "NotOnOrAfter") => not_on_or_after = parse_time(&value),
                        ("Attribute", "Name") => attribute_name = value,
                        _ => {}
                    }
                }
                if matches!(event, Event::Start(_)) {
                    path.push(local);
                }
            }
            Event::Text(ref text) => {
                let value = String::from_utf8_lossy(text.as_ref()).trim().to_owned();
                let in_path = |names: &[&str]| {
                    path.iter()
                        .rev()
                        .zip(names.iter().rev())
                        .all(|(a, b)| a == b)
                        && path.len() >= names.len()
                };
                if path.len() == 2 && in_path(&["Assertion", "Issuer"]) {
                    fields.issuer = value;
                } else if in_path(&["AudienceRestriction", "Audience"]) {
                    fields.audience = value;
                } else if in_path(&["Attribute", "AttributeValue"]) && attribute_name == CVR_CLAIM {
                    fields.cvr = value;
                } else if in_path(&[
                    "SubjectConfirmationData",
                    "KeyInfo",
                    "X509Data",
                    "X509Certificate",
                ]) {
                    fields.holder_certificate = Some(value.split_whitespace().collect());
                }
            }
            Event::End(_) => {
                let left = path.pop();
                if left.as_deref() == Some("Attribute") {
                    attribute_name.clear();
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if fields.id.is_empty() {
        return Err(TokenError::Malformed("the assertion has no ID".to_owned()));
    }
    fields.not_on_or_after = not_on_or_after.ok_or_else(|| {
        TokenError::Malformed("the assertion has no Conditions/@NotOnOrAfter".to_owned())
    })?;
    Ok(fields)
}

/// Finds the assertion in a WS-Trust response (SOAP 1.2 or 1.1), keeps its bytes, and parses it.
pub fn parse_response(body: &[u8]) -> Result<SamlToken, TokenError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    match xml::read_body(body) {
        Ok(Body::Fault(fault)) => {
            return Err(TokenError::Refused {
                kind: FaultKind::parse(fault.subcode.as_deref(), &fault.reason),
                cvr: String::new(),
                entity_id: String::new(),
                code: fault.code,
                subcode: fault.subcode,
                reason: fault.reason,
                http_status: 0,
            });
        }
        Ok(Body::Payload { local_name, .. })
            if local_name != "RequestSecurityTokenResponseCollection"
                && local_name != "RequestSecurityTokenResponse" =>
        {
            return Err(TokenError::Malformed(format!(
                "the SOAP Body holds {local_name}, not a RequestSecurityTokenResponse"
            )));
        }
        Ok(Body::Payload { .. }) => {}
        Err(e) => return Err(TokenError::Malformed(e.message)),
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| TokenError::Malformed(format!("the response is not UTF-8: {e}")))?;
    let holder = c14n::find_by_local_name(text, "RequestedSecurityToken", 0)
        .ok_or_else(|| TokenError::Malformed("no RequestedSecurityToken".to_owned()))?;
    let assertion_at = c14n::find_by_local_name(text, "Assertion", holder).ok_or_else(|| {
        TokenError::Malformed("no saml:Assertion in RequestedSecurityToken".to_owned())
    })?;
    let range = c14n::element_range(text, assertion_at)
        .ok_or_else(|| TokenError::Malformed("the assertion is not closed".to_owned()))?;
    let assertion = self_contained(text, assertion_at, &text[range])?;
    SamlToken::from_assertion(&assertion)
}

/// The assertion's bytes; when it uses prefixes declared outside itself, those declarations
/// are added to its start tag (its exclusive c14n, and so its signature, is unchanged).
fn self_contained(document: &str, at: usize, assertion: &str) -> Result<String, TokenError> {
    if c14n::canonicalize(assertion, 0, None).is_ok() {
        return Ok(assertion.to_owned());
    }
    let declarations = c14n::namespaces_in_scope(document, at)
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let name_end = assertion
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .ok_or_else(|| TokenError::Malformed("the assertion has no start tag".to_owned()))?;
    let mut extra = String::new();
    for (prefix, uri) in declarations {
        let attribute = if prefix.is_empty() {
            "xmlns".to_owned()
        } else {
            format!("xmlns:{prefix}")
        };
        if !assertion[..assertion.find('>').unwrap_or(0)].contains(&format!("{attribute}=")) {
            extra.push_str(&format!(
                " {attribute}=\"{}\"",
                quick_xml::escape::escape(&uri)
            ));
        }
    }
    let fixed = format!(
        "{}{extra}{}",
        &assertion[..name_end],
        &assertion[name_end..]
    );
    c14n::canonicalize(&fixed, 0, None).map_err(|e| TokenError::Malformed(e.to_string()))?;
    Ok(fixed)
}

/// Verifies an assertion's enveloped signature with one of `trusted` (DER certificates): the
/// certificate in its `KeyInfo` must be one of them, the reference digest must match the exclusive
/// c14n of the assertion without its Signature, and the RSA-SHA256 signature over SignedInfo must hold.
pub fn verify_assertion_signature(xml: &str, trusted: &[Vec<u8>]) -> Result<(), String> {
    let signature_at =
        c14n::find_by_local_name(xml, "Signature", 0).ok_or("the assertion is not signed")?;
    let range = c14n::element_range(xml, signature_at).ok_or("the Signature is not closed")?;
    let signature = &xml[range];
    let text_of = |name: &str| -> Option<String> {
        let at = c14n::find_by_local_name(signature, name, 0)?;
        let element = &signature[c14n::element_range(signature, at)?];
        let start = element.find('>')? + 1;
        let end = element.rfind("</")?;
        Some(element.get(start..end)?.split_whitespace().collect())
    };
    let certificate = text_of("X509Certificate")
        .and_then(|b| BASE64.decode(b).ok())
        .ok_or("the Signature names no X509Certificate")?;
    if !trusted.contains(&certificate) {
        return Err(
            "the assertion is signed with a certificate that is not a trusted STS certificate"
                .to_owned(),
        );
    }
    let digest = text_of("DigestValue").ok_or("no DigestValue")?;
    let canonical = c14n::canonicalize(xml, 0, Some(signature_at)).map_err(|e| e.to_string())?;
    if dsig::sha256_base64(canonical.as_bytes()) != digest {
        return Err(
            "the assertion's digest does not match: it was changed after signing".to_owned(),
        );
    }
    let signed_info_at =
        c14n::find_by_local_name(xml, "SignedInfo", signature_at).ok_or("no SignedInfo")?;
    let signed_info = c14n::canonicalize(xml, signed_info_at, None).map_err(|e| e.to_string())?;
    let value = text_of("SignatureValue")
        .and_then(|b| BASE64.decode(b).ok())
        .ok_or("no SignatureValue")?;
    if !verify_rsa_sha256(&certificate, signed_info.as_bytes(), &value) {
        return Err("the assertion's signature does not verify".to_owned());
    }
    Ok(())
}

/// Formats a time as WS-Security wants it: UTC, milliseconds, `Z`.
pub fn wsu_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Builds the signed SOAP 1.2 WS-Trust issue request (docs/sts-protocol.md §5) for one CVR.
pub fn soap_request(
    options: &TokenOptions,
    identity: &ClientIdentity,
    cvr: &Cvr,
) -> Result<String, TokenError> {
    let now = options.now();
    let expires = now + chrono::Duration::from_std(options.timestamp_validity).unwrap_or_default();
    let certificate = identity.certificate_base64();
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
    w.start("s:Header", &[]);
    w.start("a:Action", &[("s:mustUnderstand", "1"), ("u:Id", "action")]);
    w.raw(WST_ISSUE_ACTION);
    w.end("a:Action");
    w.start("a:MessageID", &[("u:Id", "msgid")]);
    w.raw(&format!("urn:uuid:{}", Uuid::new_v4()));
    w.end("a:MessageID");
    w.start("a:To", &[("s:mustUnderstand", "1"), ("u:Id", "to")]);
    w.raw(&quick_xml::escape::escape(options.soap_url.as_str()));
    w.end("a:To");
    w.start("a:ReplyTo", &[("u:Id", "replyto")]);
    w.leaf("a:Address", crate::wire::WSA_ANONYMOUS);
    w.end("a:ReplyTo");
    w.start(
        "o:Security",
        &[("s:mustUnderstand", "1"), ("xmlns:o", WSSE_NS)],
    );
    w.start("u:Timestamp", &[("u:Id", "sec-ts")]);
    w.leaf("u:Created", &wsu_time(now));
    w.leaf("u:Expires", &wsu_time(expires));
    w.end("u:Timestamp");
    w.start(
        "o:BinarySecurityToken",
        &[
            ("u:Id", "sec-binsectoken"),
            ("ValueType", X509V3_VALUE_TYPE),
            ("EncodingType", BASE64_ENCODING),
        ],
    );
    w.raw(&certificate);
    w.end("o:BinarySecurityToken");
    w.raw(SIGNATURE_MARKER);
    w.end("o:Security");
    w.end("s:Header");
    w.start("s:Body", &[("u:Id", "body")]);
    w.start(
        "wst:RequestSecurityToken",
        &[
            ("xmlns:wst", WST_NS),
            ("Context", &Uuid::new_v4().to_string()),
        ],
    );
    w.leaf("wst:RequestType", WST_ISSUE);
    w.start("wsp:AppliesTo", &[("xmlns:wsp", WSP_NS)]);
    w.start("wsa:EndpointReference", &[("xmlns:wsa", WSA_NS)]);
    w.leaf("wsa:Address", &options.entity_id);
    w.end("wsa:EndpointReference");
    w.end("wsp:AppliesTo");
    w.start("wst:Claims", &[("Dialect", AUTH_CLAIMS_DIALECT)]);
    w.start(
        "auth:ClaimType",
        &[
            ("xmlns:auth", AUTH_NS),
            ("Uri", CVR_CLAIM),
            ("Optional", "false"),
        ],
    );
    w.leaf("auth:Value", cvr.as_str());
    w.end("auth:ClaimType");
    w.end("wst:Claims");
    w.leaf("wst:TokenType", SAML20_TOKEN_TYPE);
    w.leaf("wst:KeyType", PUBLIC_KEY_TYPE);
    w.start("wst:UseKey", &[]);
    w.start(
        "wsse:BinarySecurityToken",
        &[
            ("xmlns:wsse", WSSE_NS),
            ("ValueType", X509V3_VALUE_TYPE),
            ("EncodingType", BASE64_ENCODING),
        ],
    );
    w.raw(&certificate);
    w.end("wsse:BinarySecurityToken");
    w.end("wst:UseKey");
    w.end("wst:RequestSecurityToken");
    w.end("s:Body");
    w.end("s:Envelope");
    let document = w.finish();

    let mut key_info = XmlWriter::new();
    key_info.start("KeyInfo", &[]);
    key_info.start("o:SecurityTokenReference", &[]);
    key_info.start(
        "o:Reference",
        &[
            ("URI", "#sec-binsectoken"),
            ("ValueType", X509V3_VALUE_TYPE),
        ],
    );
    key_info.end("o:Reference");
    key_info.end("o:SecurityTokenReference");
    key_info.end("KeyInfo");
    let parts: Vec<SignedPart> = [
        "action",
        "msgid",
        "to",
        "replyto",
        "sec-ts",
        "sec-binsectoken",
        "body",
    ]
    .into_iter()
    .map(|id| SignedPart::Id(id.to_owned()))
    .collect();
    dsig::sign(&document, &parts, &key_info.finish(), identity)
        .map_err(|e| TokenError::Identity(e.to_string()))
}

/// The REST JSON issue request (docs/sts-protocol.md §5, "REST variant").
pub fn rest_request(
    options: &TokenOptions,
    identity: &ClientIdentity,
    cvr: &Cvr,
) -> serde_json::Value {
    serde_json::json!({
        "TokenType": SAML20_TOKEN_TYPE,
        "RequestType": WST_ISSUE,
        "KeyType": PUBLIC_KEY_TYPE,
        "AnvenderKontekst": { "Cvr": cvr.as_str() },
        "UseKey": identity.certificate_base64(),
        "AppliesTo": { "EndpointReference": { "Address": options.entity_id } },
        "OnBehalfOf": null,
    })
}

/// Reads the REST response: `RequestedSecurityToken.Assertion` is the base64 of the assertion.
pub fn parse_rest_response(body: &[u8]) -> Result<SamlToken, TokenError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| TokenError::Malformed(format!("the REST answer is not JSON: {e}")))?;
    let encoded = value
        .get("RequestedSecurityToken")
        .and_then(|t| t.get("Assertion"))
        .and_then(|a| a.as_str())
        .ok_or_else(|| {
            TokenError::Malformed(
                "no RequestedSecurityToken.Assertion in the REST answer".to_owned(),
            )
        })?;
    let bytes = BASE64
        .decode(encoded.split_whitespace().collect::<String>())
        .map_err(|e| TokenError::Malformed(format!("the assertion is not base64: {e}")))?;
    let xml = String::from_utf8(bytes)
        .map_err(|_| TokenError::Malformed("the assertion is not UTF-8".to_owned()))?;
    let xml = xml.trim_start_matches('\u{feff}');
    let xml = match xml.find("<") {
        Some(at) if xml[at..].starts_with("<?xml") => {
            let end = xml.find("?>").map_or(0, |e| e + 2);
            xml[end..].trim_start().to_owned()
        }
        _ => xml.trim().to_owned(),
    };
    SamlToken::from_assertion(&xml)
}

/// Issues tokens over mutual TLS.
#[derive(Debug)]
pub struct TokenClient {
    options: TokenOptions,
    identity: Arc<ClientIdentity>,
    http: reqwest::Client,
    issued: AtomicU64,
}

impl TokenClient {
    /// A client for `options`, authenticating with `identity`; `http` must carry the identity
    /// for mutual TLS (see [`crate::signed::mutual_tls_client`]).
    pub fn new(
        options: TokenOptions,
        identity: Arc<ClientIdentity>,
        http: reqwest::Client,
    ) -> TokenClient {
        TokenClient {
            options,
            identity,
            http,
            issued: AtomicU64::new(0),
        }
    }

    /// The options.
    pub fn options(&self) -> &TokenOptions {
        &self.options
    }

    /// Tokens issued by this client so far.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// Asks the STS for a token for `cvr` and checks that it fits: the CVR, the audience, the
    /// holder-of-key certificate, the expiry and (when trusted STS certificates are configured)
    /// the signature.
    pub async fn issue(&self, cvr: &Cvr) -> Result<SamlToken, TokenError> {
        let (url, request) = match self.options.protocol {
            TokenProtocol::Soap => {
                let envelope = soap_request(&self.options, &self.identity, cvr)?;
                (
                    self.options.soap_url.clone(),
                    self.http
                        .post(self.options.soap_url.clone())
                        .header(
                            "content-type",
                            format!(
                                "application/soap+xml; charset=utf-8; action=\"{WST_ISSUE_ACTION}\""
                            ),
                        )
                        .body(envelope),
                )
            }
            TokenProtocol::Rest => (
                self.options.rest_url.clone(),
                self.http
                    .post(self.options.rest_url.clone())
                    .json(&rest_request(&self.options, &self.identity, cvr)),
            ),
        };
        let unreachable = |message: String| TokenError::Unreachable {
            url: url.to_string(),
            message,
        };
        let response = request
            .timeout(self.options.timeout)
            .send()
            .await
            .map_err(|e| unreachable(crate::transport::error_chain(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(crate::transport::error_chain(&e)))?;
        let refused = |code: String, subcode: Option<String>, reason: String| TokenError::Refused {
            kind: FaultKind::parse(subcode.as_deref(), &reason),
            cvr: cvr.as_str().to_owned(),
            entity_id: self.options.entity_id.clone(),
            code,
            subcode,
            reason,
            http_status: status,
        };
        let parsed = match self.options.protocol {
            TokenProtocol::Soap => parse_response(&body),
            TokenProtocol::Rest if (200..300).contains(&status) => parse_rest_response(&body),
            TokenProtocol::Rest => {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .or_else(|| v.get("Message"))
                            .and_then(|m| m.as_str())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
                let subcode = message
                    .split(|c: char| !c.is_alphanumeric())
                    .find(|w| w.ends_with("NotFound") || w.starts_with("ServiceAgreement"))
                    .map(str::to_owned);
                return Err(refused(format!("HTTP {status}"), subcode, message));
            }
        };
        let token = match parsed {
            Ok(token) if (200..300).contains(&status) => token,
            Ok(_) => {
                return Err(refused(
                    format!("HTTP {status}"),
                    None,
                    "an error status with a token".to_owned(),
                ));
            }
            Err(TokenError::Refused {
                code,
                subcode,
                reason,
                ..
            }) => return Err(refused(code, subcode, reason)),
            Err(_) if !(200..300).contains(&status) => {
                return Err(refused(
                    format!("HTTP {status}"),
                    None,
                    String::from_utf8_lossy(&body).chars().take(300).collect(),
                ));
            }
            Err(other) => return Err(other),
        };
        self.check(&token, cvr)?;
        self.issued.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            customer.cvr = %cvr,
            token.id = %token.id,
            token.not_on_or_after = %token.not_on_or_after,
            entity_id = %self.options.entity_id,
            "STS token issued"
        );
        Ok(token)
    }

    fn check(&self, token: &SamlToken, cvr: &Cvr) -> Result<(), TokenError> {
        let fields = assertion_fields(&token.xml)?;
        if fields.cvr != cvr.as_str() {
            return Err(TokenError::Invalid(format!(
                "it is for CVR {:?}, not the requested {cvr}",
                fields.cvr
            )));
        }
        if let Some(issuer) = self
            .options
            .issuer
            .as_deref()
            .filter(|i| *i != fields.issuer)
        {
            return Err(TokenError::Invalid(format!(
                "it was issued by {:?}, not by this environment's STS {issuer:?} (check [sts] environment and sts_issuer)",
                fields.issuer
            )));
        }
        if fields.audience != self.options.entity_id {
            return Err(TokenError::Invalid(format!(
                "its audience is {:?}, not the entity ID {:?}",
                fields.audience, self.options.entity_id
            )));
        }
        if let Some(holder) = &fields.holder_certificate {
            if *holder != self.identity.certificate_base64() {
                return Err(TokenError::Invalid(
                    "its holder-of-key certificate is not this system's certificate".to_owned(),
                ));
            }
        }
        if fields.not_on_or_after <= self.options.now() {
            return Err(TokenError::Invalid(format!(
                "it expired at {}",
                fields.not_on_or_after
            )));
        }
        if !self.options.trusted_sts_certificates.is_empty() {
            verify_assertion_signature(&token.xml, &self.options.trusted_sts_certificates)
                .map_err(TokenError::Invalid)?;
        }
        Ok(())
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<SamlToken>>>;

/// Tokens per (entity ID, CVR), shared by every client of the process.
#[derive(Debug, Clone)]
pub struct TokenCache {
    client: Arc<TokenClient>,
    slots: Arc<Mutex<HashMap<(String, Cvr), Slot>>>,
}

impl TokenCache {
    /// A cache that issues through `client`.
    pub fn new(client: TokenClient) -> TokenCache {
        TokenCache {
            client: Arc::new(client),
            slots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The issuing client.
    pub fn client(&self) -> &TokenClient {
        &self.client
    }

    /// Tokens issued through this cache so far.
    pub fn issued(&self) -> u64 {
        self.client.issued()
    }

    fn slot(&self, cvr: &Cvr) -> Slot {
        let key = (self.client.options.entity_id.clone(), cvr.clone());
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    /// The cached token for `cvr`, or a new one when there is none or it expires within the margin.
    pub async fn token(&self, cvr: &Cvr) -> Result<SamlToken, TokenError> {
        let slot = self.slot(cvr);
        let mut guard = slot.lock().await;
        let margin =
            chrono::Duration::from_std(self.client.options.expiry_margin).unwrap_or_default();
        if let Some(token) = guard.as_ref() {
            if token.not_on_or_after - margin > self.client.options.now() {
                return Ok(token.clone());
            }
        }
        let token = self.client.issue(cvr).await?;
        *guard = Some(token.clone());
        Ok(token)
    }

    /// Puts a token obtained elsewhere in the cache (tests; tokens fetched out of band).
    pub async fn insert(&self, cvr: &Cvr, token: SamlToken) {
        *self.slot(cvr).lock().await = Some(token);
    }

    /// Forgets the token of `cvr` (for example after the service refused it).
    pub async fn forget(&self, cvr: &Cvr) {
        *self.slot(cvr).lock().await = None;
    }

    /// Forgets the token of `cvr` if it is still the one with assertion ID `id` (a refused
    /// token is renewed once, however many calls in flight were refused with it).
    pub async fn forget_if(&self, cvr: &Cvr, id: &str) {
        let slot = self.slot(cvr);
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|t| t.id() == id) {
            *guard = None;
        }
    }
}
