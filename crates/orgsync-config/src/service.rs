//! The service file `config/orgsync.toml`, layered with `ORGSYNC__SECTION__KEY` environment overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::ENV_PREFIX;
use crate::problem::{self, Position, Problem};

/// The service configuration.
#[derive(Clone, Debug, Deserialize)]
pub struct ServiceConfig {
    /// The Redis that holds the job queue.
    #[serde(default)]
    pub redis: RedisConfig,
    /// How orgsync reaches STS Organisation.
    #[serde(default)]
    pub sts: StsConfig,
    /// The dashboard, JSON API and metrics server.
    #[serde(default)]
    pub web: WebConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Run reports, stored plans, the scheduler's grace period.
    #[serde(default)]
    pub runs: crate::runs::RunsConfig,
    /// Jobs per worker process.
    #[serde(default)]
    pub worker: crate::runs::WorkerConfig,
    /// Support tickets (Zendesk or a log) and Sentry.
    #[serde(default)]
    pub support: crate::support::SupportConfig,
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; a secret because it may hold a password.
    #[serde(default = "default_redis_url")]
    pub url: SecretString,
    /// Prefix of every Redis key orgsync writes, so several installations can share a Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// With a `rediss://` URL: a PEM file with the certificate authorities that signed the
    /// server's certificate, used instead of the system's trust store. Relative paths are
    /// relative to the working directory.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Redis Sentinel: `host:port` of each sentinel. With these, orgsync asks the sentinels
    /// for the primary of `master_name` (and asks again after a failover); `url` then gives
    /// only the scheme, user, password and database of the primary, its host is not used.
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// Redis Sentinel: the name the sentinels monitor the primary under (`sentinel monitor
    /// NAME ...`). Required with `sentinels`.
    #[serde(default)]
    pub master_name: Option<String>,
    /// Redis Cluster: `url` is any one node of the cluster. Every key then carries the
    /// prefix as its hash tag (`{orgsync}:...`), so one installation's keys share one slot.
    #[serde(default)]
    pub cluster: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: default_redis_url(),
            key_prefix: default_key_prefix(),
            tls_ca_file: None,
            sentinels: Vec::new(),
            master_name: None,
            cluster: false,
        }
    }
}

fn default_redis_url() -> SecretString {
    SecretString::from("redis://127.0.0.1:6379")
}

fn default_key_prefix() -> String {
    "orgsync".to_owned()
}

/// Which STS Organisation installation to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StsEnvironment {
    /// KOMBIT's external test environment (Støttesystemerne exttest).
    Exttest,
    /// Production.
    Production,
    /// orgsync's own simulator (`orgsync sim`), unsigned, loopback only.
    #[default]
    Sim,
}

impl std::fmt::Display for StsEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StsEnvironment::Exttest => "exttest",
            StsEnvironment::Production => "production",
            StsEnvironment::Sim => "sim",
        })
    }
}

/// Which family of STS Organisation services (and so which wire profile) to speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StsProfile {
    /// Organisation 6 on Støttesystemerne: SOAP 1.2, entity ID
    /// `http://stoettesystemerne.dk/service/organisation/3` (docs/sts-protocol.md).
    #[default]
    Stoettesystemerne,
    /// The legacy Serviceplatformen contract (SF1500 v5): SOAP 1.1, entity ID configurable; read
    /// with the v5 operations (checked against the v5 XSDs and the simulator only, see
    /// crates/orgsync-sts/README.md).
    Serviceplatformen,
}

impl std::fmt::Display for StsProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StsProfile::Stoettesystemerne => "stoettesystemerne",
            StsProfile::Serviceplatformen => "serviceplatformen",
        })
    }
}

/// How tokens are requested from the STS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenProtocolSetting {
    /// Signed SOAP 1.2 WS-Trust 1.3 (`sts_url`).
    #[default]
    Soap,
    /// The REST JSON issue endpoint (`sts_rest_url`), mutual TLS only.
    Rest,
}

