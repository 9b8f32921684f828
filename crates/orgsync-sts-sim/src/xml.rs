//! XML plumbing for the simulator: an escaping writer, and the reader that finds a request's action, transaction id and body payload.

use quick_xml::NsReader;
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::wire::{AUTHORITY_CONTEXT_NS, Dialect};

/// Builds XML text; names carry their prefixes.
#[derive(Debug, Default)]
pub(crate) struct XmlWriter {
    buf: String,
}

impl XmlWriter {
    pub(crate) fn new() -> XmlWriter {
        XmlWriter {
            buf: String::with_capacity(4096),
        }
    }

    pub(crate) fn start<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        name: &str,
        attributes: &[(K, V)],
    ) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        for (key, value) in attributes {
            self.buf.push(' ');
            self.buf.push_str(key.as_ref());
            self.buf.push_str("=\"");
            self.buf.push_str(&escape(value.as_ref()));
            self.buf.push('"');
        }
        self.buf.push('>');
        self
    }

    pub(crate) fn open(&mut self, name: &str) -> &mut Self {
        self.start::<&str, &str>(name, &[])
    }

    pub(crate) fn end(&mut self, name: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self
    }

    pub(crate) fn leaf(&mut self, name: &str, text: &str) -> &mut Self {
        self.open(name);
        self.buf.push_str(&escape(text));
        self.end(name)
    }

    pub(crate) fn empty(&mut self, name: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str("/>");
        self
    }

    pub(crate) fn raw(&mut self, xml: &str) -> &mut Self {
        self.buf.push_str(xml);
        self
    }

    pub(crate) fn finish(self) -> String {
        self.buf
    }
}

/// What the simulator needs from a request envelope.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// `wsa:Action`, when present.
    pub wsa_action: Option<String>,
    /// `RequestHeader/TransactionUUID`, when present.
    pub transaction: Option<String>,
    /// The payload's namespace.
    pub namespace: String,
    /// The payload's local name.
    pub local_name: String,
    /// The payload element's text.
    pub payload: &'a str,
    /// v5: the wrapper around the payload, `(namespace, local name)`.
    pub wrapper: Option<(String, String)>,
    /// v5: `AuthorityContext/MunicipalityCVR` in the wrapper.
    pub authority_cvr: Option<String>,
}

/// Reads a request envelope of the dialect (SOAP 1.2, or SOAP 1.1 with the v5 wrapper).
pub(crate) fn read_request(text: &str, dialect: Dialect) -> Result<Request<'_>, String> {
    let soap_ns = dialect.soap_namespace();
    let wrapped = dialect == Dialect::Serviceplatformen5;
    let mut reader = NsReader::from_str(text);
    let mut path: Vec<(String, String)> = Vec::new();
    let mut wsa_action = None;
    let mut transaction = None;
    let mut wrapper: Option<(String, String)> = None;
    let mut authority_cvr = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let (resolved, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        let ns = match resolved {
            ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let in_body = path.len() == 2 && path[1].1 == "Body" && path[1].0 == soap_ns;
                if path.is_empty() && (local != "Envelope" || ns != soap_ns) {
                    return Err(format!(
                        "the root is {{{ns}}}{local}, not a SOAP Envelope in {soap_ns}"
                    ));
                }
                if in_body && wrapped && matches!(event, Event::Start(_)) {
                    wrapper = Some((ns.clone(), local.clone()));
                    path.push((ns, local));
                    continue;
                }
                let in_wrapper = wrapped && path.len() == 3 && wrapper.is_some();
                let context = ns == AUTHORITY_CONTEXT_NS
                    || ns == "http://serviceplatformen.dk/xml/schemas/CallContext/1/";
                if (in_body && !wrapped) || (in_wrapper && !context) {
                    let end = element_end(text, before)?;
                    return Ok(Request {
                        wsa_action,
                        transaction,
                        namespace: ns,
                        local_name: local,
                        payload: &text[before..end],
                        wrapper,
                        authority_cvr,
                    });
                }
                if matches!(event, Event::Start(_)) {
                    path.push((ns, local));
                }
            }
            Event::Text(t) => {
                let value = t.decode().map(|c| c.trim().to_owned()).unwrap_or_default();
                if let Some((_, local)) = path.last() {
                    if local == "Action" && path.len() == 3 {
                        wsa_action = Some(value);
                    } else if local == "TransactionUUID" {
                        transaction = Some(value);
                    } else if local == "MunicipalityCVR" && path.len() == 5 {
                        authority_cvr = Some(value);
                    }
                }
            }
            Event::End(_) => {
                path.pop();
                if path.len() == 1 {
                    // Left the Body (or Header) without a payload.
                }
            }
            Event::Eof => return Err("no payload in the SOAP Body".to_owned()),
            _ => {}
        }
    }
}

fn element_end(text: &str, start: usize) -> Result<usize, String> {
    let tail = text.get(start..).ok_or("bad offset")?;
    let mut reader = NsReader::from_str(tail);
    let mut depth = 0usize;
    loop {
        match reader
            .read_event()
            .map_err(|e| format!("malformed XML in the Body: {e}"))?
        {
            Event::Start(_) => depth += 1,
            Event::Empty(_) if depth == 0 => break,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Event::Eof => return Err("the request ends inside the Body".to_owned()),
            _ => {}
        }
    }
    Ok(start + usize::try_from(reader.buffer_position()).unwrap_or(0))
}
