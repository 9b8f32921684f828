//! The signed transport: every Organisation call carries the WS-Security header of docs/sts-protocol.md §6 (holder-of-key with the municipality's token) and goes over mutual TLS.
//!
//! Header: `wsa:Action`, the KOMBIT `RequestHeader` with the call's fresh TransactionUUID,
//! `wsa:MessageID`, `wsa:ReplyTo`, `wsa:To`, and `wsse:Security` with a `wsu:Timestamp` (UTC,
//! milliseconds, `Z`), the SAML assertion unchanged, a `SecurityTokenReference` to it, and a
//! `Signature` made with the system's own key over Body, Action, MessageID, ReplyTo, To,
//! Timestamp and (STR-Transform) the assertion. The legacy Serviceplatformen profile sends the
//! same over SOAP 1.1 and also signs the Liberty `Framework` header its policy lists.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::dsig::{self, DsigError, SIGNATURE_MARKER, SignedPart};
use crate::error::TransportError;
use crate::identity::{ClientIdentity, IdentityError};
use crate::token::{SamlToken, TokenCache, TokenClient, TokenOptions, wsu_time};
use crate::transport::{SoapCall, SoapResponse, Transport, TransportFuture, read_limited};
use crate::wire::{
    LIBERTY_PROFILE_NS, LIBERTY_SB_NS, REQUEST_HEADER_NS, SAML20_TOKEN_TYPE, SAMLID_VALUE_TYPE,
    SOAP11_NS, SOAP12_NS, WSA_ANONYMOUS, WSA_NS, WSSE_NS, WSSE11_NS, WSU_NS,
};
use crate::xml::XmlWriter;

/// Which SOAP the services speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SoapVersion {
    /// SOAP 1.2 (Organisation 6 on Støttesystemerne).
    #[default]
    Soap12,
    /// SOAP 1.1 with the signed Liberty `Framework` header (legacy Serviceplatformen).
    Soap11,
}

/// How signed calls are made.
#[derive(Clone, Debug)]
pub struct SignedOptions {
    /// SOAP 1.2 or the legacy 1.1.
    pub soap_version: SoapVersion,
    /// Validity of each message's `wsu:Timestamp` (default 5 min).
    pub timestamp_validity: Duration,
    /// Added to the clock when stamping messages (tests; a host with a known skew).
    pub clock_offset: chrono::Duration,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
    /// The longest wait for the next bytes of a response body (a stalled body fails after it).
    pub read_timeout: Duration,
}

impl Default for SignedOptions {
    fn default() -> Self {
        SignedOptions {
            soap_version: SoapVersion::Soap12,
            timestamp_validity: Duration::from_secs(5 * 60),
            clock_offset: chrono::Duration::zero(),
            max_response_bytes: 8 * 1024 * 1024,
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// An HTTP client that presents the system certificate (mutual TLS) and trusts the public web
/// roots plus `extra_roots` (DER; for example the simulator's CA).
pub fn mutual_tls_client(
    identity: &ClientIdentity,
    extra_roots: &[Vec<u8>],
) -> Result<reqwest::Client, IdentityError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .identity(identity.tls_identity()?)
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(16);
    for der in extra_roots {
        let certificate = reqwest::Certificate::from_der(der).map_err(|_| {
            IdentityError::Certificate("a trusted TLS root is not a certificate".to_owned())
        })?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|e| IdentityError::Key(format!("cannot build the TLS client: {e}")))
}

/// What every signed client of one configuration shares: the system certificate, the mutual
/// TLS HTTP client and the token cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignedSession {
    identity: Arc<ClientIdentity>,
    http: reqwest::Client,
    tokens: TokenCache,
}

impl SignedSession {
    /// Builds the TLS client (trusting the public roots plus `extra_tls_roots`, DER) and the
    /// token cache for `tokens`.
    pub fn new(
        identity: Arc<ClientIdentity>,
        extra_tls_roots: &[Vec<u8>],
        tokens: TokenOptions,
    ) -> Result<SignedSession, IdentityError> {
        let http = mutual_tls_client(&identity, extra_tls_roots)?;
        let tokens = TokenCache::new(TokenClient::new(tokens, identity.clone(), http.clone()));
        Ok(SignedSession {
            identity,
            http,
            tokens,
        })
    }

