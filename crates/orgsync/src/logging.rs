//! Logging set-up (tracing to stderr) and how the binary reports a fatal error.

use std::io::{IsTerminal as _, Write as _};

use tracing_subscriber::EnvFilter;

/// Logging to stderr: `RUST_LOG` when set, else `default` (`warn` for one-shot commands, `info`
/// for long-running roles, which say where they listen and what they do).
pub(crate) fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Prints a fatal error and its causes to stderr: `error: what failed: because ...`.
pub(crate) fn report_error(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error:#}");
}
