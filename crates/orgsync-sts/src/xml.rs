//! XML plumbing: a tiny escaping writer for request bodies, and the SOAP envelope reader that finds the body payload or the fault.
//!
//! The envelope reader resolves namespaces (any prefixes, JAXB `ns2:` style included) with
//! quick-xml's `NsReader`, checks the payload's namespace and name, and hands the payload's bytes
//! to serde. Serde then matches elements by local name.

use quick_xml::NsReader;
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use serde::Deserialize;

use crate::wire::SOAP12_NS;

/// SOAP 1.1 envelope namespace, accepted when reading for tolerance.
const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// Builds XML text. Element names carry their prefixes; namespace declarations are attributes.
#[derive(Debug, Default)]
pub struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    /// An empty writer.
    pub fn new() -> XmlWriter {
        XmlWriter {
            buf: String::with_capacity(1024),
        }
    }

    /// `<name a="v" ...>`.
    pub fn start(&mut self, name: &str, attributes: &[(&str, &str)]) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        for (key, value) in attributes {
            self.buf.push(' ');
            self.buf.push_str(key);
            self.buf.push_str("=\"");
            self.buf.push_str(&escape(*value));
            self.buf.push('"');
        }
        self.buf.push('>');
        self
    }

    /// `</name>`.
    pub fn end(&mut self, name: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    /// `<name>text</name>`, escaped.
    pub fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.start(name, &[]);
        self.buf.push_str(&escape(text));
        self.end(name)
    }

    /// `<name/>`.
    pub fn empty(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str("/>");
        self
    }

    /// Appends already-built XML.
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.buf.push_str(xml);
        self
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.buf
    }
}

/// What a SOAP body holds.
#[derive(Debug)]
pub enum Body<'a> {
    /// The payload element: its namespace, local name and text (the whole element).
    Payload {
        /// The resolved namespace URI ("" when unbound).
        namespace: String,
        /// The local name.
        local_name: String,
        /// The element's text, from `<` to the end of its end tag.
        xml: &'a str,
    },
    /// A SOAP fault.
    Fault(SoapFault),
}

/// A parsed SOAP 1.2 (or 1.1) fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoapFault {
    /// `Code/Value` (or SOAP 1.1 `faultcode`), prefix stripped: `Sender`, `Receiver`, ...
    pub code: String,
    /// `Code/Subcode/Value`, prefix stripped, when present.
    pub subcode: Option<String>,
    /// `Reason/Text` (or `faultstring`).
    pub reason: String,
}

/// The deepest nesting of elements a response may have. STS answers nest about 12 levels
/// (Envelope, Body, ListOutput, FiltreretOejebliksbillede, Registrering, RelationListe,
/// Adresser, Virkning, AktoerRef, UUIDIdentifikator, ...); a document nested deeper is hostile
/// or broken and is refused before serde sees it.
pub const MAX_DEPTH: usize = 64;

/// Why an envelope could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EnvelopeError {
    /// What is wrong.
    pub message: String,
    /// Whether the document looks cut off (it does not end with a closed tag).
    pub truncated: bool,
    /// `Some(limit)` when elements are nested deeper than `limit` ([`MAX_DEPTH`]).
    pub too_deep: Option<usize>,
}

fn envelope_error(message: String) -> EnvelopeError {
    EnvelopeError {
        message,
        truncated: false,
        too_deep: None,
    }
}

fn too_deep() -> EnvelopeError {
    EnvelopeError {
        message: format!("elements nested deeper than {MAX_DEPTH} levels"),
        truncated: false,
        too_deep: Some(MAX_DEPTH),
    }
}

/// Finds the body payload (or fault) of a SOAP envelope.
pub fn read_body(xml: &[u8]) -> Result<Body<'_>, EnvelopeError> {
    read_body_in(xml, false).map(|(_, body)| body)
}

