//! Exclusive XML canonicalization (`http://www.w3.org/2001/10/xml-exc-c14n#`, without comments) of one element of a document, as XML-DSig references it.
//!
//! Written against the W3C recommendation and checked against libxml2 (`xmllint --exc-c14n`)
//! and `xmlsec1` in the tests. The element is found by its byte offset in the document (see
//! [`find_by_id`]); namespace declarations in scope come from its ancestors, and only the
//! *visibly utilized* ones are rendered (no `InclusiveNamespaces` prefix list: neither
//! KOMBIT's STS nor the Organisation services use one). One descendant subtree can be left
//! out, which is the enveloped-signature transform.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// Why a document could not be canonicalized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("canonicalization: {0}")]
pub struct C14nError(pub String);

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// One attribute of a start tag, decoded.
struct Attr {
    /// The prefix (`""` for none).
    prefix: String,
    local: String,
    value: String,
}

/// A parsed start tag: its name and its attributes, namespace declarations separated.
struct Tag {
    prefix: String,
    local: String,
    declarations: Vec<(String, String)>,
    attributes: Vec<Attr>,
}

fn parse_tag(start: &BytesStart<'_>) -> Result<Tag, C14nError> {
    let name = std::str::from_utf8(start.name().as_ref())
        .map_err(|e| C14nError(format!("element name is not UTF-8: {e}")))?
        .to_owned();
    let (prefix, local) = split_qname(&name);
    let mut declarations = Vec::new();
    let mut attributes = Vec::new();
    for attribute in start.attributes().with_checks(true) {
        let attribute = attribute.map_err(|e| C14nError(format!("bad attribute: {e}")))?;
        let key = std::str::from_utf8(attribute.key.as_ref())
            .map_err(|e| C14nError(format!("attribute name is not UTF-8: {e}")))?;
        let raw = std::str::from_utf8(&attribute.value)
            .map_err(|e| C14nError(format!("attribute value is not UTF-8: {e}")))?;
        let value = normalize_attribute(raw)?;
        if key == "xmlns" {
            declarations.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            declarations.push((p.to_owned(), value));
        } else {
            let (p, l) = split_qname(key);
            attributes.push(Attr {
                prefix: p.to_owned(),
                local: l.to_owned(),
                value,
            });
        }
    }
    Ok(Tag {
        prefix: prefix.to_owned(),
        local: local.to_owned(),
        declarations,
        attributes,
    })
}

fn split_qname(name: &str) -> (&str, &str) {
    match name.split_once(':') {
        Some((p, l)) => (p, l),
        None => ("", name),
    }
}

/// Attribute-value normalization (XML 1.0 §3.3.3 for CDATA attributes), then reference expansion.
fn normalize_attribute(raw: &str) -> Result<String, C14nError> {
    let eol = normalize_eol(raw);
    let spaced: String = eol
        .chars()
        .map(|c| if matches!(c, '\t' | '\n') { ' ' } else { c })
        .collect();
    unescape(&spaced)
}

fn normalize_eol(text: &str) -> String {
    if !text.contains('\r') {
        return text.to_owned();
    }
    text.replace("\r\n", "\n").replace('\r', "\n")
}

fn resolve_reference(name: &str) -> Result<char, C14nError> {
    let bad = || C14nError(format!("unknown or bad reference &{name};"));
    match name {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        _ => {
            let number = name.strip_prefix('#').ok_or_else(bad)?;
            let code = match number.strip_prefix('x') {
                Some(hex) => u32::from_str_radix(hex, 16).map_err(|_| bad())?,
                None => number.parse::<u32>().map_err(|_| bad())?,
            };
            char::from_u32(code).filter(|c| *c != '\0').ok_or_else(bad)
        }
    }
}

fn unescape(text: &str) -> Result<String, C14nError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let end = tail
            .find(';')
            .ok_or_else(|| C14nError("an unterminated reference".to_owned()))?;
        out.push(resolve_reference(&tail[..end])?);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn escape_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attribute(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

/// The namespace bindings in scope, innermost last.
#[derive(Default)]
struct Scopes {
    frames: Vec<Vec<(String, String)>>,
}

impl Scopes {
    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        self.frames
            .iter()
            .rev()
            .flat_map(|f| f.iter().rev())
            .find(|(p, _)| p == prefix)
            .map(|(_, uri)| uri.as_str())
    }
}

