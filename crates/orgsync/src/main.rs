//! The `orgsync` binary: every role (worker, scheduler, web, sim, demo, ...) is a subcommand.
//!
//! Subcommands are added when they work; `orgsync --help` lists what this build can do.

mod config_check;
mod demo;
mod explain;
mod logging;
mod ops;
mod runs;
mod sts;
mod targets;
mod web;
mod wiring;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
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
    /// The dead-letter queue: jobs whose attempts are spent. List, show, replay, delete.
    Dlq(orgsync_queue::cli::DlqCommand),
    /// The job queue: statistics per job type and state, and live workers.
    Queue(orgsync_queue::cli::QueueCommand),
    /// Run the STS Organisation simulator (Organisation 6, or `--profile serviceplatformen` for v5): synthetic or fixture municipalities over the real
    /// SOAP protocol, with latency and fault injection. Stops on Ctrl-C or SIGTERM.
    Sim(orgsync_sts_sim::cli::SimArgs),
    /// Read from STS Organisation through the configured `[sts]`.
    #[command(subcommand)]
    Sts(orgsync_sts::cli::StsCommand),
    /// Start a run of one customer now (what the scheduler does at each fire). With --wait,
    /// follow it with progress and print its report.
    Sync(runs::SyncArgs),
    /// Dry run: read STS and the target, print what a run would write. Writes nothing.
    Plan(runs::PlanArgs),
    /// Run reports: `runs [<cvr>]`, `runs show <run-id>`, `runs release <run-id>`,
    /// `runs revert <run-id>`.
    Runs(runs::RunsArgs),
    /// Why a user or department is as it is: its history from the provisioning log (what each
    /// run did to it and why), and what the next run would do now and why.
    Explain(explain::ExplainArgs),
    /// Consume jobs (SyncCustomer, SyncDepartment, FinishRun) until Ctrl-C or SIGTERM; running
    /// jobs finish first (within --shutdown-grace; a second signal stops at once).
    Worker(RoleArgs),
    /// Enqueue a run at every customer's schedule fire (cron in its time zone, with jitter).
    /// Safe to run in several processes: each fire is enqueued once.
    Scheduler(RoleArgs),
    /// The operations dashboard: jobs, dead letters (search, replay, delete), runs, customers,
    /// a JSON API under /api/, /metrics, /health and /ready. `web hash-password` makes a
    /// password hash for `[[web.users]]`.
    Web(web::WebArgs),
    /// One process with everything: the STS simulator with a synthetic municipality, an SQLite
    /// target, Redis (a private one when none answers), a worker, and one full run with progress.
    Demo(demo::DemoArgs),
}