/// The entity ID of Organisation 6 (the token's audience).
pub const ORGANISATION6_ENTITY_ID: &str = "http://stoettesystemerne.dk/service/organisation/3";
/// The entity ID the legacy Serviceplatformen profile uses unless configured.
pub const SERVICEPLATFORMEN_ENTITY_ID: &str =
    "http://organisation.serviceplatformen.dk/service/organisation/5";
/// Where the simulator's STS listens by default (`orgsync sim --require-signatures`).
/// The SAML Issuer of `orgsync sim`'s STS.
const SIM_STS_ISSUER: &str = "https://saml.sts-sim.orgsync.invalid/runtime";
const SIM_STS_PATH: &str = "/runtime/services/kombittrust/14/certificatemixed";
const SIM_STS_REST_PATH: &str = "/runtime/api/rest/wstrust/v1/issue";

/// `[sts]`.
#[derive(Clone, Debug, Deserialize)]
pub struct StsConfig {
    /// `exttest`, `production` or `sim`.
    #[serde(default)]
    pub environment: StsEnvironment,
    /// `stoettesystemerne` (Organisation 6, the default) or `serviceplatformen` (legacy v5).
    #[serde(default)]
    pub profile: StsProfile,
    /// Base URL of the Organisation services (`.../organisation/`); each environment has a
    /// default, `sim`'s is `http://127.0.0.1:8089/organisation/` (`https://` when `signed`).
    #[serde(default)]
    pub base_url: Option<Url>,
    /// For `sim` only: talk to `orgsync sim --require-signatures` with the signed profile
    /// (token, WS-Security, mutual TLS). `exttest` and `production` are always signed.
    #[serde(default)]
    pub signed: bool,
    /// The STS SOAP issue endpoint; each environment of the `stoettesystemerne` profile has a default.
    #[serde(default)]
    pub sts_url: Option<Url>,
    /// The STS REST JSON issue endpoint (used when `token_protocol = "rest"`).
    #[serde(default)]
    pub sts_rest_url: Option<Url>,
    /// `soap` (default) or `rest`.
    #[serde(default)]
    pub token_protocol: TokenProtocolSetting,
    /// The service's entity ID, the token's AppliesTo/audience. Default per profile.
    #[serde(default)]
    pub entity_id: Option<String>,
    /// The SAML `Issuer` a token must name: the environment's STS. Defaults: KOMBIT's for
    /// `exttest` and `production`, the simulator's for `sim`; none (not checked) for the
    /// `serviceplatformen` profile unless set.
    #[serde(default)]
    pub sts_issuer: Option<String>,
    /// The system certificate: a PKCS#12 file (`.p12`/`.pfx`) or a PEM certificate.
    /// Relative paths are relative to the working directory.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// The PEM private key, when `certificate_file` is a PEM certificate without its key.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The environment variable holding the PKCS#12 password (never put it in this file).
    #[serde(default = "default_password_env")]
    pub certificate_password_env: String,
    /// The STS certificates (PEM or DER files) whose signature a token must carry; empty =
    /// leave the check to the service. KOMBIT rotates them: list the old and the new one.
    #[serde(default)]
    pub sts_certificate_files: Vec<PathBuf>,
    /// The Organisation service certificates (PEM or DER), shown by `config check`. Response
    /// signatures are not verified yet (docs/sts-protocol.md §6 calls it optional).
    #[serde(default)]
    pub service_certificate_files: Vec<PathBuf>,
    /// An extra TLS trust anchor (PEM or DER), e.g. the simulator's `ca.pem`. KOMBIT's hosts use
    /// public CAs and need none.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Renew a token this many seconds before it expires (tokens live 8 hours).
    #[serde(default = "default_token_margin_s")]
    pub token_expiry_margin_s: u64,
    /// At most this many STS `list` calls in flight per customer.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_per_customer: u32,
    /// At most this many pages of STS searches in flight per customer, issued ahead of the page
    /// being read; a budget of its own next to `max_in_flight_per_customer`.
    #[serde(default = "default_in_flight")]
    pub max_pages_in_flight_per_customer: u32,
    /// At most this many STS calls per second for the whole system (KOMBIT's capacity rule is 14).
    #[serde(default = "default_calls_per_second")]
    pub max_calls_per_second: u32,
    /// Timeout of one STS call, in milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Largest accepted response body, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// The longest wait for the next bytes of a response body, in milliseconds: a body that
    /// stalls after its headers fails after this, not after `call_timeout_ms`.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// At most this many STS calls per read (the ceiling; a customer with a trusted previous
    /// run gets a budget derived from its size).
    #[serde(default = "default_max_read_calls")]
    pub max_read_calls: u64,
    /// At most this many distinct objects (units, functions, users) per read (the ceiling; a
    /// customer with a trusted previous run gets a bound derived from its size).
    #[serde(default = "default_max_read_objects")]
    pub max_read_objects: u64,
    /// The longest a whole read may take, in seconds.
    #[serde(default = "default_read_deadline_s")]
    pub read_deadline_s: u64,
}