/// Canonicalizes the element starting at byte `start` of `document` (exclusive c14n without
/// comments). `exclude` is the byte offset of a descendant element left out with its subtree
/// (the enveloped-signature transform), if any.
pub fn canonicalize(
    document: &str,
    start: usize,
    exclude: Option<usize>,
) -> Result<String, C14nError> {
    let mut reader = Reader::from_str(document);
    reader.config_mut().check_end_names = true;
    let mut scopes = Scopes::default();
    // Inside the apex: the rendered namespace bindings per output element (innermost last).
    let mut rendered: Vec<Vec<(String, String)>> = Vec::new();
    let mut out = String::new();
    let mut depth_in = 0usize; // elements open inside the apex (apex included)
    let mut skip_depth = 0usize; // elements open inside an excluded subtree
    loop {
        let position = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader
            .read_event()
            .map_err(|e| C14nError(format!("malformed XML at byte {position}: {e}")))?;
        let inside = depth_in > 0;
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let empty = matches!(event, Event::Empty(_));
                let parsed = parse_tag(tag)?;
                scopes.frames.push(parsed.declarations.clone());
                if skip_depth > 0 {
                    if empty {
                        scopes.frames.pop();
                    } else {
                        skip_depth += 1;
                    }
                    continue;
                }
                if inside && exclude == Some(position) {
                    if empty {
                        scopes.frames.pop();
                    } else {
                        skip_depth = 1;
                    }
                    continue;
                }
                if inside || position == start {
                    render_start(&parsed, &scopes, &mut rendered, &mut out)?;
                    if empty {
                        out.push_str("</");
                        out.push_str(&qualified(&parsed.prefix, &parsed.local));
                        out.push('>');
                        rendered.pop();
                        scopes.frames.pop();
                        if depth_in == 0 {
                            return Ok(out);
                        }
                    } else {
                        depth_in += 1;
                    }
                } else if empty {
                    scopes.frames.pop();
                }
            }
            Event::End(ref tag) => {
                scopes.frames.pop();
                if skip_depth > 0 {
                    skip_depth -= 1;
                    continue;
                }
                if inside {
                    let name = std::str::from_utf8(tag.name().as_ref())
                        .map_err(|e| C14nError(format!("element name is not UTF-8: {e}")))?
                        .to_owned();
                    out.push_str("</");
                    out.push_str(&name);
                    out.push('>');
                    rendered.pop();
                    depth_in -= 1;
                    if depth_in == 0 {
                        return Ok(out);
                    }
                }
            }
            Event::Text(ref text) if inside && skip_depth == 0 => {
                let raw = std::str::from_utf8(text.as_ref())
                    .map_err(|e| C14nError(format!("text is not UTF-8: {e}")))?;
                escape_text(&normalize_eol(raw), &mut out);
            }
            Event::CData(ref data) if inside && skip_depth == 0 => {
                let raw = std::str::from_utf8(data.as_ref())
                    .map_err(|e| C14nError(format!("CDATA is not UTF-8: {e}")))?;
                escape_text(&normalize_eol(raw), &mut out);
            }
            Event::GeneralRef(ref reference) if inside && skip_depth == 0 => {
                let name = std::str::from_utf8(reference.as_ref())
                    .map_err(|e| C14nError(format!("reference is not UTF-8: {e}")))?;
                let c = resolve_reference(name)?;
                escape_text(c.encode_utf8(&mut [0u8; 4]), &mut out);
            }
            Event::PI(ref pi) if inside && skip_depth == 0 => {
                let raw = std::str::from_utf8(pi.as_ref())
                    .map_err(|e| C14nError(format!("processing instruction is not UTF-8: {e}")))?;
                out.push_str("<?");
                out.push_str(&normalize_eol(raw));
                out.push_str("?>");
            }
            Event::Eof => {
                return Err(C14nError(if inside {
                    "the document ends inside the element".to_owned()
                } else {
                    format!("no element starts at byte {start}")
                }));
            }
            _ => {}
        }
    }
}

fn qualified(prefix: &str, local: &str) -> String {
    if prefix.is_empty() {
        local.to_owned()
    } else {
        format!("{prefix}:{local}")
    }
}

