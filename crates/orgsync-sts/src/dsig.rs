//! XML-DSig as WS-Security uses it: one `Signature` with exclusive c14n, RSA-SHA256 and SHA-256 references to parts of the message, inserted where the document asks for it.
//!
//! The document is written first with the marker [`SIGNATURE_MARKER`] where the `Signature`
//! belongs (inside `wsse:Security`); every reference is digested from that text, the
//! `Signature` is inserted, and `SignedInfo` is canonicalized *in place* (so the namespaces in
//! scope are the real ones) and signed. References to a SAML assertion go through a
//! `SecurityTokenReference` with the STR-Transform: the digest is over the exclusive c14n of
//! the assertion itself (WSS SOAP Message Security 1.1 §8.3).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest;

use crate::c14n::{self, C14nError};
use crate::identity::{ClientIdentity, IdentityError};
use crate::wire::{DSIG_NS, EXC_C14N, RSA_SHA256, SHA256, STR_TRANSFORM, WSSE_NS};
use crate::xml::XmlWriter;

/// Where the `Signature` goes in a document to be signed.
pub const SIGNATURE_MARKER: &str = "<!--orgsync:signature-->";

const VALUE_MARKER: &str = "orgsync:signature-value";

/// One signed part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedPart {
    /// The element whose `Id` (`wsu:Id`, `ID`) is this, with the exc-c14n transform.
    Id(String),
    /// A SAML assertion by its `ID`, referenced through the SecurityTokenReference whose
    /// `wsu:Id` is `reference_id`, with the STR-Transform.
    Assertion {
        /// `wsu:Id` of the `SecurityTokenReference`.
        reference_id: String,
        /// `ID` of the `saml:Assertion`.
        assertion_id: String,
    },
}

/// Why signing failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DsigError {
    /// A referenced element is missing or cannot be canonicalized.
    #[error("cannot sign: {0}")]
    Document(String),
    /// The key refused to sign.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<C14nError> for DsigError {
    fn from(error: C14nError) -> Self {
        DsigError::Document(error.to_string())
    }
}

/// Base64 of the SHA-256 of `data`.
pub fn sha256_base64(data: &[u8]) -> String {
    BASE64.encode(digest::digest(&digest::SHA256, data))
}

/// The exclusive c14n of the element with this `Id`/`ID`.
pub fn canonical_by_id(document: &str, id: &str) -> Result<String, DsigError> {
    let at = c14n::find_by_id(document, id)
        .ok_or_else(|| DsigError::Document(format!("no element has the Id {id:?}")))?;
    Ok(c14n::canonicalize(document, at, None)?)
}

/// Signs `document` at [`SIGNATURE_MARKER`]: one reference per part, `key_info` (XML, already
/// built, in the dsig default namespace) names the key.
pub fn sign(
    document: &str,
    parts: &[SignedPart],
    key_info: &str,
    identity: &ClientIdentity,
) -> Result<String, DsigError> {
    if !document.contains(SIGNATURE_MARKER) {
        return Err(DsigError::Document(
            "the document has no signature marker".to_owned(),
        ));
    }
    let mut w = XmlWriter::new();
    w.start("Signature", &[("xmlns", DSIG_NS)]);
    w.start("SignedInfo", &[]);
    w.start("CanonicalizationMethod", &[("Algorithm", EXC_C14N)]);
    w.end("CanonicalizationMethod");
    w.start("SignatureMethod", &[("Algorithm", RSA_SHA256)]);
    w.end("SignatureMethod");
    for part in parts {
        let (uri, digest_value, str_transform) = match part {
            SignedPart::Id(id) => (
                id,
                sha256_base64(canonical_by_id(document, id)?.as_bytes()),
                false,
            ),
            SignedPart::Assertion {
                reference_id,
                assertion_id,
            } => (
                reference_id,
                sha256_base64(canonical_by_id(document, assertion_id)?.as_bytes()),
                true,
            ),
        };
        w.start("Reference", &[("URI", format!("#{uri}").as_str())]);
        w.start("Transforms", &[]);
        if str_transform {
            w.start("Transform", &[("Algorithm", STR_TRANSFORM)]);
            w.start("o:TransformationParameters", &[("xmlns:o", WSSE_NS)]);
            w.start("CanonicalizationMethod", &[("Algorithm", EXC_C14N)]);
            w.end("CanonicalizationMethod");
            w.end("o:TransformationParameters");
            w.end("Transform");
        } else {
            w.start("Transform", &[("Algorithm", EXC_C14N)]);
            w.end("Transform");
        }
        w.end("Transforms");
        w.start("DigestMethod", &[("Algorithm", SHA256)]);
        w.end("DigestMethod");
        w.leaf("DigestValue", &digest_value);
        w.end("Reference");
    }
    w.end("SignedInfo");
    w.leaf("SignatureValue", VALUE_MARKER);
    w.raw(key_info);
    w.end("Signature");
    let with_signature = document.replacen(SIGNATURE_MARKER, &w.finish(), 1);

    let marker_at = document.find(SIGNATURE_MARKER).unwrap_or_default();
    let signed_info_at = c14n::find_by_local_name(&with_signature, "SignedInfo", marker_at)
        .ok_or_else(|| DsigError::Document("SignedInfo was not inserted".to_owned()))?;
    let signed_info = c14n::canonicalize(&with_signature, signed_info_at, None)?;
    let value = BASE64.encode(identity.sign_rsa_sha256(signed_info.as_bytes())?);
    Ok(with_signature.replacen(VALUE_MARKER, &value, 1))
}