impl Default for StsConfig {
    fn default() -> Self {
        StsConfig {
            environment: StsEnvironment::default(),
            profile: StsProfile::default(),
            base_url: None,
            signed: false,
            sts_url: None,
            sts_rest_url: None,
            token_protocol: TokenProtocolSetting::default(),
            entity_id: None,
            sts_issuer: None,
            certificate_file: None,
            private_key_file: None,
            certificate_password_env: default_password_env(),
            sts_certificate_files: Vec::new(),
            service_certificate_files: Vec::new(),
            tls_ca_file: None,
            token_expiry_margin_s: default_token_margin_s(),
            max_in_flight_per_customer: default_in_flight(),
            max_pages_in_flight_per_customer: default_in_flight(),
            max_calls_per_second: default_calls_per_second(),
            call_timeout_ms: default_call_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
            read_timeout_ms: default_read_timeout_ms(),
            max_read_calls: default_max_read_calls(),
            max_read_objects: default_max_read_objects(),
            read_deadline_s: default_read_deadline_s(),
        }
    }
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("the built-in URLs parse")
}

impl StsConfig {
    /// Whether calls use the signed profile (token, WS-Security, mutual TLS).
    pub fn is_signed(&self) -> bool {
        self.signed || self.environment != StsEnvironment::Sim
    }

    /// The configured base URL, or the environment's (and profile's) default.
    pub fn effective_base_url(&self) -> Url {
        self.base_url.clone().unwrap_or_else(|| {
            url(match (self.profile, self.environment) {
                (_, StsEnvironment::Sim) if self.signed => "https://127.0.0.1:8089/organisation/",
                (_, StsEnvironment::Sim) => "http://127.0.0.1:8089/organisation/",
                (StsProfile::Stoettesystemerne, StsEnvironment::Exttest) => {
                    "https://organisation.eksterntest-stoettesystemerne.dk/organisation/"
                }
                (StsProfile::Stoettesystemerne, StsEnvironment::Production) => {
                    "https://organisation.stoettesystemerne.dk/organisation/"
                }
                (StsProfile::Serviceplatformen, StsEnvironment::Exttest) => {
                    "https://exttest.serviceplatformen.dk/service/Organisation/"
                }
                (StsProfile::Serviceplatformen, StsEnvironment::Production) => {
                    "https://prod.serviceplatformen.dk/service/Organisation/"
                }
            })
        })
    }