/// [`read_body`] for a contract that wraps payloads (the v5 `XxxResponse`): with `wrapped`, the
/// payload is the first child of the Body's element, and that element's `(namespace, local
/// name)` is returned too. A fault is never wrapped.
pub fn read_body_in(
    xml: &[u8],
    wrapped: bool,
) -> Result<(Option<(String, String)>, Body<'_>), EnvelopeError> {
    let looks_cut = !xml.trim_ascii_end().ends_with(b">");
    read_body_inner(xml, wrapped).map_err(|mut e| {
        e.truncated = e.truncated || looks_cut;
        e
    })
}

fn read_body_inner(
    xml: &[u8],
    wrapped: bool,
) -> Result<(Option<(String, String)>, Body<'_>), EnvelopeError> {
    let text = std::str::from_utf8(xml)
        .map_err(|e| envelope_error(format!("the response is not UTF-8: {e}")))?;
    let mut reader = NsReader::from_str(text);
    let mut depth = 0usize;
    let mut envelope_ns: Option<&'static str> = None;
    let mut in_body = false;
    let mut wrapper: Option<(String, String)> = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| envelope_error(format!("malformed XML at byte {before}: {e}")))?;
        let namespace = match resolved {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            _ => String::new(),
        };
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) if in_body => {
                let local_name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let is_fault = Some(namespace.as_str()) == envelope_ns && local_name == "Fault";
                if wrapped && wrapper.is_none() && !is_fault {
                    if empty {
                        return Err(envelope_error(format!(
                            "the SOAP Body's {local_name} is empty"
                        )));
                    }
                    wrapper = Some((namespace, local_name));
                    continue;
                }
                // Re-read the element from its start so serde sees all of it.
                let element_end =
                    element_end(text, before, depth + usize::from(wrapper.is_some()))?;
                let element = &text[before..element_end];
                if is_fault && wrapper.is_none() {
                    return Ok((None, Body::Fault(parse_fault(element)?)));
                }
                return Ok((
                    wrapper,
                    Body::Payload {
                        namespace,
                        local_name,
                        xml: element,
                    },
                ));
            }
            Event::Start(start) => {
                let local = start.local_name();
                match depth {
                    0 => {
                        if local.as_ref() != b"Envelope" {
                            return Err(envelope_error(format!(
                                "the root element is {:?}, not a SOAP Envelope",
                                String::from_utf8_lossy(local.as_ref())
                            )));
                        }
                        envelope_ns = match namespace.as_str() {
                            SOAP12_NS => Some(SOAP12_NS),
                            SOAP11_NS => Some(SOAP11_NS),
                            other => {
                                return Err(envelope_error(format!(
                                    "the Envelope is in namespace {other:?}, not SOAP 1.2 ({SOAP12_NS})"
                                )));
                            }
                        };
                    }
                    1 if local.as_ref() == b"Body" && Some(namespace.as_str()) == envelope_ns => {
                        in_body = true
                    }
                    _ => {}
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            Event::Empty(start) if depth == 1 && start.local_name().as_ref() == b"Body" => {
                return Err(envelope_error("the SOAP Body is empty".to_owned()));
            }
            Event::Empty(start) if depth == 0 => {
                return Err(envelope_error(format!(
                    "the root element is an empty {:?}",
                    String::from_utf8_lossy(start.local_name().as_ref())
                )));
            }
            Event::End(_) => {
                if let Some((_, name)) = &wrapper {
                    return Err(envelope_error(format!("the SOAP Body's {name} is empty")));
                }
                if in_body {
                    return Err(envelope_error("the SOAP Body is empty".to_owned()));
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof => {
                return Err(EnvelopeError {
                    too_deep: None,
                    truncated: envelope_ns.is_some(),
                    message: if envelope_ns.is_none() {
                        "the response holds no SOAP Envelope".to_owned()
                    } else {
                        "the response ends before the SOAP Body (truncated?)".to_owned()
                    },
                });
            }
            _ => {}
        }
    }
}

/// The end offset of the element starting at `start` (which must be a `<`). Refuses an element
/// whose descendants nest deeper than [`MAX_DEPTH`] levels (counted from the document's root:
/// `outer` levels are above it), so that serde never walks a hostile depth.
fn element_end(text: &str, start: usize, outer: usize) -> Result<usize, EnvelopeError> {
    let tail = text
        .get(start..)
        .ok_or_else(|| envelope_error("bad element offset".to_owned()))?;
    let mut reader = NsReader::from_str(tail);
    let mut depth = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| envelope_error(format!("malformed XML in the SOAP Body: {e}")))?;
        match event {
            Event::Start(_) => {
                depth += 1;
                if outer + depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            Event::Empty(_) if depth == 0 => break,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Event::Eof => {
                return Err(EnvelopeError {
                    message: "the response ends inside the SOAP Body (truncated?)".to_owned(),
                    truncated: true,
                    too_deep: None,
                });
            }
            _ => {}
        }
    }
    let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
    Ok(start.saturating_add(end).min(text.len()))
}

