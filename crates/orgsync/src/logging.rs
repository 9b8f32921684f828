//! Logging set-up (tracing to stderr, plus Sentry for the worker when a DSN is set) and how
//! the binary reports a fatal error.

use std::io::{IsTerminal as _, Write as _};

use anyhow::Context as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Logging to stderr: `RUST_LOG` when set, else `default` (`warn` for one-shot commands, `info`
/// for long-running roles, which say where they listen and what they do).
pub(crate) fn init(default: &str) {
    init_with(default, false);
}

/// Logging for the long-running roles (worker, scheduler): `[log]`'s level (`RUST_LOG` wins)
/// and format (`json`: one object per line with the structured fields, for log collectors).
pub(crate) fn init_from(config: &orgsync_config::LogConfig) {
    init_with(
        &config.level,
        config.format == orgsync_config::LogFormat::Json,
    );
}

/// The worker's logging: as [`init_from`], plus Sentry when the variable `[support]
/// sentry_dsn_env` names holds a DSN (its failed attempts, ERROR events and job transactions;
/// see `orgsync_support::sentry`). Keep the guard until the process ends: dropping it flushes.
pub(crate) fn init_worker(
    config: &orgsync_config::Config,
) -> anyhow::Result<Option<orgsync_support::sentry::Guard>> {
    let guard = orgsync_support::sentry::init_from_env(
        &config.service.support,
        concat!("orgsync@", env!("CARGO_PKG_VERSION")),
        &config.service.sts.environment.to_string(),
    )
    .context("cannot start Sentry")?;
    let log = &config.service.log;
    subscriber(
        &log.level,
        log.format == orgsync_config::LogFormat::Json,
        guard.is_some(),
    );
    Ok(guard)
}

fn init_with(default: &str, json: bool) {
    subscriber(default, json, false);
}

fn subscriber(default: &str, json: bool, sentry: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Sentry sees INFO and above whatever the log level: the queue's failed attempts are INFO.
    let sentry = sentry.then(|| {
        orgsync_support::sentry::layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    // Every event that passes the filter is also counted for `/metrics`.
    let registry = tracing_subscriber::registry()
        .with(sentry)
        .with(crate::ops::LogCounter.with_filter(filter.clone()));
    let _ = if json {
        registry.with(fmt.json().with_filter(filter)).try_init()
    } else {
        registry
            .with(
                fmt.with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init()
    };
}

/// Prints a fatal error and its causes to stderr: `error: what failed: because ...`.
pub(crate) fn report_error(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {}", error_chain(error));
}

/// The error and its causes joined with `: `, leaving out a cause whose text the message before
/// it already ends with (many errors print their source in their own message, and redis-rs
/// repeats its I/O error's text, so `{:#}` would say the same thing up to three times).
pub(crate) fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// Whether the error is a write to a closed pipe (`orgsync runs | head -3`): the reader has
/// what it wanted, which is no failure of ours.
pub(crate) fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Redis at redis://x is unreachable: {source}")]
    struct Outer {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let error = anyhow::Error::new(Outer { source: io }).context("cannot open the job queue");
        assert_eq!(
            error_chain(&error),
            "cannot open the job queue: Redis at redis://x is unreachable: Connection refused"
        );
    }

    #[test]
    fn distinct_causes_are_all_printed() {
        let error = anyhow::anyhow!("no such file").context("reading a.toml");
        assert_eq!(error_chain(&error), "reading a.toml: no such file");
    }

    #[test]
    fn a_broken_pipe_is_recognised_by_its_kind() {
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "Broken pipe");
        assert!(is_broken_pipe(&anyhow::Error::new(pipe).context("writing")));
        let other = std::io::Error::other("Broken pipe");
        assert!(!is_broken_pipe(&anyhow::Error::new(other)));
    }
}