    /// A transport for clients of this session.
    pub fn transport(&self, options: SignedOptions) -> SignedTransport {
        SignedTransport::new(
            self.http.clone(),
            self.tokens.clone(),
            self.identity.clone(),
            options,
        )
    }

    /// The token cache (shared by every transport of the session).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The system certificate.
    pub fn identity(&self) -> &ClientIdentity {
        &self.identity
    }
}

/// Signs every call with the municipality's token and the system's key; sends over mutual TLS.
#[derive(Debug, Clone)]
pub struct SignedTransport {
    http: reqwest::Client,
    tokens: TokenCache,
    identity: Arc<ClientIdentity>,
    options: SignedOptions,
}

impl SignedTransport {
    /// A transport on `http` (see [`mutual_tls_client`]) taking tokens from `tokens`.
    pub fn new(
        http: reqwest::Client,
        tokens: TokenCache,
        identity: Arc<ClientIdentity>,
        options: SignedOptions,
    ) -> SignedTransport {
        SignedTransport {
            http,
            tokens,
            identity,
            options,
        }
    }

    /// The token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The signed envelope for `call`, with the municipality's (cached) token.
    pub async fn envelope(&self, call: &SoapCall) -> Result<String, TransportError> {
        let token = self.token(call).await?;
        self.envelope_with(call, &token)
    }

    async fn token(&self, call: &SoapCall) -> Result<SamlToken, TransportError> {
        self.tokens
            .token(&call.cvr)
            .await
            .map_err(|e| TransportError::Token(Box::new(e)))
    }

    fn envelope_with(&self, call: &SoapCall, token: &SamlToken) -> Result<String, TransportError> {
        self.signed_envelope(call, token)
            .map_err(|e| TransportError::Refused(e.to_string()))
    }

