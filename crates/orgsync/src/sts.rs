//! From the `[sts]` configuration (and the customer's file) to STS clients: options, and for signed environments the system certificate (loaded once per process) and the process-wide token cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use orgsync_config::{Config, StsConfig, StsEnvironment, StsProfile, TokenProtocolSetting};
use orgsync_model::ids::Cvr;
use orgsync_sts::cli::{ClientSource, StsCommand};
use orgsync_sts::client::StsClient;
use orgsync_sts::error::StsError;
use orgsync_sts::identity::{ClientIdentity, certificates_from_file_bytes};
use orgsync_sts::limits::SystemLimits;
use orgsync_sts::options::{ClientOptions, Environment};
use orgsync_sts::signed::{SignedOptions, SignedSession};
use orgsync_sts::token::{TokenOptions, TokenProtocol};
use orgsync_sts::wire::Dialect;
use secrecy::{ExposeSecret as _, SecretString};

/// The client options of `[sts]` for one customer (its configured Organisation UUID, if any).
pub(crate) fn options_for(config: &Config, cvr: &Cvr) -> ClientOptions {
    let sts = &config.service.sts;
    ClientOptions {
        environment: match sts.environment {
            StsEnvironment::Sim => Environment::Sim,
            StsEnvironment::Exttest => Environment::ExternalTest,
            StsEnvironment::Production => Environment::Production,
        },
        dialect: match sts.profile {
            StsProfile::Stoettesystemerne => Dialect::Organisation6,
            StsProfile::Serviceplatformen => Dialect::Serviceplatformen5,
        },
        base_url: sts.effective_base_url(),
        organisation_uuid: config
            .customer(cvr.as_str())
            .and_then(|c| c.organisation_uuid),
        max_in_flight: sts.max_in_flight_per_customer as usize,
        max_pages_in_flight: sts.max_pages_in_flight_per_customer as usize,
        max_calls_per_second: f64::from(sts.max_calls_per_second),
        call_timeout: Duration::from_millis(sts.call_timeout_ms),
        read_timeout: Duration::from_millis(sts.read_timeout_ms),
        max_read_calls: sts.max_read_calls,
        max_read_objects: sts.max_read_objects,
        read_deadline: Duration::from_secs(sts.read_deadline_s),
        max_response_bytes: usize::try_from(sts.max_response_bytes).unwrap_or(usize::MAX),
        // The unit's contact data is read only for a customer who maps it.
        unit_contact: config
            .customer(cvr.as_str())
            .is_some_and(|c| c.policy.mappings.unit_contact),
        ..ClientOptions::default()
    }
}

/// A client for one customer on the transport the configuration asks for: unsigned for the
/// plain simulator, signed (token per CVR, WS-Security, mutual TLS) for exttest, production
/// and a simulator with `signed = true`. The certificate is loaded once per process and the
/// token cache is shared by every client of the process, so one token serves a CVR for its
/// whole lifetime, across runs.
pub(crate) fn client_for(
    config: &Config,
    cvr: &Cvr,
    limits: SystemLimits,
) -> anyhow::Result<StsClient> {
    let options = options_for(config, cvr);
    let sts = &config.service.sts;
    if !sts.is_signed() {
        return StsClient::new(cvr.clone(), &options, limits)
            .context("building the unsigned STS client (simulator only)");
    }
    let transport = signed_session(sts)?.transport(SignedOptions {
        soap_version: options.dialect.soap_version(),
        max_response_bytes: options.max_response_bytes,
        read_timeout: options.read_timeout,
        ..SignedOptions::default()
    });
    Ok(StsClient::with_transport(
        cvr.clone(),
        &options,
        limits,
        Arc::new(transport),
    ))
}

/// The signed sessions of the process, one per distinct `[sts]` (normally exactly one).
type Sessions = Mutex<HashMap<String, SignedSession>>;

fn sessions() -> &'static Sessions {
    static SESSIONS: OnceLock<Sessions> = OnceLock::new();
    SESSIONS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The process's signed session of `[sts]` (certificate, mutual TLS client, token cache),
