//! The service file `config/orgsync.toml`, layered with `ORGSYNC__SECTION__KEY` environment overrides.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::ENV_PREFIX;
use crate::problem::{Position, Problem};

/// The service configuration.
#[derive(Debug, Deserialize)]
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
}

/// `[redis]`.
#[derive(Debug, Deserialize)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; a secret because it may hold a password.
    #[serde(default = "default_redis_url")]
    pub url: SecretString,
    /// Prefix of every Redis key orgsync writes, so several installations can share a Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: default_redis_url(),
            key_prefix: default_key_prefix(),
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

/// `[sts]`.
#[derive(Debug, Deserialize)]
pub struct StsConfig {
    /// `exttest`, `production` or `sim`.
    #[serde(default)]
    pub environment: StsEnvironment,
    /// Base URL of the Organisation services (`.../organisation/`); each environment has a
    /// default, `sim`'s is `http://127.0.0.1:8089/organisation/`.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// At most this many STS calls in flight per customer.
    #[serde(default = "default_in_flight")]
    pub max_in_flight_per_customer: u32,
    /// At most this many STS calls per second for the whole system (KOMBIT's capacity rule is 14).
    #[serde(default = "default_calls_per_second")]
    pub max_calls_per_second: u32,
    /// Timeout of one STS call, in milliseconds.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Largest accepted response body, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

impl Default for StsConfig {
    fn default() -> Self {
        StsConfig {
            environment: StsEnvironment::default(),
            base_url: None,
            max_in_flight_per_customer: default_in_flight(),
            max_calls_per_second: default_calls_per_second(),
            call_timeout_ms: default_call_timeout_ms(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

impl StsConfig {
    /// The configured base URL, or the environment's default.
    pub fn effective_base_url(&self) -> Url {
        self.base_url.clone().unwrap_or_else(|| {
            let default = match self.environment {
                StsEnvironment::Exttest => {
                    "https://organisation.eksterntest-stoettesystemerne.dk/organisation/"
                }
                StsEnvironment::Production => {
                    "https://organisation.stoettesystemerne.dk/organisation/"
                }
                StsEnvironment::Sim => "http://127.0.0.1:8089/organisation/",
            };
            Url::parse(default).expect("the built-in base URLs parse")
        })
    }
}

fn default_in_flight() -> u32 {
    4
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

/// `[web]`.
#[derive(Debug, Deserialize)]
pub struct WebConfig {
    /// Address the dashboard listens on; keep it on loopback behind a reverse proxy.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            bind: default_bind(),
        }
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// `[log]`.
#[derive(Debug, Deserialize)]
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
                problems.push(Problem::at(
                    &file,
                    &key,
                    position,
                    "unknown field; the known ones are documented in config/orgsync.toml",
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
    let sts = &service.sts;
    if let Some(url) = &sts.base_url {
        match (sts.environment, url.scheme()) {
            (_, "https") => {}
            (StsEnvironment::Sim, "http") => {}
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
    if !(1..=64).contains(&sts.max_in_flight_per_customer) {
        problem(
            "sts.max_in_flight_per_customer",
            format!("{}; expected 1 to 64", sts.max_in_flight_per_customer),
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
    if sts.max_response_bytes < 64 * 1024 {
        problem(
            "sts.max_response_bytes",
            format!("{}; expected at least 65536", sts.max_response_bytes),
        );
    }
    for (field, message) in crate::runs::check(&service.runs, &service.worker) {
        problem(field, message);
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
