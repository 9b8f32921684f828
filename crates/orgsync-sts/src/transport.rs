//! The seam between operations and the wire: a [`Transport`] takes a body payload and its SOAP action and returns the HTTP answer.
//!
//! Operations build payloads and parse answers; they never see envelopes, headers, tokens or
//! TLS. The unsigned transport here wraps the payload in a plain SOAP 1.2 envelope and is only
//! allowed against the simulator on a loopback address. Issue #7 adds a signed transport (WS-Trust
//! token per CVR, WS-Security signature, mutual TLS) implementing the same trait.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use orgsync_model::ids::Cvr;
use url::Url;
use uuid::Uuid;

use crate::error::{StsError, TransportError};
use crate::options::{ClientOptions, Environment};
use crate::signed::SoapVersion;
use crate::wire::{Dialect, Operation, REQUEST_HEADER_NS, SOAP11_NS, SOAP12_NS, Service, WSA_NS};
use crate::xml::XmlWriter;

/// One SOAP call as the operations see it.
#[derive(Clone, Debug)]
pub struct SoapCall {
    /// The municipality the call is made for (the token's `CvrNumberIdentifier`).
    pub cvr: Cvr,
    /// The service.
    pub service: Service,
    /// The operation.
    pub operation: Operation,
    /// The contract: decides the SOAP version of the envelope.
    pub dialect: Dialect,
    /// The full URL of the service (`<base>/<svc>/6/`, v5 `<base>/<Svc>/5`).
    pub url: Url,
    /// The SOAP action (docs/sts-protocol.md §2).
    pub action: String,
    /// The body payload: one element (`SoegInput`, `ListInput`, ..., or v5's `SoegRequest`
    /// wrapper around it) declaring its own namespaces.
    pub payload: String,
    /// A fresh id for the `RequestHeader/TransactionUUID`.
    pub transaction_id: Uuid,
}

/// An HTTP answer: the status and the body, already limited in size by the transport.
#[derive(Clone, Debug)]
pub struct SoapResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body bytes (a SOAP envelope, or whatever an intermediary sent).
    pub body: Vec<u8>,
    /// For a body over [`LARGE_BODY`]: the process's one permit to hold such a body, kept
    /// until the answer has been parsed (the response is dropped).
    _large: Option<Arc<OwnedSemaphorePermit>>,
}

impl SoapResponse {
    /// An answer (for transports outside this crate; a large body then takes no permit).
    pub fn new(status: u16, body: Vec<u8>) -> SoapResponse {
        SoapResponse {
            status,
            body,
            _large: None,
        }
    }
}

/// A body larger than this (4 MiB) is read and parsed by one call at a time in the whole
/// process. STS's real answers stay well below it (a page of 500 units or a list of 100 users
/// is under 1 MiB); a hostile or broken server may send up to `max_response_bytes` to every
/// call in flight, and parsing a body takes several times its size, so without this a process
/// with ten calls in flight held ten of them at once (a 60 MB answer took a read to 790 MB).
pub const LARGE_BODY: usize = 4 * 1024 * 1024;

fn large_bodies() -> Arc<Semaphore> {
    static LARGE: OnceLock<Arc<Semaphore>> = OnceLock::new();
    LARGE.get_or_init(|| Arc::new(Semaphore::new(1))).clone()
}

/// A boxed future, so that transports can be used as trait objects.
pub type TransportFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SoapResponse, TransportError>> + Send + 'a>>;

/// Sends SOAP calls. Implementations own envelopes, security headers, tokens and TLS.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Sends one call and returns the HTTP answer. Must stop reading after `max_response_bytes`
    /// with [`TransportError::TooLarge`]. Timeouts and retries are the client's job.
    fn send<'a>(&'a self, call: &'a SoapCall) -> TransportFuture<'a>;
}

/// Plain SOAP over HTTP without WS-Security (1.2, or 1.1 for the v5 dialect): the simulator's profile only.
///
/// Carries the CVR in an `X-Orgsync-Sim-Cvr` HTTP header, standing in for the SAML token's
/// `CvrNumberIdentifier` that scopes every real call.
#[derive(Debug, Clone)]
pub struct UnsignedTransport {
    http: reqwest::Client,
    max_response_bytes: usize,
    read_timeout: Duration,
}

/// The HTTP header that carries the CVR to the simulator.
pub const SIM_CVR_HEADER: &str = "x-orgsync-sim-cvr";

impl UnsignedTransport {
    /// Builds the transport, refusing anything but `environment = sim` with a loopback base URL.
    pub fn new(options: &ClientOptions) -> Result<UnsignedTransport, StsError> {
        check_unsigned_allowed(options)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| StsError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(UnsignedTransport {
            http,
            max_response_bytes: options.max_response_bytes,
            read_timeout: options.read_timeout,
        })
    }
}