/// What supervisors need from a long-running role.
#[derive(Debug, clap::Args)]
struct RoleArgs {
    /// Serve `/health` (alive), `/ready` (Redis answers, not draining) and `/metrics`
    /// (Prometheus text) on this address, for example `0.0.0.0:9464`. Off by default.
    #[arg(long, value_name = "ADDR", env = "ORGSYNC_METRICS_BIND")]
    metrics_bind: Option<std::net::SocketAddr>,
    /// After the first SIGTERM or Ctrl-C, how long running jobs may take to finish, in seconds;
    /// then (or on a second signal) the process exits at once with status 1 and the jobs it
    /// held are taken over by a live worker once its heartbeat expires (about 45 s).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        env = "ORGSYNC_SHUTDOWN_GRACE"
    )]
    shutdown_grace: u64,
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
    // Kept until the process ends: dropping it flushes Sentry.
    let mut _sentry = None;
    match cli.command {
        // The long-running roles log as `[log]` says (when the configuration loads; an invalid
        // one is reported below); the worker also reports to Sentry when a DSN is set.
        Command::Worker(_) => match orgsync_config::load(&cli.config) {
            Ok(config) => match logging::init_worker(&config) {
                Ok(guard) => _sentry = guard,
                Err(error) => {
                    logging::init("info");
                    logging::report_error(&error);
                    return ExitCode::FAILURE;
                }
            },
            Err(_) => logging::init("info"),
        },
        Command::Scheduler(_) => match orgsync_config::load(&cli.config) {
            Ok(config) => logging::init_from(&config.service.log),
            Err(_) => logging::init("info"),
        },
        Command::Sim(_) | Command::Web(_) => logging::init("info"),
        _ => logging::init("warn"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            logging::report_error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    if let Err(error) = &result
        && error.downcast_ref::<ops::ForcedStop>().is_some()
    {
        // Exit now: dropping the runtime would wait for the jobs still running.
        logging::report_error(error);
        std::process::exit(1);
    }
    match result {
        Ok(code) => code,
        // `orgsync runs | head -3`: the reader closed the pipe; stop quietly.
        Err(error) if logging::is_broken_pipe(&error) => ExitCode::SUCCESS,
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
        Command::Sync(args) => {
            let pipeline = wiring::pipeline(Arc::new(load_config(&cli.config)?)).await?;
            runs::sync(&pipeline, &args, &mut stdout).await
        }
        Command::Plan(args) => {
            let pipeline = wiring::pipeline(Arc::new(load_config(&cli.config)?)).await?;
            runs::plan(&pipeline, &args, &mut stdout).await
        }
        Command::Runs(args) => {
            let pipeline = wiring::pipeline(Arc::new(load_config(&cli.config)?)).await?;
            Box::pin(runs::runs(&pipeline, &args, &mut stdout)).await
        }
        Command::Explain(args) => {
            let pipeline = wiring::pipeline(Arc::new(load_config(&cli.config)?)).await?;
            explain::run(&pipeline, &args, &mut stdout).await
        }
        Command::Worker(role) => {
            let signals = ops::Signals::install()?;
            let config = Arc::new(load_config(&cli.config)?);
            let settings = wiring::worker_settings(&config);
            let live = wiring::LiveConfig::new(config.clone());
            ops::reload_on_sighup(live.clone())?;
            let pipeline = wiring::pipeline_live(live).await?;
            start_ops(&role, pipeline.queue(), "worker", &signals).await?;
            tracing::info!(
                redis = %pipeline.queue().redis_url_masked(),
                customers = config.customers.len(),
                "worker started: sync_customer x{}, sync_department x{}",
                settings.customers,
                settings.departments
            );
            let first = signals.nth(1);
            let shutdown = async move {
                first.await;
                Ok(())
            };
            let grace = std::time::Duration::from_secs(role.shutdown_grace);
            ops::run_role(
                "worker",
                &signals,
                grace,
                Box::pin(async {
                    orgsync_jobs::worker::run(pipeline, settings, shutdown)
                        .await
                        .context("the worker stopped")
                }),
            )
            .await?;
            tracing::info!("worker stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Scheduler(role) => {
            let signals = ops::Signals::install()?;
            let config = Arc::new(load_config(&cli.config)?);
            let (customers, options) = wiring::scheduled(&config);
            let live = wiring::LiveConfig::new(config.clone());
            ops::reload_on_sighup(live.clone())?;
            let pipeline = wiring::pipeline_live(live.clone()).await?;
            start_ops(&role, pipeline.queue(), "scheduler", &signals).await?;
            tracing::info!(
                redis = %pipeline.queue().redis_url_masked(),
                "scheduler started: {} enabled customers, grace {} min",
                customers.len(),
                options.grace.as_secs() / 60
            );
            let first = signals.nth(1);
            let shutdown = async move {
                first.await;
                Ok(())
            };
            let grace = std::time::Duration::from_secs(role.shutdown_grace);
            ops::run_role(
                "scheduler",
                &signals,
                grace,
                Box::pin(async {
                    // The customer files are re-read when they change (a cheap check per tick).
                    let schedule = move || wiring::scheduled(&live.current()).0;
                    orgsync_jobs::scheduler::run_reloading(pipeline, schedule, options, shutdown)
                        .await;
                    Ok(())
                }),
            )
            .await?;
            tracing::info!("scheduler stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Web(args) => {
            let config = match &args.action {
                Some(web::WebAction::HashPassword) => None,
                None => Some(Arc::new(load_config(&cli.config)?)),
            };
            match config {
                Some(config) => web::run(config, &args).await,
                None => web::run_hash_password(&mut stdout),
            }
        }
        Command::Demo(args) => demo::run(&cli.config, &args, &mut stdout).await,
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

/// Loads the configuration (refusing an invalid one with every problem).
fn load_config(dir: &Path) -> anyhow::Result<orgsync_config::Config> {
    orgsync_config::load(dir).map_err(|problems| {
        if dir.is_dir() {
            anyhow::anyhow!("{problems}Run `orgsync config check` for details.")
        } else {
            anyhow::anyhow!(
                "{problems}The configuration directory is {} (from --config or ORGSYNC_CONFIG; default `config` in the current directory).",
                std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()).display()
            )
        }
    })
}

/// Starts the operations endpoints when `--metrics-bind` asks for them; they stop on the
/// second signal or with the process.
async fn start_ops(
    role: &RoleArgs,
    queue: &orgsync_queue::QueueHandle,
    name: &'static str,
    signals: &ops::Signals,
) -> anyhow::Result<()> {
    if let Some(bind) = role.metrics_bind {
        ops::serve(bind, queue.clone(), name, signals, signals.nth(2)).await?;
    }
    Ok(())
}

async fn connect_queue(dir: &Path) -> anyhow::Result<orgsync_queue::QueueHandle> {
    wiring::queue(&load_config(dir)?).await
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