fn render_start(
    tag: &Tag,
    scopes: &Scopes,
    rendered: &mut Vec<Vec<(String, String)>>,
    out: &mut String,
) -> Result<(), C14nError> {
    let already = |prefix: &str| -> Option<&str> {
        rendered
            .iter()
            .rev()
            .flat_map(|f| f.iter().rev())
            .find(|(p, _)| p == prefix)
            .map(|(_, uri)| uri.as_str())
    };
    // Visibly utilized prefixes: the element's own, and those of its prefixed attributes.
    let mut utilized: Vec<&str> = vec![tag.prefix.as_str()];
    for attribute in &tag.attributes {
        if !attribute.prefix.is_empty() && attribute.prefix != "xml" {
            utilized.push(attribute.prefix.as_str());
        }
    }
    let mut declarations: Vec<(String, String)> = Vec::new();
    for prefix in utilized {
        if declarations.iter().any(|(p, _)| p == prefix) {
            continue;
        }
        let uri = match scopes.lookup(prefix) {
            Some(uri) => uri,
            None if prefix.is_empty() => "",
            None => return Err(C14nError(format!("the prefix {prefix:?} is not declared"))),
        };
        if prefix.is_empty() && uri.is_empty() {
            // An empty default namespace is rendered only to undo a rendered non-empty one.
            if already("").is_some_and(|u| !u.is_empty()) {
                declarations.push((String::new(), String::new()));
            }
            continue;
        }
        if already(prefix) != Some(uri) {
            declarations.push((prefix.to_owned(), uri.to_owned()));
        }
    }
    declarations.sort_by(|a, b| a.0.cmp(&b.0));

    let mut attributes: Vec<(&str, &Attr)> = Vec::with_capacity(tag.attributes.len());
    for attribute in &tag.attributes {
        let uri = if attribute.prefix.is_empty() {
            ""
        } else {
            scopes.lookup(&attribute.prefix).ok_or_else(|| {
                C14nError(format!(
                    "the attribute prefix {:?} is not declared",
                    attribute.prefix
                ))
            })?
        };
        attributes.push((uri, attribute));
    }
    attributes.sort_by(|a, b| (a.0, a.1.local.as_str()).cmp(&(b.0, b.1.local.as_str())));

    out.push('<');
    out.push_str(&qualified(&tag.prefix, &tag.local));
    for (prefix, uri) in &declarations {
        out.push(' ');
        if prefix.is_empty() {
            out.push_str("xmlns");
        } else {
            out.push_str("xmlns:");
            out.push_str(prefix);
        }
        out.push_str("=\"");
        escape_attribute(uri, out);
        out.push('"');
    }
    for (_, attribute) in &attributes {
        out.push(' ');
        out.push_str(&qualified(&attribute.prefix, &attribute.local));
        out.push_str("=\"");
        escape_attribute(&attribute.value, out);
        out.push('"');
    }
    out.push('>');
    rendered.push(declarations);
    Ok(())
}

/// The namespace declarations in scope at the element starting at byte `start` (innermost
/// binding of each prefix; `""` is the default namespace), the element's own included.
pub fn namespaces_in_scope(
    document: &str,
    start: usize,
) -> Result<Vec<(String, String)>, C14nError> {
    let mut reader = Reader::from_str(document);
    let mut scopes = Scopes::default();
    loop {
        let position = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader
            .read_event()
            .map_err(|e| C14nError(format!("malformed XML at byte {position}: {e}")))?;
        match event {
            Event::Start(ref tag) | Event::Empty(ref tag) => {
                let parsed = parse_tag(tag)?;
                scopes.frames.push(parsed.declarations);
                if position == start {
                    let mut seen: Vec<(String, String)> = Vec::new();
                    for (prefix, uri) in scopes.frames.iter().rev().flat_map(|f| f.iter().rev()) {
                        if !seen.iter().any(|(p, _)| p == prefix) {
                            seen.push((prefix.clone(), uri.clone()));
                        }
                    }
                    seen.retain(|(p, uri)| !(p.is_empty() && uri.is_empty()));
                    return Ok(seen);
                }
                if matches!(event, Event::Empty(_)) {
                    scopes.frames.pop();
                }
            }
            Event::End(_) => {
                scopes.frames.pop();
            }
            Event::Eof => return Err(C14nError(format!("no element starts at byte {start}"))),
            _ => {}
        }
    }
}

/// The byte offset of the first element carrying an attribute whose local name is one of
/// `Id`/`ID`/`id` (any prefix, so `wsu:Id` too) with this value.
pub fn find_by_id(document: &str, id: &str) -> Option<usize> {
    find_element(document, |tag| {
        tag.attributes().flatten().any(|a| {
            let key = a.key.as_ref();
            let local = key.rsplit(|b| *b == b':').next().unwrap_or(key);
            matches!(local, b"Id" | b"ID" | b"id")
                && !key.starts_with(b"xmlns")
                && a.unescape_value().is_ok_and(|v| v == id)
        })
    })
}

/// The byte offset of the first element whose (prefix-free) local name is `local`, at or after `from`.
pub fn find_by_local_name(document: &str, local: &str, from: usize) -> Option<usize> {
    let tail = document.get(from..)?;
    find_element(tail, |tag| tag.local_name().as_ref() == local.as_bytes()).map(|at| at + from)
}