#[derive(Deserialize, Default)]
struct FaultXml {
    #[serde(rename = "Code", default)]
    code: Option<FaultCode>,
    #[serde(rename = "Reason", default)]
    reason: Option<FaultReason>,
    #[serde(rename = "faultcode", default)]
    faultcode: Option<String>,
    #[serde(rename = "faultstring", default)]
    faultstring: Option<String>,
    #[serde(rename = "detail", default)]
    detail: Option<FaultDetail>,
}

/// SOAP 1.1 `detail` as Serviceplatformen fills it: `ServiceplatformFault/ErrorList/Error/ErrorCode`.
#[derive(Deserialize, Default)]
struct FaultDetail {
    #[serde(rename = "ServiceplatformFault", default)]
    fault: Option<ServiceplatformFault>,
}

#[derive(Deserialize, Default)]
struct ServiceplatformFault {
    #[serde(rename = "ErrorList", default)]
    errors: Option<ErrorList>,
}

#[derive(Deserialize, Default)]
struct ErrorList {
    #[serde(rename = "Error", default)]
    errors: Vec<ServiceplatformError>,
}

#[derive(Deserialize, Default)]
struct ServiceplatformError {
    #[serde(rename = "ErrorCode", default)]
    code: Option<String>,
}

#[derive(Deserialize, Default)]
struct FaultCode {
    #[serde(rename = "Value", default)]
    value: Option<String>,
    #[serde(rename = "Subcode", default)]
    subcode: Option<Box<FaultCode>>,
}

#[derive(Deserialize, Default)]
struct FaultReason {
    #[serde(rename = "Text", default)]
    text: Vec<FaultText>,
}

#[derive(Deserialize, Default)]
struct FaultText {
    #[serde(rename = "$text", default)]
    text: Option<String>,
}

