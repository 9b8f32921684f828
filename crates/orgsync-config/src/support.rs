//! `[support]`: where support tickets go (Zendesk, or a JSON-lines log), when they open, the
//! hourly cap, and Sentry.

use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

/// Where tickets go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SupportSink {
    /// Zendesk Support's ticket API (`zendesk_url`, `zendesk_email`, `zendesk_token_env`).
    Zendesk,
    /// JSON lines of the tickets and comments orgsync would send, to `log_file` or stderr.
    #[default]
    Log,
}

/// `[support]`.
#[derive(Clone, Debug, Deserialize)]
pub struct SupportConfig {
    /// `zendesk` or `log` (default).
    #[serde(default)]
    pub sink: SupportSink,
    /// For `sink = "log"`: the file the JSON lines are appended to; unset: stderr.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// For `sink = "zendesk"`: `https://{subdomain}.zendesk.com`.
    #[serde(default)]
    pub zendesk_url: Option<Url>,
    /// For `sink = "zendesk"`: the agent e-mail the API token belongs to.
    #[serde(default)]
    pub zendesk_email: Option<String>,
    /// The environment variable holding the Zendesk API token (never put it in this file).
    #[serde(default = "default_token_env")]
    pub zendesk_token_env: String,
    /// A run-scoped problem opens a ticket when this many consecutive runs had it (held runs,
    /// guards and a missing service agreement open one at once).
    #[serde(default = "default_open_after_runs")]
    pub open_after_runs: u32,
    /// An open ticket gets a "recovered" comment after this many good runs in a row.
    #[serde(default = "default_recovered_after_runs")]
    pub recovered_after_runs: u32,
    /// At most this many new tickets per hour for the whole installation; the rest wait for
    /// the next failing run.
    #[serde(default = "default_max_new_tickets_per_hour")]
    pub max_new_tickets_per_hour: u32,
    /// The environment variable holding the Sentry DSN; Sentry is off when it is unset or empty.
    #[serde(default = "default_sentry_dsn_env")]
    pub sentry_dsn_env: String,
    /// The share of jobs sent to Sentry as performance transactions, 0.0 to 1.0.
    #[serde(default = "default_traces_sample_rate")]
    pub sentry_traces_sample_rate: f32,
}

impl Default for SupportConfig {
    fn default() -> Self {
        SupportConfig {
            sink: SupportSink::default(),
            log_file: None,
            zendesk_url: None,
            zendesk_email: None,
            zendesk_token_env: default_token_env(),
            open_after_runs: default_open_after_runs(),
            recovered_after_runs: default_recovered_after_runs(),
            max_new_tickets_per_hour: default_max_new_tickets_per_hour(),
            sentry_dsn_env: default_sentry_dsn_env(),
            sentry_traces_sample_rate: default_traces_sample_rate(),
        }
    }
}

fn default_token_env() -> String {
    "ORGSYNC_ZENDESK_TOKEN".to_owned()
}
fn default_open_after_runs() -> u32 {
    2
}
fn default_recovered_after_runs() -> u32 {
    1
}
fn default_max_new_tickets_per_hour() -> u32 {
    20
}
fn default_sentry_dsn_env() -> String {
    "ORGSYNC_SENTRY_DSN".to_owned()
}
fn default_traces_sample_rate() -> f32 {
    0.1
}

fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The checks of `[support]`: `(field, message)` for each problem.
pub(crate) fn check(support: &SupportConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut range = |field: &'static str, value: u32, lo: u32, hi: u32| {
        if !(lo..=hi).contains(&value) {
            out.push((field, format!("{value}; expected {lo} to {hi}")));
        }
    };
    range("support.open_after_runs", support.open_after_runs, 1, 100);
    range(
        "support.recovered_after_runs",
        support.recovered_after_runs,
        1,
        100,
    );
    range(
        "support.max_new_tickets_per_hour",
        support.max_new_tickets_per_hour,
        1,
        10_000,
    );
    for (field, name) in [
        ("support.zendesk_token_env", &support.zendesk_token_env),
        ("support.sentry_dsn_env", &support.sentry_dsn_env),
    ] {
        if !is_variable_name(name) {
            out.push((
                field,
                format!("{name:?}; expected an environment variable name (letters, digits, '_')"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&support.sentry_traces_sample_rate) {
        out.push((
            "support.sentry_traces_sample_rate",
            format!("{}; expected 0.0 to 1.0", support.sentry_traces_sample_rate),
        ));
    }
    if support.sink == SupportSink::Zendesk {
        match &support.zendesk_url {
            None => out.push((
                "support.zendesk_url",
                "missing; sink = \"zendesk\" needs https://{subdomain}.zendesk.com".to_owned(),
            )),
            Some(url) if url.scheme() != "https" && !is_loopback(url) => out.push((
                "support.zendesk_url",
                format!("{url}: Zendesk is only reached over https"),
            )),
            Some(_) => {}
        }
        if support
            .zendesk_email
            .as_deref()
            .is_none_or(|e| !e.contains('@'))
        {
            out.push((
                "support.zendesk_email",
                "missing or not an e-mail; sink = \"zendesk\" needs the agent e-mail of the API token"
                    .to_owned(),
            ));
        }
    }
    out
}

/// Plain http is accepted only on loopback (a local fake in tests, a proxy on the host).
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}
