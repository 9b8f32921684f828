//! The simulator's own XML-DSig: a small element tree, exclusive c14n over it, signing the assertions it issues and verifying what clients send.
//!
//! Deliberately a second implementation (a tree, where the client streams events), so that a
//! client's signature that this module accepts was checked by code that shares nothing with it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use ring::digest;
use ring::signature;

pub(crate) const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
pub(crate) const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
pub(crate) const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub(crate) const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";
pub(crate) const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
pub(crate) const STR_TRANSFORM: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#STR-Transform";

/// An element of a parsed document.
#[derive(Clone, Debug, Default)]
pub(crate) struct Element {
    pub prefix: String,
    pub local: String,
    /// Namespace declarations on this element (`""` = default).
    pub declarations: Vec<(String, String)>,
    /// Attributes other than declarations: (prefix, local name, value).
    pub attributes: Vec<(String, String, String)>,
    pub children: Vec<Node>,
    /// Byte range in the source document.
    pub span: (usize, usize),
}

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Element(Element),
    /// Character data, references expanded and line ends normalized.
    Text(String),
}

impl Element {
    pub(crate) fn attribute(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(_, l, _)| l == local)
            .map(|(_, _, v)| v.as_str())
    }

    pub(crate) fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub(crate) fn child(&self, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.local == local)
    }

    /// The first descendant (or self) with this local name, depth first.
    pub(crate) fn find(&self, local: &str) -> Option<&Element> {
        if self.local == local {
            return Some(self);
        }
        self.elements().find_map(|e| e.find(local))
    }

    /// The element (or descendant) whose `Id`/`ID` attribute is `id`.
    pub(crate) fn by_id(&self, id: &str) -> Option<&Element> {
        if self
            .attributes
            .iter()
            .any(|(_, l, v)| (l == "Id" || l == "ID") && v == id)
        {
            return Some(self);
        }
        self.elements().find_map(|e| e.by_id(id))
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        for node in &self.children {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => out.push_str(&e.text()),
            }
        }
        out.trim().to_owned()
    }
}

fn reference(name: &str) -> Result<char, String> {
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        n => {
            let number = n.strip_prefix('#').ok_or(format!("unknown entity &{n};"))?;
            let code = match number.strip_prefix('x') {
                Some(h) => u32::from_str_radix(h, 16).map_err(|e| e.to_string())?,
                None => number
                    .parse()
                    .map_err(|e: std::num::ParseIntError| e.to_string())?,
            };
            char::from_u32(code).ok_or(format!("bad character reference &{n};"))
        }
    }
}

fn expand(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut parts = text.split('&');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        let (name, rest) = part.split_once(';').ok_or("unterminated reference")?;
        out.push(reference(name)?);
        out.push_str(rest);
    }
    Ok(out)
}

fn eol(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fn split(name: &str) -> (String, String) {
    match name.split_once(':') {
        Some((p, l)) => (p.to_owned(), l.to_owned()),
        None => (String::new(), name.to_owned()),
    }
}

fn element_of(tag: &BytesStart<'_>, start: usize) -> Result<Element, String> {
    let (prefix, local) = split(&String::from_utf8_lossy(tag.name().as_ref()));
    let mut element = Element {
        prefix,
        local,
        span: (start, start),
        ..Element::default()
    };
    for attribute in tag.attributes().with_checks(true) {
        let attribute = attribute.map_err(|e| e.to_string())?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let raw = String::from_utf8_lossy(&attribute.value);
        let normalized: String = eol(&raw)
            .chars()
            .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
            .collect();
        let value = expand(&normalized)?;
        if key == "xmlns" {
            element.declarations.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            element.declarations.push((p.to_owned(), value));
        } else {
            let (p, l) = split(&key);
            element.attributes.push((p, l, value));
        }
    }
    Ok(element)
}

/// Parses a document into its root element.
pub(crate) fn parse(document: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(document);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let position = usize::try_from(reader.buffer_position()).unwrap_or(0);
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML: {e}"))?;
        let end = usize::try_from(reader.buffer_position()).unwrap_or(0);
        match event {
            Event::Start(tag) => stack.push(element_of(&tag, position)?),
            Event::Empty(tag) => {
                let mut element = element_of(&tag, position)?;
                element.span.1 = end;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => return Ok(element),
                }
            }
            Event::End(_) => {
                let mut element = stack.pop().ok_or("unbalanced end tag")?;
                element.span.1 = end;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => return Ok(element),
                }
            }
            Event::Text(text) => {
                if let Some(parent) = stack.last_mut() {
                    parent
                        .children
                        .push(Node::Text(eol(&String::from_utf8_lossy(&text))));
                }
            }
            Event::CData(data) => {
                if let Some(parent) = stack.last_mut() {
                    parent
                        .children
                        .push(Node::Text(eol(&String::from_utf8_lossy(&data))));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(parent) = stack.last_mut() {
                    let c = reference(&String::from_utf8_lossy(&r))?;
                    parent.children.push(Node::Text(c.to_string()));
                }
            }
            Event::Eof => return Err("no root element".to_owned()),
            _ => {}
        }
    }
}