    /// The STS SOAP endpoint: configured, or the environment's default (none for the
    /// `serviceplatformen` profile, whose STS endpoint no public source confirms).
    pub fn effective_sts_url(&self) -> Option<Url> {
        self.sts_url.clone().or_else(|| {
            Some(url(match (self.profile, self.environment) {
                (_, StsEnvironment::Sim) => return self.sim_url(SIM_STS_PATH),
                (StsProfile::Stoettesystemerne, StsEnvironment::Exttest) => {
                    "https://n2adgangsstyring.eksterntest-stoettesystemerne.dk/runtime/services/kombittrust/14/certificatemixed"
                }
                (StsProfile::Stoettesystemerne, StsEnvironment::Production) => {
                    "https://n2adgangsstyring.stoettesystemerne.dk/runtime/services/kombittrust/14/certificatemixed"
                }
                (StsProfile::Serviceplatformen, _) => return None,
            }))
        })
    }

    /// The STS REST endpoint: configured, or the environment's default.
    pub fn effective_sts_rest_url(&self) -> Option<Url> {
        self.sts_rest_url.clone().or_else(|| {
            Some(url(match (self.profile, self.environment) {
                (_, StsEnvironment::Sim) => return self.sim_url(SIM_STS_REST_PATH),
                (StsProfile::Stoettesystemerne, StsEnvironment::Exttest) => {
                    "https://n2adgangsstyring.eksterntest-stoettesystemerne.dk/runtime/api/rest/wstrust/v1/issue"
                }
                (StsProfile::Stoettesystemerne, StsEnvironment::Production) => {
                    "https://n2adgangsstyring.stoettesystemerne.dk/runtime/api/rest/wstrust/v1/issue"
                }
                (StsProfile::Serviceplatformen, _) => return None,
            }))
        })
    }

    /// The simulator's STS on the same host and port as the Organisation base URL.
    fn sim_url(&self, path: &str) -> Option<Url> {
        let mut base = self.effective_base_url();
        base.set_path(path);
        Some(base)
    }

    /// The SAML Issuer tokens must name: configured, or the environment's STS (none known for
    /// the `serviceplatformen` profile).
    pub fn effective_sts_issuer(&self) -> Option<String> {
        self.sts_issuer.clone().or_else(|| {
            match (self.profile, self.environment) {
                (_, StsEnvironment::Sim) => Some(SIM_STS_ISSUER),
                (StsProfile::Stoettesystemerne, StsEnvironment::Exttest) => {
                    Some("https://saml.n2adgangsstyring.eksterntest-stoettesystemerne.dk/runtime")
                }
                (StsProfile::Stoettesystemerne, StsEnvironment::Production) => {
                    Some("https://saml.n2adgangsstyring.stoettesystemerne.dk/runtime")
                }
                (StsProfile::Serviceplatformen, _) => None,
            }
            .map(str::to_owned)
        })
    }

    /// The entity ID: configured, or the profile's.
    pub fn effective_entity_id(&self) -> String {
        self.entity_id.clone().unwrap_or_else(|| {
            match self.profile {
                StsProfile::Stoettesystemerne => ORGANISATION6_ENTITY_ID,
                StsProfile::Serviceplatformen => SERVICEPLATFORMEN_ENTITY_ID,
            }
            .to_owned()
        })
    }
}

fn default_password_env() -> String {
    "ORGSYNC_STS_CERTIFICATE_PASSWORD".to_owned()
}
fn default_token_margin_s() -> u64 {
    900
}
/// Six `list` calls in flight per customer: with four, a read under realistic latency was bound
/// by this budget (about 12.5 calls/s, 1.17-1.19 x the 14 calls/s floor for an `l`
/// municipality); with six it is bound by the rate limit (1.08 x). KOMBIT documents no maximum;
/// other integrations run 4-10 calls in parallel. The calls per second stay capped system-wide.
fn default_in_flight() -> u32 {
    6
}
fn default_calls_per_second() -> u32 {
    14
}
fn default_call_timeout_ms() -> u64 {
    180_000
}
fn default_max_response_bytes() -> u64 {
    64 * 1024 * 1024
}
/// 30 s without a byte: an answer that is being sent never pauses that long.
fn default_read_timeout_ms() -> u64 {
    30_000
}
/// An `xl` read (Copenhagen, the largest) makes about 3,300 calls; 20,000 take 24 minutes at
/// 14 calls/s.
fn default_max_read_calls() -> u64 {
    20_000
}
/// An `xl` municipality has about 130,000 units, functions and users.
fn default_max_read_objects() -> u64 {
    500_000
}
/// An `xl` read takes about 5 minutes at 14 calls/s.
fn default_read_deadline_s() -> u64 {
    2 * 60 * 60
}

