//! The supplier's system certificate (FOCES/OCES3 "funktionscertifikat"): loaded once from PKCS#12 or PEM, used for mutual TLS, the STS request signature and holder-of-key signatures.
//!
//! The private key never leaves this module except as the TLS identity handed to the HTTP
//! client; `Debug` shows the certificate's subject only, and every error names the file or the
//! step, never key material or the password.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// Why the certificate or key could not be loaded or used. Never retriable: fix the file or the password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The PKCS#12 file could not be opened (wrong password, damaged file, unsupported encryption).
    #[error(
        "the PKCS#12 file could not be read: {0} (check the password variable and that the file is a .p12/.pfx)"
    )]
    Pkcs12(String),
    /// A PEM file holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// The key is not an RSA key or does not match the certificate.
    #[error("{0}")]
    Key(String),
    /// The certificate could not be parsed.
    #[error("the certificate could not be parsed: {0}")]
    Certificate(String),
    /// Signing failed (should not happen with a valid RSA key).
    #[error("signing failed")]
    Signing,
}

/// What `orgsync config check` shows about a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name (RFC 4514 style).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl CertificateInfo {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<CertificateInfo, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let time = |t: x509_parser::time::ASN1Time| {
            DateTime::<Utc>::from_timestamp(t.timestamp(), 0).unwrap_or_default()
        };
        Ok(CertificateInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }

    /// Whole days from `now` until the certificate expires (negative once expired).
    pub fn days_until_expiry(&self, now: DateTime<Utc>) -> i64 {
        (self.not_after - now).num_days()
    }
}

/// The system certificate and its private key.
pub struct ClientIdentity {
    certificate: Vec<u8>,
    chain: Vec<Vec<u8>>,
    key: RsaKeyPair,
    /// PKCS#8 DER of the key, kept only to build the TLS identity; wiped on drop.
    key_pkcs8: Zeroizing<Vec<u8>>,
    info: CertificateInfo,
    rng: SystemRandom,
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("subject", &self.info.subject)
            .field("not_after", &self.info.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// Loads a PKCS#12 (`.p12`/`.pfx`) file's bytes: the first private key with its certificate chain.
    pub fn from_pkcs12(data: &[u8], password: &str) -> Result<ClientIdentity, IdentityError> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            data,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| IdentityError::Pkcs12(e.to_string()))?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| {
            IdentityError::Pkcs12("it holds no private key with a certificate".to_owned())
        })?;
        let certs: Vec<Vec<u8>> = chain.certs().iter().map(|c| c.as_der().to_vec()).collect();
        let key = Zeroizing::new(chain.key().as_der().to_vec());
        ClientIdentity::from_parts(certs, key)
    }

    /// Loads a PEM certificate (optionally followed by its chain) and a PEM private key
    /// (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`; the key may also sit in the certificate file).
    pub fn from_pem(
        certificate_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<ClientIdentity, IdentityError> {
        let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(certificate_pem)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect();
        if certs.is_empty() {
            return Err(IdentityError::Pem(
                "the certificate file holds no PEM CERTIFICATE block".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            IdentityError::Pem(
                "the key file holds no PEM private key (PRIVATE KEY or RSA PRIVATE KEY)".to_owned(),
            )
        })?;
        let pkcs8 = match key {
            PrivateKeyDer::Pkcs8(k) => Zeroizing::new(k.secret_pkcs8_der().to_vec()),
            PrivateKeyDer::Pkcs1(k) => Zeroizing::new(pkcs1_to_pkcs8(k.secret_pkcs1_der())),
            _ => {
                return Err(IdentityError::Key(
                    "the private key is not an RSA key; STS needs RSA (rsa-sha256)".to_owned(),
                ));
            }
        };
        ClientIdentity::from_parts(certs, pkcs8)
    }

    fn from_parts(
        mut certs: Vec<Vec<u8>>,
        key_pkcs8: Zeroizing<Vec<u8>>,
    ) -> Result<ClientIdentity, IdentityError> {
        let key = RsaKeyPair::from_pkcs8(&key_pkcs8).map_err(|_| {
            IdentityError::Key(
                "the private key is not a usable RSA key (STS needs RSA, 2048 bits or more)"
                    .to_owned(),
            )
        })?;
        // The leaf is the certificate whose public key is the key's.
        let public = key.public().as_ref().to_vec();
        let leaf = certs
            .iter()
            .position(|der| spki_rsa_key(der).is_some_and(|k| k == public))
            .ok_or_else(|| {
                IdentityError::Key(
                    "the private key does not belong to any certificate in the file".to_owned(),
                )
            })?;
        let certificate = certs.remove(leaf);
        let info = CertificateInfo::from_der(&certificate)?;
        Ok(ClientIdentity {
            certificate,
            chain: certs,
            key,
            key_pkcs8,
            info,
            rng: SystemRandom::new(),
        })
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// The certificate as one line of base64 (BinarySecurityToken, `UseKey`).
    pub fn certificate_base64(&self) -> String {
        BASE64.encode(&self.certificate)
    }

    /// Subject, issuer and validity.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (XML-DSig `rsa-sha256`).
    pub fn sign_rsa_sha256(&self, data: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                data,
                &mut signature,
            )
            .map_err(|_| IdentityError::Signing)?;
        Ok(signature)
    }

    /// The TLS client identity for mutual TLS (certificate, chain and key as PEM, in memory only).
    pub fn tls_identity(&self) -> Result<reqwest::Identity, IdentityError> {
        let mut pem = Zeroizing::new(String::new());
        pem_block(&mut pem, "PRIVATE KEY", &self.key_pkcs8);
        pem_block(&mut pem, "CERTIFICATE", &self.certificate);
        for der in &self.chain {
            pem_block(&mut pem, "CERTIFICATE", der);
        }
        reqwest::Identity::from_pem(pem.as_bytes()).map_err(|_| {
            IdentityError::Key("the certificate and key cannot be used for TLS".to_owned())
        })
    }
}

fn pem_block(out: &mut String, label: &str, der: &[u8]) {
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let text = Zeroizing::new(BASE64.encode(der));
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// The PKCS#1 RSAPublicKey inside a certificate's SubjectPublicKeyInfo.
pub fn spki_rsa_key(certificate_der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate_der).ok()?;
    Some(cert.public_key().subject_public_key.data.to_vec())
}

/// Wraps a PKCS#1 RSAPrivateKey into a PKCS#8 PrivateKeyInfo (ring reads PKCS#8).
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    // SEQUENCE { INTEGER 0, SEQUENCE { OID rsaEncryption, NULL }, OCTET STRING pkcs1 }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut octets = vec![0x04];
    der_length(&mut octets, pkcs1.len());
    octets.extend_from_slice(pkcs1);
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&ALGORITHM);
    body.extend_from_slice(&octets);
    let mut out = vec![0x30];
    der_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

/// Verifies an RSA-SHA256 signature with the public key of a DER certificate.
pub fn verify_rsa_sha256(certificate_der: &[u8], data: &[u8], signature_bytes: &[u8]) -> bool {
    let Some(key) = spki_rsa_key(certificate_der) else {
        return false;
    };
    signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(data, signature_bytes)
        .is_ok()
}

/// Reads DER certificates from PEM (one or more `CERTIFICATE` blocks) or from raw DER bytes.
pub fn certificates_from_file_bytes(bytes: &[u8]) -> Result<Vec<Vec<u8>>, IdentityError> {
    let pem: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(bytes)
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    if !pem.is_empty() {
        return Ok(pem);
    }
    CertificateInfo::from_der(bytes)?;
    Ok(vec![bytes.to_vec()])
}