/// built on first use.
pub(crate) fn signed_session(sts: &StsConfig) -> anyhow::Result<SignedSession> {
    let key = format!(
        "{:?}|{:?}|{}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}",
        sts.certificate_file,
        sts.private_key_file,
        sts.certificate_password_env,
        sts.effective_sts_url(),
        sts.effective_sts_rest_url(),
        sts.effective_entity_id(),
        sts.token_protocol,
        sts.sts_certificate_files,
        sts.tls_ca_file,
        sts.token_expiry_margin_s,
        sts.effective_sts_issuer()
    );
    let mut sessions = sessions().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(session) = sessions.get(&key) {
        return Ok(session.clone());
    }
    let identity = Arc::new(load_identity(sts)?);
    let info = identity.info();
    tracing::info!(
        certificate.subject = %info.subject,
        certificate.not_after = %info.not_after,
        "loaded the system certificate"
    );
    let mut extra_roots = Vec::new();
    if let Some(file) = &sts.tls_ca_file {
        extra_roots.extend(read_certificates(file)?);
    }
    let mut trusted = Vec::new();
    for file in &sts.sts_certificate_files {
        trusted.extend(read_certificates(file)?);
    }
    let soap_url = sts
        .effective_sts_url()
        .context("[sts] sts_url is not set and the profile has no default")?;
    let rest_url = sts
        .effective_sts_rest_url()
        .unwrap_or_else(|| soap_url.clone());
    let mut token_options = TokenOptions::new(soap_url, rest_url, sts.effective_entity_id());
    token_options.protocol = match sts.token_protocol {
        TokenProtocolSetting::Soap => TokenProtocol::Soap,
        TokenProtocolSetting::Rest => TokenProtocol::Rest,
    };
    token_options.expiry_margin = Duration::from_secs(sts.token_expiry_margin_s);
    token_options.trusted_sts_certificates = trusted;
    token_options.issuer = sts.effective_sts_issuer();
    let session = SignedSession::new(identity, &extra_roots, token_options)
        .context("building the mutual TLS client from the system certificate")?;
    sessions.insert(key, session.clone());
    Ok(session)
}

/// Loads the system certificate of `[sts]`: PKCS#12 with the password from the configured
/// environment variable, or PEM certificate and key. Errors name files, never secrets.
pub(crate) fn load_identity(sts: &StsConfig) -> anyhow::Result<ClientIdentity> {
    let file = sts
        .certificate_file
        .as_ref()
        .context("[sts] certificate_file is not set; signed calls need the system certificate")?;
    let bytes = std::fs::read(file)
        .with_context(|| format!("reading the certificate {}", file.display()))?;
    if bytes.starts_with(b"-----BEGIN") || bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let key = match &sts.private_key_file {
            Some(key_file) => std::fs::read(key_file)
                .with_context(|| format!("reading the private key {}", key_file.display()))?,
            None => bytes.clone(),
        };
        return ClientIdentity::from_pem(&bytes, &key)
            .with_context(|| format!("loading the PEM certificate {}", file.display()));
    }
    let variable = &sts.certificate_password_env;
    let password = SecretString::from(std::env::var(variable).with_context(|| {
        format!(
            "the environment variable {variable} (the password of {}) is not set",
            file.display()
        )
    })?);
    ClientIdentity::from_pkcs12(&bytes, password.expose_secret())
        .with_context(|| format!("loading the PKCS#12 file {}", file.display()))
}

/// DER certificates from a PEM or DER file.
pub(crate) fn read_certificates(file: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(file)
        .with_context(|| format!("reading the certificate {}", file.display()))?;
    certificates_from_file_bytes(&bytes)
        .with_context(|| format!("reading the certificate {}", file.display()))
}

/// What `orgsync sts ...` reads through: [`client_for`] on the loaded configuration.
#[derive(Debug)]
pub(crate) struct ConfiguredSts<'a> {
    config: &'a Config,
}

impl ClientSource for ConfiguredSts<'_> {
    fn client(&self, cvr: &Cvr, limits: SystemLimits) -> Result<StsClient, StsError> {
        client_for(self.config, cvr, limits).map_err(|e| StsError::Config(format!("{e:#}")))
    }

    fn max_calls_per_second(&self) -> f64 {
        f64::from(self.config.service.sts.max_calls_per_second)
    }
}

/// The client source for an `orgsync sts` command (the name is kept for `main.rs`).
pub(crate) fn client_options<'a>(config: &'a Config, _command: &StsCommand) -> ConfiguredSts<'a> {
    ConfiguredSts { config }
}
