//! `[support]` and `[web] public_url`: defaults, a Zendesk sink's required keys, range checks.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use orgsync_config::{SupportSink, load};

fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// A copy of the shipped configuration with `edit` applied to orgsync.toml.
fn service_with(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("customers")).unwrap();
    fs::copy(
        shipped().join("customers/demo.toml"),
        dir.path().join("customers/demo.toml"),
    )
    .unwrap();
    let service = fs::read_to_string(shipped().join("orgsync.toml")).unwrap();
    fs::write(dir.path().join("orgsync.toml"), edit(service)).unwrap();
    dir
}

fn problems(dir: &Path) -> Vec<String> {
    load(dir)
        .expect_err("the configuration should be refused")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_shipped_support_section_is_the_documented_defaults() {
    let config = load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
    let support = &config.service.support;
    assert_eq!(support.sink, SupportSink::Log);
    assert_eq!(support.open_after_runs, 2);
    assert_eq!(support.recovered_after_runs, 1);
    assert_eq!(support.max_new_tickets_per_hour, 20);
    assert_eq!(support.zendesk_token_env, "ORGSYNC_ZENDESK_TOKEN");
    assert_eq!(support.sentry_dsn_env, "ORGSYNC_SENTRY_DSN");
    assert!(support.log_file.is_none());
    assert!(config.service.web.public_url.is_none());
}

#[test]
fn a_service_file_without_a_support_section_gets_the_same_defaults() {
    let dir = service_with(|s| {
        let start = s.find("[support]").unwrap();
        let end = s.find("[log]").unwrap();
        format!("{}{}", &s[..start], &s[end..])
    });
    let config = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.service.support.sink, SupportSink::Log);
    assert_eq!(config.service.support.open_after_runs, 2);
}

#[test]
fn a_zendesk_sink_with_its_keys_and_a_public_url_load() {
    let dir = service_with(|s| {
        s.replace("\nsink = \"log\"\n", "\nsink = \"zendesk\"\nzendesk_url = \"https://acme.zendesk.com\"\nzendesk_email = \"ops@acme.dk\"\n")
            .replace("# public_url = \"https://orgsync.example.dk\"", "public_url = \"https://orgsync.acme.dk\"")
    });
    let config = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let support = &config.service.support;
    assert_eq!(support.sink, SupportSink::Zendesk);
    assert_eq!(
        support.zendesk_url.as_ref().unwrap().as_str(),
        "https://acme.zendesk.com/"
    );
    assert_eq!(support.zendesk_email.as_deref(), Some("ops@acme.dk"));
    assert_eq!(
        config.service.web.public_url.as_ref().unwrap().as_str(),
        "https://orgsync.acme.dk/"
    );
}

#[test]
fn support_problems_are_all_reported_with_their_field() {
    let dir = service_with(|s| {
        s.replace(
            "\nsink = \"log\"\n",
            "\nsink = \"zendesk\"\nzendesk_url = \"http://acme.zendesk.com\"\n",
        )
        .replace("open_after_runs = 2", "open_after_runs = 0")
        .replace(
            "max_new_tickets_per_hour = 20",
            "max_new_tickets_per_hour = 0",
        )
        .replace(
            "sentry_dsn_env = \"ORGSYNC_SENTRY_DSN\"",
            "sentry_dsn_env = \"not a name\"",
        )
        .replace(
            "sentry_traces_sample_rate = 0.1",
            "sentry_traces_sample_rate = 2.0",
        )
    });
    let found = problems(dir.path());
    for needle in [
        "support.zendesk_url: http://acme.zendesk.com/: Zendesk is only reached over https",
        "support.zendesk_email: missing",
        "support.open_after_runs: 0; expected 1 to 100",
        "support.max_new_tickets_per_hour: 0; expected 1 to 10000",
        "support.sentry_dsn_env: \"not a name\"",
        "support.sentry_traces_sample_rate: 2",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "no {needle} in:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn an_unknown_sink_is_refused_naming_the_field() {
    let dir = service_with(|s| s.replace("\nsink = \"log\"\n", "\nsink = \"email\"\n"));
    let found = problems(dir.path());
    assert!(
        found.iter().any(|p| p.contains("support.sink")),
        "{found:?}"
    );
}
