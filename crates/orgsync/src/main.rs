//! The `orgsync` binary: every role (worker, scheduler, web, sim, demo, ...) is a subcommand.
//!
//! Subcommands are added when they work; `orgsync --help` lists what this build can do.

mod config_check;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps an HR system's departments and users in step with a municipality's STS Organisation.
#[derive(Debug, Parser)]
#[command(name = "orgsync", version, propagate_version = true)]
struct Cli {
    /// The configuration directory: orgsync.toml and customers/*.toml.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "config",
        env = "ORGSYNC_CONFIG"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate orgsync.toml and every customer file; report every problem with file, field
    /// and position. Exits 1 when the configuration is unusable.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init_default();
    let result = match cli.command {
        Command::Config(ConfigCommand::Check) => {
            config_check::run(&cli.config, &mut std::io::stdout().lock())
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            logging::report_error(&error);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