/// `[web]`: the dashboard (`orgsync web`).
#[derive(Clone, Debug, Deserialize)]
pub struct WebConfig {
    /// Address the dashboard listens on. A non-loopback address needs at least one user.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The dashboard's address as people reach it (behind the reverse proxy), e.g.
    /// `https://orgsync.example.dk`; tickets link to `{public_url}/runs/{run_id}`. Unset: no links.
    #[serde(default)]
    pub public_url: Option<Url>,
    /// Mark the session cookie `Secure` (set when a reverse proxy serves the dashboard over
    /// https).
    #[serde(default)]
    pub secure_cookies: bool,
    /// Who may log in (`[[web.users]]`). None: only loopback, and everyone there is `support`.
    #[serde(default)]
    pub users: Vec<WebUserConfig>,
}

/// One `[[web.users]]` entry.
#[derive(Clone, Debug, Deserialize)]
pub struct WebUserConfig {
    /// Login name (recorded in the audit log as who replayed, deleted or released).
    pub name: String,
    /// `viewer` (reads everything) or `support` (also replays, deletes, releases, runs now).
    pub role: WebRole,
    /// The password as an argon2 PHC string, made by `orgsync web hash-password`.
    pub password_hash: SecretString,
}

/// A dashboard role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebRole {
    /// Reads everything.
    Viewer,
    /// Also replays, deletes, releases and runs now.
    Support,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: default_bind(),
            public_url: None,
            secure_cookies: false,
            users: Vec::new(),
        }
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
pub struct LogConfig {
    /// A `tracing` filter: `info`, `orgsync=debug,info`, ...; `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` for people, `json` for log collectors.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The keys a table of orgsync.toml knows (`""` is the top level), for suggestions.
fn known_fields(section: &str) -> &'static [&'static str] {
    match section {
        "" => problem::struct_fields::<ServiceConfig>(),
        "redis" => problem::struct_fields::<RedisConfig>(),
        "sts" => problem::struct_fields::<StsConfig>(),
        "runs" => problem::struct_fields::<crate::RunsConfig>(),
        "worker" => problem::struct_fields::<crate::WorkerConfig>(),
        "web" => problem::struct_fields::<WebConfig>(),
        "log" => problem::struct_fields::<LogConfig>(),
        _ => &[],
    }
}

