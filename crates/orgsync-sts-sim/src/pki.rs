//! A throw-away PKI for the simulator and tests: a CA, the simulated STS's signing certificate, the TLS server certificate, supplier (client) certificates, and a rogue STS nobody trusts.
//!
//! Certificates are made fresh with rcgen (validity relative to today); the RSA keys are fixed
//! test keys shipped in `keys/` (ring, which signs here, cannot generate RSA keys). None of this
//! is secret or trusted anywhere but in a simulator.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};

use crate::SimError;

const CA_KEY: &str = include_str!("../keys/ca.pem");
const STS_KEY: &str = include_str!("../keys/sts.pem");
const TLS_KEY: &str = include_str!("../keys/tls.pem");
const CLIENT_KEY: &str = include_str!("../keys/client.pem");
const ROGUE_KEY: &str = include_str!("../keys/rogue.pem");

/// A certificate with its key, able to sign (RSA-SHA256).
pub struct Signer {
    /// The certificate, DER.
    pub certificate: Vec<u8>,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The key, PKCS#8 PEM.
    pub key_pem: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

impl Signer {
    fn new(certificate: &rcgen::Certificate, key_pem: &str) -> Result<Signer, SimError> {
        let der = pem_der(key_pem)?;
        let key = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| SimError::Usage(format!("bad test key: {e}")))?;
        Ok(Signer {
            certificate: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
            key_pem: key_pem.to_owned(),
            key,
        })
    }

    /// RSASSA-PKCS1-v1_5 SHA-256.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; self.key.public().modulus_len()];
        let _ = self.key.sign(
            &signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            data,
            &mut out,
        );
        out
    }

    /// The certificate as base64 (one line).
    pub fn certificate_base64(&self) -> String {
        BASE64.encode(&self.certificate)
    }
}

fn pem_der(pem: &str) -> Result<Vec<u8>, SimError> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    BASE64
        .decode(body)
        .map_err(|e| SimError::Usage(format!("bad PEM: {e}")))
}

fn key_pair(pem: &str) -> Result<KeyPair, SimError> {
    KeyPair::from_pem(pem).map_err(|e| SimError::Usage(format!("bad test key: {e}")))
}

fn dn(common_name: &str, organisation: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "DK");
    dn.push(DnType::OrganizationName, organisation);
    dn.push(DnType::CommonName, common_name);
    dn
}

// Certificate validity is stamped in UTC (X.509 times are UTC), so the UTC date is right here.
#[allow(clippy::disallowed_methods)]
fn validity(params: &mut CertificateParams, days_valid: i64) {
    let from = Utc::now().date_naive() - Duration::days(1);
    let to = Utc::now().date_naive() + Duration::days(days_valid);
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = rcgen::date_time_ymd(to.year(), to.month() as u8, to.day() as u8);
}

fn err(e: rcgen::Error) -> SimError {
    SimError::Usage(format!("cannot make a test certificate: {e}"))
}

/// The simulator's PKI.
#[derive(Debug)]
pub struct SimPki {
    /// The CA certificate (trust anchor for TLS both ways and for supplier certificates), PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca: Vec<u8>,
    /// The simulated STS: signs assertions.
    pub sts: Arc<Signer>,
    /// The TLS server certificate (for 127.0.0.1 and localhost) and key.
    pub tls: Arc<Signer>,
    /// A supplier's system certificate issued by the CA (what a client presents).
    pub client: Arc<Signer>,
    /// A self-signed "STS" that nobody trusts (tampering tests).
    pub rogue: Arc<Signer>,
    issuer_params: CertificateParams,
}

impl SimPki {
    /// Makes the CA and every certificate, valid from yesterday; the client certificate for a year.
    pub fn generate() -> Result<SimPki, SimError> {
        let ca_key = key_pair(CA_KEY)?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn("orgsync simulator CA", "orgsync test");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut ca_params, 3650);
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params.clone(), ca_key);

        let leaf = |cn: &str,
                    names: Vec<String>,
                    usage: ExtendedKeyUsagePurpose,
                    key_pem: &str,
                    days: i64| {
            let key = key_pair(key_pem)?;
            let mut params = CertificateParams::new(names).map_err(err)?;
            params.distinguished_name = dn(cn, "orgsync test");
            params.extended_key_usages = vec![usage];
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            validity(&mut params, days);
            let cert = params.signed_by(&key, &issuer).map_err(err)?;
            Signer::new(&cert, key_pem)
        };
        let sts = leaf(
            "ADG_SIM_Adgangsstyring_1",
            vec![],
            ExtendedKeyUsagePurpose::Any,
            STS_KEY,
            3650,
        )?;
        let tls = leaf(
            "localhost",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
            TLS_KEY,
            3650,
        )?;
        let client = leaf(
            "orgsync test system (funktionscertifikat)",
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
            CLIENT_KEY,
            365,
        )?;
        let rogue_key = key_pair(ROGUE_KEY)?;
        let mut rogue_params = CertificateParams::default();
        rogue_params.distinguished_name = dn("ADG_SIM_Adgangsstyring_1", "not the STS");
        validity(&mut rogue_params, 3650);
        let rogue_cert = rogue_params.self_signed(&rogue_key).map_err(err)?;
        let rogue = Signer::new(&rogue_cert, ROGUE_KEY)?;
        Ok(SimPki {
            ca_pem: ca_cert.pem(),
            ca: ca_cert.der().to_vec(),
            sts: Arc::new(sts),
            tls: Arc::new(tls),
            client: Arc::new(client),
            rogue: Arc::new(rogue),
            issuer_params: ca_params,
        })
    }

    /// Another supplier certificate from the CA (the client key), valid for `days` more days.
    pub fn client_certificate(&self, common_name: &str, days: i64) -> Result<Signer, SimError> {
        let issuer = Issuer::new(self.issuer_params.clone(), key_pair(CA_KEY)?);
        let key = key_pair(CLIENT_KEY)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, "orgsync test");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, days);
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        Signer::new(&cert, CLIENT_KEY)
    }

    /// Writes `ca.pem`, `sts.pem` (the STS certificate to trust), `client.pem` and
    /// `client-key.pem` (the supplier's certificate and key) to `dir`, for `[sts]` to point at.
    pub fn write_to(&self, dir: &Path) -> Result<(), SimError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SimError::Usage(format!("cannot create {}: {e}", dir.display())))?;
        for (name, text) in [
            ("ca.pem", self.ca_pem.as_str()),
            ("sts.pem", self.sts.certificate_pem.as_str()),
            ("client.pem", self.client.certificate_pem.as_str()),
            ("client-key.pem", self.client.key_pem.as_str()),
        ] {
            std::fs::write(dir.join(name), text).map_err(|e| {
                SimError::Usage(format!("cannot write {}: {e}", dir.join(name).display()))
            })?;
        }
        Ok(())
    }
}