    /// The signed envelope for `call` with `token`.
    pub fn signed_envelope(&self, call: &SoapCall, token: &SamlToken) -> Result<String, DsigError> {
        let soap = match self.options.soap_version {
            SoapVersion::Soap12 => SOAP12_NS,
            SoapVersion::Soap11 => SOAP11_NS,
        };
        let now = chrono::Utc::now() + self.options.clock_offset;
        let expires =
            now + chrono::Duration::from_std(self.options.timestamp_validity).unwrap_or_default();
        let reference_id = format!("_str{}", token.id());
        let mut w = XmlWriter::new();
        w.raw(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        w.start(
            "s:Envelope",
            &[("xmlns:s", soap), ("xmlns:a", WSA_NS), ("xmlns:u", WSU_NS)],
        );
        w.start("s:Header", &[]);
        w.start("a:Action", &[("s:mustUnderstand", "1"), ("u:Id", "_2")]);
        w.raw(&quick_xml::escape::escape(call.action.as_str()));
        w.end("a:Action");
        w.start("h:RequestHeader", &[("xmlns:h", REQUEST_HEADER_NS)]);
        w.leaf("h:TransactionUUID", &call.transaction_id.to_string());
        w.end("h:RequestHeader");
        w.start("a:MessageID", &[("u:Id", "_3")]);
        w.raw(&format!("urn:uuid:{}", Uuid::new_v4()));
        w.end("a:MessageID");
        w.start("a:ReplyTo", &[("u:Id", "_4")]);
        w.leaf("a:Address", WSA_ANONYMOUS);
        w.end("a:ReplyTo");
        w.start("a:To", &[("s:mustUnderstand", "1"), ("u:Id", "_5")]);
        w.raw(&quick_xml::escape::escape(call.url.as_str()));
        w.end("a:To");
        let legacy = self.options.soap_version == SoapVersion::Soap11;
        if legacy {
            w.start(
                "sbf:Framework",
                &[
                    ("xmlns:sbf", LIBERTY_SB_NS),
                    ("xmlns:sbfprofile", LIBERTY_PROFILE_NS),
                    ("s:mustUnderstand", "1"),
                    ("sbfprofile:profile", "urn:liberty:sb:profile:basic"),
                    ("u:Id", "_7"),
                    ("version", "2.0"),
                ],
            );
            w.end("sbf:Framework");
        }
        w.start(
            "o:Security",
            &[("s:mustUnderstand", "1"), ("xmlns:o", WSSE_NS)],
        );
        w.start("u:Timestamp", &[("u:Id", "_6")]);
        w.leaf("u:Created", &wsu_time(now));
        w.leaf("u:Expires", &wsu_time(expires));
        w.end("u:Timestamp");
        w.raw(token.assertion_xml());
        w.start(
            "o:SecurityTokenReference",
            &[
                ("xmlns:b", WSSE11_NS),
                ("b:TokenType", SAML20_TOKEN_TYPE),
                ("u:Id", reference_id.as_str()),
            ],
        );
        w.start("o:KeyIdentifier", &[("ValueType", SAMLID_VALUE_TYPE)]);
        w.raw(&quick_xml::escape::escape(token.id()));
        w.end("o:KeyIdentifier");
        w.end("o:SecurityTokenReference");
        w.raw(SIGNATURE_MARKER);
        w.end("o:Security");
        w.end("s:Header");
        w.start("s:Body", &[("u:Id", "_1")]);
        w.raw(&call.payload);
        w.end("s:Body");
        w.end("s:Envelope");
        let document = w.finish();

        let mut key_info = XmlWriter::new();
        key_info.start("KeyInfo", &[]);
        key_info.start(
            "o:SecurityTokenReference",
            &[("xmlns:b", WSSE11_NS), ("b:TokenType", SAML20_TOKEN_TYPE)],
        );
        key_info.start("o:KeyIdentifier", &[("ValueType", SAMLID_VALUE_TYPE)]);
        key_info.raw(&quick_xml::escape::escape(token.id()));
        key_info.end("o:KeyIdentifier");
        key_info.end("o:SecurityTokenReference");
        key_info.end("KeyInfo");

        let mut parts: Vec<SignedPart> = ["_1", "_2", "_3", "_4", "_5", "_6"]
            .into_iter()
            .map(|id| SignedPart::Id(id.to_owned()))
            .collect();
        if legacy {
            parts.push(SignedPart::Id("_7".to_owned()));
        }
        parts.push(SignedPart::Assertion {
            reference_id,
            assertion_id: token.id().to_owned(),
        });
        dsig::sign(&document, &parts, &key_info.finish(), &self.identity)
    }

    /// Posts an envelope (as [`SignedTransport::envelope`] made it) to the call's URL.
    pub async fn post(
        &self,
        call: &SoapCall,
        envelope: String,
    ) -> Result<SoapResponse, TransportError> {
        let request = match self.options.soap_version {
            SoapVersion::Soap12 => self.http.post(call.url.clone()).header(
                "content-type",
                format!(
                    "application/soap+xml; charset=utf-8; action=\"{}\"",
                    call.action
                ),
            ),
            SoapVersion::Soap11 => self
                .http
                .post(call.url.clone())
                .header("content-type", "text/xml; charset=utf-8")
                .header("soapaction", format!("\"{}\"", call.action)),
        };
        let response = request
            .body(envelope)
            .send()
            .await
            .map_err(|e| TransportError::Io(crate::transport::error_chain(&e)))?;
        read_limited(
            response,
            self.options.max_response_bytes,
            self.options.read_timeout,
        )
        .await
    }
}

impl Transport for SignedTransport {
    /// Sends the call with the municipality's cached token. When the service refuses the token
    /// itself (`wsse:InvalidSecurityToken`: expired or revoked before its time), the token is
    /// forgotten, a new one fetched and the call sent once more; a second refusal stands.
    fn send<'a>(&'a self, call: &'a SoapCall) -> TransportFuture<'a> {
        Box::pin(async move {
            let token = self.token(call).await?;
            let response = self.post(call, self.envelope_with(call, &token)?).await?;
            if !refuses_token(&response) {
                return Ok(response);
            }
            // Only the first call to notice drops the token; the others find the new one.
            self.tokens.forget_if(&call.cvr, token.id()).await;
            let renewed = self.token(call).await?;
            tracing::info!(
                customer.cvr = %call.cvr,
                call.service = call.service.segment(),
                "the service refused the STS token (expired or revoked); the call is repeated once with a new token"
            );
            self.post(call, self.envelope_with(call, &renewed)?).await
        })
    }
}

/// Whether the answer is a SOAP fault refusing the security token itself (the fault's subcode,
/// `wsse:InvalidSecurityToken`, not its wording).
fn refuses_token(response: &SoapResponse) -> bool {
    if (200..300).contains(&response.status) {
        return false;
    }
    matches!(
        crate::xml::read_body(&response.body),
        Ok(crate::xml::Body::Fault(fault)) if fault.subcode.as_deref() == Some("InvalidSecurityToken")
    )
}