/// Loads `path` with environment overrides, adding every problem to `problems`.
pub(crate) fn load(path: &Path, problems: &mut Vec<Problem>) -> Option<ServiceConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problems.push(Problem::file(
                path,
                "not found; every installation needs a service file (see README)",
            ));
            return None;
        }
        Err(e) => {
            problems.push(Problem::file(path, format!("cannot be read: {e}")));
            return None;
        }
    };
    let figment = Figment::new()
        .merge(Toml::string(&text))
        .merge(Env::prefixed(ENV_PREFIX).split("__"));

    // Unknown keys: collect them all (serde's deny_unknown_fields stops at the first).
    let before = problems.len();
    match figment.extract::<figment::value::Value>() {
        Ok(value) => {
            let _ = serde_ignored::deserialize(&value, |unknown| {
                let key = unknown.to_string();
                let from_env = std::env::vars().any(|(name, _)| {
                    name.strip_prefix(ENV_PREFIX)
                        .is_some_and(|rest| rest.replace("__", ".").eq_ignore_ascii_case(&key))
                });
                let (file, position) = if from_env {
                    (Path::new("environment").to_owned(), None)
                } else {
                    (path.to_owned(), Position::of_key(&text, &key))
                };
                let section = key.rsplit_once('.').map_or("", |(section, _)| section);
                problems.push(Problem::at(
                    &file,
                    &key,
                    position,
                    problem::unknown_key_message(
                        &key,
                        known_fields(section),
                        "config/orgsync.toml",
                    ),
                ));
            })
            .map(|_: ServiceConfig| ());
        }
        Err(e) => {
            push_figment_errors(path, &text, e, problems);
            return None;
        }
    }

    let service: ServiceConfig = match figment.extract() {
        Ok(service) => service,
        Err(e) => {
            push_figment_errors(path, &text, e, problems);
            return None;
        }
    };
    check(path, &text, &figment, &service, problems);
    (problems.len() == before).then_some(service)
}

fn push_figment_errors(
    path: &Path,
    text: &str,
    errors: figment::Error,
    problems: &mut Vec<Problem>,
) {
    for error in errors {
        let field = error.path.join(".");
        let from_env = error.metadata.as_ref().is_some_and(is_environment);
        problems.push(located(
            path,
            text,
            &field,
            from_env,
            error.kind.to_string(),
        ));
    }
}

fn is_environment(metadata: &figment::Metadata) -> bool {
    metadata.name.to_lowercase().contains("environment")
}

/// A problem with `field`, named by the layer its value came from: the file (with a
/// position), or the `ORGSYNC__` variable.
fn located(path: &Path, text: &str, field: &str, from_env: bool, message: String) -> Problem {
    if from_env {
        let variable = format!("{ENV_PREFIX}{}", field.replace('.', "__").to_uppercase());
        Problem::at(Path::new("environment"), &variable, None, message)
    } else {
        Problem::at(path, field, Position::of_key(text, field), message)
    }
}