/// Exclusive c14n (no comments) of the element `target` inside `root`, leaving out the
/// descendant whose span starts at `exclude`.
pub(crate) fn canonical(
    root: &Element,
    target: &Element,
    exclude: Option<usize>,
) -> Result<String, String> {
    let scope =
        scope_of(root, target.span.0, Vec::new()).ok_or("the element is not in the document")?;
    let mut out = String::new();
    render(target, &scope, &[], exclude, &mut out)?;
    Ok(out)
}

/// The namespace bindings in scope at the element starting at `start` (outermost first).
fn scope_of(
    element: &Element,
    start: usize,
    mut inherited: Vec<(String, String)>,
) -> Option<Vec<(String, String)>> {
    inherited.extend(element.declarations.iter().cloned());
    if element.span.0 == start {
        return Some(inherited);
    }
    element
        .elements()
        .find(|e| e.span.0 <= start && start < e.span.1)
        .and_then(|e| scope_of(e, start, inherited))
}

fn lookup<'a>(scope: &'a [(String, String)], prefix: &str) -> Option<&'a str> {
    if prefix == "xml" {
        return Some("http://www.w3.org/XML/1998/namespace");
    }
    scope
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| u.as_str())
}

fn render(
    element: &Element,
    scope: &[(String, String)],
    output: &[(String, String)],
    exclude: Option<usize>,
    out: &mut String,
) -> Result<(), String> {
    let mut needed: Vec<(String, String)> = Vec::new();
    let mut prefixes = vec![element.prefix.clone()];
    prefixes.extend(
        element
            .attributes
            .iter()
            .filter(|(p, _, _)| !p.is_empty() && p != "xml")
            .map(|(p, _, _)| p.clone()),
    );
    for prefix in prefixes {
        if needed.iter().any(|(p, _)| *p == prefix) {
            continue;
        }
        let uri = lookup(scope, &prefix).unwrap_or_default();
        if !prefix.is_empty() && uri.is_empty() {
            return Err(format!("undeclared prefix {prefix}"));
        }
        let shown = lookup(output, &prefix).unwrap_or_default();
        if shown != uri {
            needed.push((prefix, uri.to_owned()));
        }
    }
    needed.sort();
    let mut attributes: Vec<(String, &str, &str, &str)> = element
        .attributes
        .iter()
        .map(|(p, l, v)| {
            let uri = if p.is_empty() {
                String::new()
            } else {
                lookup(scope, p).unwrap_or_default().to_owned()
            };
            (uri, p.as_str(), l.as_str(), v.as_str())
        })
        .collect();
    attributes.sort_by(|a, b| (a.0.as_str(), a.2).cmp(&(b.0.as_str(), b.2)));
    let name = if element.prefix.is_empty() {
        element.local.clone()
    } else {
        format!("{}:{}", element.prefix, element.local)
    };
    out.push('<');
    out.push_str(&name);
    for (prefix, uri) in &needed {
        if prefix.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            out.push_str(&format!(" xmlns:{prefix}=\""));
        }
        out.push_str(&attribute_escape(uri));
        out.push('"');
    }
    for (_, prefix, local, value) in &attributes {
        out.push(' ');
        if !prefix.is_empty() {
            out.push_str(prefix);
            out.push(':');
        }
        out.push_str(local);
        out.push_str("=\"");
        out.push_str(&attribute_escape(value));
        out.push('"');
    }
    out.push('>');
    let mut inner_scope = scope.to_vec();
    let mut child_output = output.to_vec();
    child_output.extend(needed.iter().cloned());
    for node in &element.children {
        match node {
            Node::Text(text) => out.push_str(&text_escape(text)),
            Node::Element(child) if Some(child.span.0) == exclude => {}
            Node::Element(child) => {
                inner_scope.truncate(scope.len());
                inner_scope.extend(child.declarations.iter().cloned());
                render(child, &inner_scope, &child_output, exclude, out)?;
            }
        }
    }
    out.push_str("</");
    out.push_str(&name);
    out.push('>');
    Ok(())
}

fn text_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\r', "&#xD;")
}

fn attribute_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('\t', "&#x9;")
        .replace('\n', "&#xA;")
        .replace('\r', "&#xD;")
}

pub(crate) fn sha256_base64(data: &[u8]) -> String {
    BASE64.encode(digest::digest(&digest::SHA256, data))
}