fn strip_prefix(qname: &str) -> String {
    qname
        .trim()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn parse_fault(xml: &str) -> Result<SoapFault, EnvelopeError> {
    let fault: FaultXml = quick_xml::de::from_str(xml)
        .map_err(|e| envelope_error(format!("unreadable SOAP Fault: {e}")))?;
    // SOAP 1.1 says Client/Server where SOAP 1.2 says Sender/Receiver.
    let code = match fault.code.as_ref().and_then(|c| c.value.clone()) {
        Some(value) => strip_prefix(&value),
        None => match fault.faultcode.as_deref().map(strip_prefix).as_deref() {
            Some("Client") => "Sender".to_owned(),
            Some("Server") => "Receiver".to_owned(),
            Some(other) => other.to_owned(),
            None => String::new(),
        },
    };
    let subcode = fault
        .code
        .as_ref()
        .and_then(|c| c.subcode.as_ref())
        .and_then(|s| s.value.as_deref())
        .map(strip_prefix)
        .or_else(|| {
            fault
                .detail
                .and_then(|d| d.fault)
                .and_then(|f| f.errors)
                .and_then(|l| l.errors.into_iter().find_map(|e| e.code))
                .map(|c| strip_prefix(&c))
        });
    let reason = fault
        .reason
        .map(|r| {
            r.text
                .into_iter()
                .filter_map(|t| t.text)
                .collect::<Vec<_>>()
                .join(" / ")
        })
        .or(fault.faultstring)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(SoapFault {
        code,
        subcode,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_found_under_any_prefixes() {
        let xml = br#"<?xml version="1.0"?><S:Envelope xmlns:S="http://www.w3.org/2003/05/soap-envelope"><S:Header/><S:Body><ns3:SoegOutput xmlns:ns2="urn:oio:sagdok:3.0.0" xmlns:ns3="http://stoettesystemerne.dk/organisation/bruger/6/"><ns2:StandardRetur><ns2:StatusKode>44</ns2:StatusKode></ns2:StandardRetur></ns3:SoegOutput></S:Body></S:Envelope>"#;
        match read_body(xml).unwrap() {
            Body::Payload {
                namespace,
                local_name,
                xml,
            } => {
                assert_eq!(
                    namespace,
                    "http://stoettesystemerne.dk/organisation/bruger/6/"
                );
                assert_eq!(local_name, "SoegOutput");
                assert!(xml.starts_with("<ns3:SoegOutput"));
                assert!(xml.ends_with("</ns3:SoegOutput>"));
            }
            Body::Fault(fault) => panic!("unexpected fault {fault:?}"),
        }
    }

    #[test]
    fn a_soap_fault_yields_its_code_subcode_and_reason() {
        let xml = br#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>x:ServiceAgreementNotFound</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">No service agreement</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
        let Body::Fault(fault) = read_body(xml).unwrap() else {
            panic!("no fault")
        };
        assert_eq!(fault.code, "Sender");
        assert_eq!(fault.subcode.as_deref(), Some("ServiceAgreementNotFound"));
        assert_eq!(fault.reason, "No service agreement");
    }

    #[test]
    fn a_wrapped_payload_and_a_soap11_fault_are_read() {
        let xml = br#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><w:SoegResponse xmlns:w="urn:w"><o:SoegOutput xmlns:o="urn:o"><x/></o:SoegOutput></w:SoegResponse></S:Body></S:Envelope>"#;
        let (wrapper, body) = read_body_in(xml, true).unwrap();
        assert_eq!(
            wrapper,
            Some(("urn:w".to_owned(), "SoegResponse".to_owned()))
        );
        let Body::Payload {
            namespace,
            local_name,
            xml: element,
        } = body
        else {
            panic!("no payload")
        };
        assert_eq!(
            (namespace.as_str(), local_name.as_str()),
            ("urn:o", "SoegOutput")
        );
        assert_eq!(
            element,
            r#"<o:SoegOutput xmlns:o="urn:o"><x/></o:SoegOutput>"#
        );
        let empty = br#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><w:SoegResponse xmlns:w="urn:w"></w:SoegResponse></S:Body></S:Envelope>"#;
        assert!(read_body_in(empty, true).is_err());

        let fault = br#"<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body><S:Fault><faultcode>S:Server</faultcode><faultstring>busy</faultstring><detail><f:ServiceplatformFault xmlns:f="http://serviceplatformen.dk/xml/schemas/ServiceplatformFault/1/"><f:ErrorList><f:Error><f:ErrorCode>Throttled</f:ErrorCode><f:ErrorText>busy</f:ErrorText></f:Error></f:ErrorList></f:ServiceplatformFault></detail></S:Fault></S:Body></S:Envelope>"#;
        let (wrapper, Body::Fault(fault)) = read_body_in(fault, true).unwrap() else {
            panic!("no fault")
        };
        assert_eq!(wrapper, None);
        assert_eq!(fault.code, "Receiver");
        assert_eq!(fault.subcode.as_deref(), Some("Throttled"));
        assert_eq!(fault.reason, "busy");
    }

    #[test]
    fn a_truncated_or_foreign_document_is_an_error_not_a_panic() {
        assert!(
            read_body(
                b"<S:Envelope xmlns:S=\"http://www.w3.org/2003/05/soap-envelope\"><S:Body><a>"
            )
            .is_err()
        );
        assert!(read_body(b"<html><body>503</body></html>").is_err());
        assert!(read_body(b"<S:Envelope xmlns:S=\"urn:wrong\"><S:Body/></S:Envelope>").is_err());
        assert!(read_body(b"").is_err());
        assert!(read_body(&[0xff, 0xfe]).is_err());
    }
}