fn check(
    path: &Path,
    text: &str,
    figment: &Figment,
    service: &ServiceConfig,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |field: &str, message: String| {
        let from_env = figment.find_metadata(field).is_some_and(is_environment);
        problems.push(located(path, text, field, from_env, message));
    };
    let scheme = Url::parse(service.redis.url.expose_secret())
        .map(|u| u.scheme().to_owned())
        .unwrap_or_default();
    if let Some(ca) = &service.redis.tls_ca_file {
        if scheme != "rediss" {
            problem(
                "redis.tls_ca_file",
                "is set, but redis.url is not rediss:// (TLS); use rediss:// or remove it"
                    .to_owned(),
            );
        } else if !ca.is_file() {
            problem(
                "redis.tls_ca_file",
                format!("{} is not a readable file", ca.display()),
            );
        }
    }
    match Url::parse(service.redis.url.expose_secret()) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") => {}
        Ok(url) => problem(
            "redis.url",
            format!("scheme {:?}; expected redis:// or rediss://", url.scheme()),
        ),
        Err(e) => problem(
            "redis.url",
            format!("not a URL ({e}); expected redis://host:port"),
        ),
    }
    let redis = &service.redis;
    match (redis.sentinels.is_empty(), &redis.master_name) {
        (false, None) => problem(
            "redis.master_name",
            "is missing; with redis.sentinels set, name the primary the sentinels monitor"
                .to_owned(),
        ),
        (true, Some(_)) => problem(
            "redis.sentinels",
            "is empty, but redis.master_name is set; list the sentinels as \"host:port\""
                .to_owned(),
        ),
        (false, Some(name)) if name.trim().is_empty() => {
            problem("redis.master_name", "is empty".to_owned());
        }
        _ => {}
    }
    for sentinel in &redis.sentinels {
        let port_ok = sentinel
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            problem("redis.sentinels", format!("{sentinel:?} is not host:port"));
        }
    }
    if redis.cluster && !redis.sentinels.is_empty() {
        problem(
            "redis.cluster",
            "and redis.sentinels are both set; a Redis is either a cluster or watched by sentinels"
                .to_owned(),
        );
    }
    let prefix = &service.redis.key_prefix;
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        problem(
            "redis.key_prefix",
            format!("{prefix:?}; expected letters, digits, '-', '_' or '.', not empty"),
        );
    }
    let web = &service.web;
    if web.users.is_empty() && !web.bind.ip().is_loopback() {
        problem(
            "web.bind",
            format!(
                "{} is not a loopback address and no [[web.users]] is configured; add users or bind to 127.0.0.1",
                web.bind
            ),
        );
    }
    for (i, user) in web.users.iter().enumerate() {
        if user.name.trim().is_empty() || user.name.contains(':') {
            problem(
                "web.users",
                format!("user {}: name must not be empty or contain ':'", i + 1),
            );
        }
        if web.users[..i].iter().any(|u| u.name == user.name) {
            problem(
                "web.users",
                format!("user {:?} is configured twice", user.name),
            );
        }
        if !user.password_hash.expose_secret().starts_with("$argon2") {
            problem(
                "web.users",
                format!(
                    "user {:?}: password_hash is not an argon2 PHC string ($argon2id$...); make one with `orgsync web hash-password`",
                    user.name
                ),
            );
        }
    }
    let sts = &service.sts;
    if let Some(url) = &sts.base_url {
        match (sts.environment, url.scheme()) {
            (_, "https") => {}
            (StsEnvironment::Sim, "http") if !sts.signed => {}
            (env, scheme) => problem(
                "sts.base_url",
                format!(
                    "{scheme}:// is not allowed for environment {env}; STS is only reached over https"
                ),
            ),
        }
        if !url.path().ends_with('/') {
            problem(
                "sts.base_url",
                format!("{url} must end with '/' (the services are joined onto it)"),
            );
        }
    }
    if sts.signed && sts.environment != StsEnvironment::Sim {
        problem(
            "sts.signed",
            format!(
                "only for environment sim; {} is always signed",
                sts.environment
            ),
        );
    }
    if sts.is_signed() {
        match &sts.certificate_file {
            None => problem(
                "sts.certificate_file",
                format!(
                    "missing; environment {}{} needs the system certificate (a .p12/.pfx, or a PEM certificate with private_key_file)",
                    sts.environment,
                    if sts.signed {
                        " with signed = true"
                    } else {
                        ""
                    }
                ),
            ),
            Some(file) if !file.is_file() => problem(
                "sts.certificate_file",
                format!("{} does not exist or is not a file", file.display()),
            ),
            Some(_) => {}
        }
        if sts.effective_sts_url().is_none() && sts.token_protocol == TokenProtocolSetting::Soap {
            problem(
                "sts.sts_url",
                format!(
                    "missing; profile {} has no known STS endpoint, set it explicitly",
                    sts.profile
                ),
            );
        }
        if sts.effective_sts_rest_url().is_none()
            && sts.token_protocol == TokenProtocolSetting::Rest
        {
            problem(
                "sts.sts_rest_url",
                format!(
                    "missing; profile {} has no known REST STS endpoint, set it explicitly",
                    sts.profile
                ),
            );
        }
    }
    for (field, file) in [
        ("sts.private_key_file", sts.private_key_file.as_ref()),
        ("sts.tls_ca_file", sts.tls_ca_file.as_ref()),
    ] {
        if let Some(file) = file.filter(|f| !f.is_file()) {
            problem(
                field,
                format!("{} does not exist or is not a file", file.display()),
            );
        }
    }
    for (field, files) in [
        ("sts.sts_certificate_files", &sts.sts_certificate_files),
        (
            "sts.service_certificate_files",
            &sts.service_certificate_files,
        ),
    ] {
        for file in files.iter().filter(|f| !f.is_file()) {
            problem(
                field,
                format!("{} does not exist or is not a file", file.display()),
            );
        }
    }
    for (field, url) in [
        ("sts.sts_url", &sts.sts_url),
        ("sts.sts_rest_url", &sts.sts_rest_url),
    ] {
        if let Some(url) = url.as_ref().filter(|u| u.scheme() != "https") {
            problem(field, format!("{url}: the STS is only reached over https"));
        }
    }
    if let Some(entity_id) = &sts.entity_id {
        if Url::parse(entity_id).is_err() {
            problem("sts.entity_id", format!("{entity_id:?} is not a URI"));
        }
    }
    let password_env = &sts.certificate_password_env;
    if password_env.is_empty()
        || !password_env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        problem(
            "sts.certificate_password_env",
            format!(
                "{password_env:?}; expected an environment variable name (letters, digits, '_')"
            ),
        );
    }
    if !(60..=7 * 3600).contains(&sts.token_expiry_margin_s) {
        problem(
            "sts.token_expiry_margin_s",
            format!(
                "{}; expected 60 to 25200 (tokens live 8 hours)",
                sts.token_expiry_margin_s
            ),
        );
    }
    if !(1..=64).contains(&sts.max_in_flight_per_customer) {
        problem(
            "sts.max_in_flight_per_customer",
            format!("{}; expected 1 to 64", sts.max_in_flight_per_customer),
        );
    }
    if !(1..=64).contains(&sts.max_pages_in_flight_per_customer) {
        problem(
            "sts.max_pages_in_flight_per_customer",
            format!("{}; expected 1 to 64", sts.max_pages_in_flight_per_customer),
        );
    }
    if !(1..=1000).contains(&sts.max_calls_per_second) {
        problem(
            "sts.max_calls_per_second",
            format!("{}; expected 1 to 1000", sts.max_calls_per_second),
        );
    }
    if !(1_000..=3_600_000).contains(&sts.call_timeout_ms) {
        problem(
            "sts.call_timeout_ms",
            format!(
                "{} ms; expected 1000 to 3600000 (1 s to 1 h)",
                sts.call_timeout_ms
            ),
        );
    }
    if !(1_000..=600_000).contains(&sts.read_timeout_ms) {
        problem(
            "sts.read_timeout_ms",
            format!(
                "{} ms; expected 1000 to 600000 (1 s to 10 min)",
                sts.read_timeout_ms
            ),
        );
    }
    if sts.max_read_calls < 100 {
        problem(
            "sts.max_read_calls",
            format!("{}; expected at least 100", sts.max_read_calls),
        );
    }
    if sts.max_read_objects < 1_000 {
        problem(
            "sts.max_read_objects",
            format!("{}; expected at least 1000", sts.max_read_objects),
        );
    }
    if !(60..=86_400).contains(&sts.read_deadline_s) {
        problem(
            "sts.read_deadline_s",
            format!(
                "{} s; expected 60 to 86400 (1 min to 24 h)",
                sts.read_deadline_s
            ),
        );
    }
    if sts.max_response_bytes < 64 * 1024 {
        problem(
            "sts.max_response_bytes",
            format!("{}; expected at least 65536", sts.max_response_bytes),
        );
    }
    for (field, message) in crate::runs::check(&service.runs, &service.worker) {
        problem(field, message);
    }
    for (field, message) in crate::support::check(&service.support) {
        problem(field, message);
    }
    if let Some(url) = &service.web.public_url
        && !matches!(url.scheme(), "http" | "https")
    {
        problem(
            "web.public_url",
            format!("{url}; expected an http:// or https:// address"),
        );
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&service.log.level) {
        problem(
            "log.level",
            format!(
                "{:?} is not a log filter ({e}); expected e.g. \"info\"",
                service.log.level
            ),
        );
    }
}