/// The PKCS#1 RSA public key of a DER certificate.
pub(crate) fn rsa_public_key(certificate: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

pub(crate) fn verify_rsa_sha256(certificate: &[u8], data: &[u8], signature_value: &[u8]) -> bool {
    rsa_public_key(certificate).is_some_and(|key| {
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
            .verify(data, signature_value)
            .is_ok()
    })
}

/// Checks a `ds:Signature` element inside `root`: every Reference digest (by `Id`, with the
/// exc-c14n, enveloped-signature or STR transforms) and the signature value with `certificate`.
/// Returns the IDs referenced (for STR references, the assertion's ID).
pub(crate) fn verify_signature(
    root: &Element,
    signature: &Element,
    certificate: &[u8],
) -> Result<Vec<String>, String> {
    let signed_info = signature.child("SignedInfo").ok_or("no SignedInfo")?;
    let method = signed_info
        .child("SignatureMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .unwrap_or_default();
    if method != RSA_SHA256 {
        return Err(format!("signature method {method:?}; expected rsa-sha256"));
    }
    let c14n = signed_info
        .child("CanonicalizationMethod")
        .and_then(|m| m.attribute("Algorithm"))
        .unwrap_or_default();
    if c14n != EXC_C14N {
        return Err(format!(
            "canonicalization {c14n:?}; expected exclusive c14n"
        ));
    }
    let mut referenced = Vec::new();
    for reference in signed_info.elements().filter(|e| e.local == "Reference") {
        let uri = reference.attribute("URI").unwrap_or_default();
        let id = uri
            .strip_prefix('#')
            .ok_or(format!("reference {uri:?} is not local"))?;
        let transforms: Vec<&str> = reference
            .child("Transforms")
            .map(|t| {
                t.elements()
                    .filter_map(|e| e.attribute("Algorithm"))
                    .collect()
            })
            .unwrap_or_default();
        let digest_method = reference
            .child("DigestMethod")
            .and_then(|m| m.attribute("Algorithm"))
            .unwrap_or_default();
        if digest_method != SHA256 {
            return Err(format!(
                "digest {digest_method:?} of {uri}; expected sha256"
            ));
        }
        let mut target = root
            .by_id(id)
            .ok_or(format!("reference {uri}: no such element"))?;
        let mut target_id = id.to_owned();
        let mut exclude = None;
        for transform in &transforms {
            match *transform {
                EXC_C14N => {}
                ENVELOPED => exclude = Some(signature.span.0),
                STR_TRANSFORM => {
                    let assertion_id =
                        target
                            .find("KeyIdentifier")
                            .map(Element::text)
                            .ok_or(format!(
                                "reference {uri}: the SecurityTokenReference has no KeyIdentifier"
                            ))?;
                    target = root
                        .by_id(&assertion_id)
                        .ok_or(format!("reference {uri}: no assertion {assertion_id}"))?;
                    target_id = assertion_id;
                }
                other => return Err(format!("reference {uri}: unsupported transform {other}")),
            }
        }
        let expected = reference
            .child("DigestValue")
            .map(Element::text)
            .unwrap_or_default();
        let actual = sha256_base64(canonical(root, target, exclude)?.as_bytes());
        if actual != expected {
            return Err(format!(
                "the digest of {uri} does not match: the {} element was changed after signing",
                target.local
            ));
        }
        referenced.push(target_id);
    }
    let canonical_signed_info = canonical(root, signed_info, None)?;
    let value = BASE64
        .decode(
            signature
                .child("SignatureValue")
                .map(Element::text)
                .unwrap_or_default()
                .split_whitespace()
                .collect::<String>(),
        )
        .map_err(|e| format!("SignatureValue is not base64: {e}"))?;
    if !verify_rsa_sha256(certificate, canonical_signed_info.as_bytes(), &value) {
        return Err("the signature value does not verify with the signer's certificate".to_owned());
    }
    Ok(referenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_renders_used_namespaces_sorted_attributes_and_escapes() {
        let doc = "<s:E xmlns:s=\"urn:s\" xmlns:u=\"urn:u\" xmlns:x=\"urn:x\"><s:H><a xmlns=\"urn:d\" u:Id=\"i\" b=\"1&#x9;\" s:m=\"1\">t&amp;\r\n<c/><d xmlns=\"\"/></a></s:H></s:E>";
        let root = parse(doc).unwrap();
        let target = root.by_id("i").unwrap();
        assert_eq!(
            canonical(&root, target, None).unwrap(),
            "<a xmlns=\"urn:d\" xmlns:s=\"urn:s\" xmlns:u=\"urn:u\" b=\"1&#x9;\" s:m=\"1\" u:Id=\"i\">t&amp;\n<c></c><d xmlns=\"\"></d></a>"
        );
    }
}
