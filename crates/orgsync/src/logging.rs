//! Logging set-up (tracing to stderr) and how the binary reports a fatal error.

use std::io::Write as _;

use tracing_subscriber::EnvFilter;

/// Logging before the configuration is known: `RUST_LOG`, else warnings only, to stderr.
pub(crate) fn init_default() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints a fatal error and its causes to stderr: `error: what failed: because ...`.
pub(crate) fn report_error(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error:#}");
}
