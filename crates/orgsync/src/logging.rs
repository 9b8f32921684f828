//! Logging set-up (tracing to stderr) and how the binary reports a fatal error.

use std::io::{IsTerminal as _, Write as _};

use tracing_subscriber::EnvFilter;

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

fn init_with(default: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// Prints a fatal error and its causes to stderr: `error: what failed: because ...`.
pub(crate) fn report_error(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error:#}");
}
