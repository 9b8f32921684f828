//! The `orgsync` binary: every role (worker, scheduler, web, sim, demo, ...) is a subcommand.
//!
//! Subcommands are added when they work; `orgsync --help` lists what this build can do.

mod config_check;
mod logging;
mod sts;
mod targets;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;

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
    /// The dead-letter queue: jobs whose attempts are spent. List, show, replay, delete.
    Dlq(orgsync_queue::cli::DlqCommand),
    /// The job queue: statistics per job type and state, and live workers.
    Queue(orgsync_queue::cli::QueueCommand),
    /// Run the STS Organisation 6 simulator: synthetic or fixture municipalities over the real
    /// SOAP protocol, with latency and fault injection. Stops on Ctrl-C or SIGTERM.
    Sim(orgsync_sts_sim::cli::SimArgs),
    /// Read from STS Organisation through the configured `[sts]`.
    #[command(subcommand)]
    Sts(orgsync_sts::cli::StsCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate orgsync.toml and every customer file (every problem, with file, field and
    /// position), then run each customer's target health check. Exits 1 on any problem.
    Check {
        /// Only validate the files; skip the health checks.
        #[arg(long)]
        offline: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(match cli.command {
        Command::Sim(_) => "info",
        _ => "warn",
    });
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            logging::report_error(&error);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Config(ConfigCommand::Check { offline }) => {
            config_check::run(&cli.config, offline, &mut stdout).await
        }
        Command::Dlq(cmd) => {
            let queue = connect_queue(&cli.config).await?;
            orgsync_queue::cli::run_dlq(&cmd, &queue, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(cmd) => {
            let queue = connect_queue(&cli.config).await?;
            orgsync_queue::cli::run_queue(&cmd, &queue, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(args) => {
            let shutdown = async {
                let _ = orgsync_queue::shutdown_signal().await;
            };
            orgsync_sts_sim::cli::run(args, shutdown)
                .await
                .context("the STS simulator stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sts(cmd) => {
            let config = load_config(&cli.config)?;
            let options = sts::client_options(&config, &cmd);
            orgsync_sts::cli::run(&cmd, &options, &mut stdout)
                .await
                .context("reading STS Organisation")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the configuration (refusing an invalid one with every problem) and connects to the queue.
fn load_config(dir: &Path) -> anyhow::Result<orgsync_config::Config> {
    orgsync_config::load(dir)
        .map_err(|problems| anyhow::anyhow!("{problems}Run `orgsync config check` for details."))
}

async fn connect_queue(dir: &Path) -> anyhow::Result<orgsync_queue::QueueHandle> {
    let config = load_config(dir)?;
    let redis = &config.service.redis;
    orgsync_queue::QueueHandle::connect(orgsync_queue::QueueConfig::new(
        redis.url.expose_secret().to_owned(),
        redis.key_prefix.clone(),
    ))
    .await
    .context("cannot open the job queue")
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