fn find_element(document: &str, matches: impl Fn(&BytesStart<'_>) -> bool) -> Option<usize> {
    let mut reader = Reader::from_str(document);
    loop {
        let position = usize::try_from(reader.buffer_position()).ok()?;
        match reader.read_event() {
            Ok(Event::Start(tag)) | Ok(Event::Empty(tag)) if matches(&tag) => {
                return Some(position);
            }
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

/// The byte range `start..end` of the element starting at `start` (its end tag included).
pub fn element_range(document: &str, start: usize) -> Option<std::ops::Range<usize>> {
    let tail = document.get(start..)?;
    let mut reader = Reader::from_str(tail);
    let mut depth = 0usize;
    loop {
        match reader.read_event().ok()? {
            Event::Start(_) => depth += 1,
            Event::Empty(_) if depth == 0 => break,
            Event::End(_) => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    break;
                }
            }
            Event::Eof => return None,
            _ => {}
        }
    }
    let end = usize::try_from(reader.buffer_position()).ok()?;
    Some(start..start + end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n_of(document: &str, id: &str) -> String {
        let at = find_by_id(document, id).expect("element found");
        canonicalize(document, at, None).expect("canonical")
    }

    #[test]
    fn only_visibly_utilized_namespaces_are_rendered_on_the_apex() {
        let doc = r#"<s:Envelope xmlns:s="urn:s" xmlns:a="urn:a" xmlns:u="urn:u" xmlns:unused="urn:x"><s:Header><a:To s:mustUnderstand="1" u:Id="_5">https://x/</a:To></s:Header></s:Envelope>"#;
        assert_eq!(
            c14n_of(doc, "_5"),
            r#"<a:To xmlns:a="urn:a" xmlns:s="urn:s" xmlns:u="urn:u" s:mustUnderstand="1" u:Id="_5">https://x/</a:To>"#
        );
    }

    #[test]
    fn attributes_sort_by_namespace_uri_then_local_name_and_empty_tags_open_and_close() {
        let doc = r#"<r xmlns:z="urn:a" xmlns:b="urn:b"><e b:x="1" z:y="2" c="3" a="4" Id="i"><f/></e></r>"#;
        assert_eq!(
            c14n_of(doc, "i"),
            r#"<e xmlns:b="urn:b" xmlns:z="urn:a" Id="i" a="4" c="3" z:y="2" b:x="1"><f></f></e>"#
        );
    }

    #[test]
    fn text_and_attribute_values_are_normalized_and_escaped_as_the_recommendation_says() {
        let doc = "<r><e Id=\"i\" v=\"a&#x9;b\tc&quot;d&gt;\">x\r\ny &amp; &#xD; &gt; &lt;<![CDATA[<z>]]></e></r>";
        assert_eq!(
            c14n_of(doc, "i"),
            "<e Id=\"i\" v=\"a&#x9;b c&quot;d>\">x\ny &amp; &#xD; &gt; &lt;&lt;z&gt;</e>"
        );
    }

    #[test]
    fn a_default_namespace_is_rendered_once_and_undone_when_a_child_leaves_it() {
        let doc = r#"<r xmlns="urn:d"><e Id="i"><f xmlns=""><g/></f><h/></e></r>"#;
        assert_eq!(
            c14n_of(doc, "i"),
            r#"<e xmlns="urn:d" Id="i"><f xmlns=""><g></g></f><h></h></e>"#
        );
    }

    #[test]
    fn the_excluded_subtree_is_left_out_and_comments_are_dropped() {
        let doc = r#"<a:A xmlns:a="urn:a" ID="x"><!-- c --><a:B/><Signature xmlns="urn:ds"><v/></Signature><a:C>t</a:C></a:A>"#;
        let apex = find_by_id(doc, "x").unwrap();
        let signature = find_by_local_name(doc, "Signature", 0).unwrap();
        assert_eq!(
            canonicalize(doc, apex, Some(signature)).unwrap(),
            r#"<a:A xmlns:a="urn:a" ID="x"><a:B></a:B><a:C>t</a:C></a:A>"#
        );
        let range = element_range(doc, signature).unwrap();
        assert!(doc[range].ends_with("</Signature>"));
    }

    #[test]
    fn an_undeclared_prefix_is_an_error_not_a_guess() {
        let doc = r#"<r><x:e Id="i"/></r>"#;
        assert!(canonicalize(doc, find_by_id(doc, "i").unwrap(), None).is_err());
    }
}