/// Whether the unsigned profile may be used with these options.
pub fn check_unsigned_allowed(options: &ClientOptions) -> Result<(), StsError> {
    let refuse = |why: String| {
        Err(StsError::Config(format!(
            "{why}; the unsigned transport is only for environment = sim with a loopback base URL. \
             Real STS needs the signed profile (WS-Trust token, WS-Security signature, mutual TLS: issue #7)"
        )))
    };
    if options.environment != Environment::Sim {
        return refuse(format!("environment is {:?}", options.environment));
    }
    let loopback = match options.base_url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if !loopback {
        return refuse(format!(
            "base URL {} is not a loopback address",
            options.base_url
        ));
    }
    Ok(())
}

/// The unsigned SOAP envelope (1.2, or 1.1 for the v5 dialect) around a payload: RequestHeader
/// plus WS-Addressing Action, MessageID and To.
pub fn unsigned_envelope(call: &SoapCall) -> String {
    let soap = match call.dialect.soap_version() {
        SoapVersion::Soap12 => SOAP12_NS,
        SoapVersion::Soap11 => SOAP11_NS,
    };
    let mut w = XmlWriter::new();
    w.raw(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    w.start("s:Envelope", &[("xmlns:s", soap), ("xmlns:a", WSA_NS)]);
    w.start("s:Header", &[]);
    w.leaf("a:Action", &call.action);
    w.leaf("a:MessageID", &format!("urn:uuid:{}", Uuid::new_v4()));
    w.leaf("a:To", call.url.as_str());
    w.start("h:RequestHeader", &[("xmlns:h", REQUEST_HEADER_NS)]);
    w.leaf("h:TransactionUUID", &call.transaction_id.to_string());
    w.end("h:RequestHeader");
    w.end("s:Header");
    w.start("s:Body", &[]);
    w.raw(&call.payload);
    w.end("s:Body");
    w.end("s:Envelope");
    w.finish()
}

impl Transport for UnsignedTransport {
    fn send<'a>(&'a self, call: &'a SoapCall) -> TransportFuture<'a> {
        Box::pin(async move {
            check_loopback(&call.url)?;
            let envelope = unsigned_envelope(call);
            let request = match call.dialect.soap_version() {
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
                .header(SIM_CVR_HEADER, call.cvr.as_str())
                .body(envelope)
                .send()
                .await
                .map_err(|e| TransportError::Io(error_chain(&e)))?;
            read_limited(response, self.max_response_bytes, self.read_timeout).await
        })
    }
}

/// Reads a response body, stopping with [`TransportError::TooLarge`] past `limit` bytes and
/// with [`TransportError::Stalled`] when no bytes arrive for `read_timeout` (a body that
/// stalls after its headers fails within this, not the whole call timeout).
///
/// The body is read into one buffer sized from `Content-Length` when the server sends one
/// (at most `limit`), so a large answer is not copied again as its buffer grows.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    read_timeout: Duration,
) -> Result<SoapResponse, TransportError> {
    let status = response.status().as_u16();
    let announced = response.content_length();
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(TransportError::TooLarge { limit });
    }
    let announced = announced
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(limit);
    let mut large = None;
    if announced > LARGE_BODY {
        large = Some(Arc::new(acquire_large().await?));
    }
    let mut body = Vec::with_capacity(announced);
    loop {
        let chunk = match tokio::time::timeout(read_timeout, response.chunk()).await {
            Err(_) => {
                return Err(TransportError::Stalled {
                    after: read_timeout,
                });
            }
            Ok(chunk) => chunk.map_err(|e| TransportError::Io(error_chain(&e)))?,
        };
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > limit {
            return Err(TransportError::TooLarge { limit });
        }
        if large.is_none() && body.len() + chunk.len() > LARGE_BODY {
            large = Some(Arc::new(acquire_large().await?));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(SoapResponse {
        status,
        body,
        _large: large,
    })
}

async fn acquire_large() -> Result<OwnedSemaphorePermit, TransportError> {
    large_bodies()
        .acquire_owned()
        .await
        .map_err(|_| TransportError::Io("the large-body permit was closed".to_owned()))
}

fn check_loopback(url: &Url) -> Result<(), TransportError> {
    let ok = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TransportError::Refused(format!(
            "{url} is not a loopback address; the signed profile is required"
        )))
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsigned_transport_refuses_real_sts_addresses() {
        let mut options = ClientOptions {
            base_url: Url::parse("https://organisation.stoettesystemerne.dk/organisation/")
                .unwrap(),
            ..ClientOptions::default()
        };
        let error = UnsignedTransport::new(&options).unwrap_err().to_string();
        assert!(error.contains("signed profile"), "{error}");
        options.base_url = Url::parse("http://127.0.0.1:1/organisation/").unwrap();
        assert!(UnsignedTransport::new(&options).is_ok());
        options.environment = Environment::Production;
        assert!(UnsignedTransport::new(&options).is_err());
    }
}
