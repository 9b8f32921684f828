//! `orgsync sync`, `orgsync plan` and `orgsync runs`: enqueue a run (and follow it), the dry run,
//! and run reports.

use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use orgsync_jobs::pipeline::Pipeline;
use orgsync_jobs::report::{RunReport, RunState, Trigger, progress_text};

/// Output format of `plan` and `runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `orgsync sync`.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// The municipality's CVR number.
    pub cvr: String,
    /// Wait for the run to end, with progress, then print its report. Exit code: 0 succeeded,
    /// 2 held (deactivations wait for `orgsync runs release`), 1 failed, refused or partly
    /// failed. Needs a running `orgsync worker`.
    #[arg(long)]
    pub wait: bool,
    /// Report format with --wait.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Who asks (recorded in the report; default $USER).
    #[arg(long)]
    pub by: Option<String>,
}

/// `orgsync plan`.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    /// The municipality's CVR number.
    pub cvr: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `orgsync runs`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RunsArgs {
    /// Only this municipality's runs.
    pub cvr: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// At most this many runs, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[command(subcommand)]
    pub action: Option<RunsAction>,
}

/// `orgsync runs show|release|revert|accept-empty`.
#[derive(Debug, Subcommand)]
pub(crate) enum RunsAction {
    /// One run's report: counts, STS calls, writes, durations, failed departments, held
    /// deactivations and why.
    Show {
        /// The run id (from `orgsync runs`).
        run_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Apply a held run's deactivations, each re-checked against the target as it is now.
    /// Recorded in the report with who and when. Exits 1 when the target rejected any.
    Release {
        /// The run id.
        run_id: String,
        /// Who releases (default $USER).
        #[arg(long)]
        by: Option<String>,
        /// Also deactivate the objects a partial read may not have read (marked [unread] in
        /// `runs show`); without it such a release is refused.
        #[arg(long)]
        include_unread: bool,
    },
    /// Reactivate what a run deactivated, each object re-checked against the target as it is
    /// now: one changed in the target since, or touched by a later run, is skipped and listed.
    /// Recorded in the report with who and when. Exits 1 when the target rejected any.
    Revert {
        /// The run id.
        run_id: String,
        /// Who reverts (default $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Confirm that a customer's target starts empty (a new HR system, a database deliberately
    /// thrown away): forgets the last trusted run's counts, so the next run creates a missing
    /// SQLite file and fills an empty target instead of failing with `guard.target_lost`.
    AcceptEmpty {
        /// The customer's CVR.
        cvr: String,
        /// Who confirms (default $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

/// The exit code for a finished run.
pub(crate) fn exit_code(state: RunState) -> ExitCode {
    match state {
        RunState::Succeeded | RunState::Released => ExitCode::SUCCESS,
        RunState::Held => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn print_report(out: &mut dyn Write, report: &RunReport, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Text => write!(out, "{}", report.to_text())?,
        Format::Json => writeln!(out, "{}", report.to_json())?,
    }
    Ok(())
}

/// `orgsync sync <cvr> [--wait]`.
pub(crate) async fn sync(
    pipeline: &Pipeline,
    args: &SyncArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    if let Some(active) = pipeline.active_run(&args.cvr).await? {
        anyhow::bail!(
            "run {active} of {} is still active, so a new run would be refused; follow it with `orgsync runs show {active}`",
            args.cvr
        );
    }
    let by = args.by.clone().unwrap_or_else(orgsync_queue::current_user);
    let run = pipeline
        .enqueue_run(&args.cvr, Trigger::Manual { by }, Duration::ZERO)
        .await
        .with_context(|| format!("cannot start a run of {}", args.cvr))?;
    if !args.wait {
        writeln!(
            out,
            "enqueued run {} (job {}); follow it with `orgsync runs show {}`",
            run.run_id, run.job_id, run.run_id
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let report = wait(pipeline, &run.run_id).await?;
    print_report(out, &report, args.format)?;
    Ok(exit_code(report.state))
}

/// Follows a run until it ends: a progress bar on a terminal, a log line now and then otherwise.
pub(crate) async fn wait(pipeline: &Pipeline, run_id: &str) -> anyhow::Result<RunReport> {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:<28} [{bar:30}] {pos}/{len} departments ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last_line = std::time::Instant::now();
    let mut last_state = None;
    let mut last_message: Option<String> = None;
    let waiting_since = std::time::Instant::now();
    let mut told_no_worker = false;
    let mut settled_wait: Option<std::time::Instant> = None;
    loop {
        let progress = pipeline.progress(run_id).await?;
        let (done, total) = progress.departments();
        let state = progress.report.state;
        let message = match state {
            RunState::Queued => "waiting for a worker".to_owned(),
            RunState::Reading => match progress.report.read_progress {
                Some(read) if !read.done => format!("reading STS: {}", progress_text(&read)),
                _ => "reading STS and the target".to_owned(),
            },
            RunState::Departments => "writing departments".to_owned(),
            RunState::Users => "writing users".to_owned(),
            RunState::Finishing => "finishing".to_owned(),
            other => other.as_str().to_owned(),
        };
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(message);
        } else if last_state != Some(state)
            || last_line.elapsed() > Duration::from_secs(10)
            || (state == RunState::Reading
                && last_message.as_deref() != Some(message.as_str())
                && last_line.elapsed() >= Duration::from_secs(1))
        {
            // Not a terminal (a script, CI): a line now and then on stderr, stdout stays the report.
            let _ = writeln!(
                std::io::stderr(),
                "run {run_id}: {message}, {done}/{total} departments"
            );
            last_line = std::time::Instant::now();
            last_state = Some(state);
            last_message = Some(message.clone());
        }
        if state == RunState::Queued
            && !told_no_worker
            && waiting_since.elapsed() > Duration::from_secs(5)
            && pipeline
                .queue()
                .stats()
                .await
                .is_ok_and(|s| s.workers.is_empty())
        {
            told_no_worker = true;
            let hint = "no worker is running: the run waits in the queue until `orgsync worker` starts (Ctrl-C stops waiting; the run stays queued)";
            match &bar {
                Some(bar) => bar.println(hint),
                None => {
                    let _ = writeln!(std::io::stderr(), "{hint}");
                }
            }
        }
        // Ended, and the customer's lock released (FinishRun writes the final report just
        // before it releases the lock), so a `sync` right after this one is not refused.
        let settled = state.is_final()
            && (pipeline
                .active_run(&progress.report.cvr)
                .await
                .ok()
                .flatten()
                .as_deref()
                != Some(progress.report.run_id.as_str())
                || settled_wait
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    > Duration::from_secs(5));
        if settled {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(progress.report);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `orgsync plan <cvr>`.
pub(crate) async fn plan(
    pipeline: &Pipeline,
    args: &PlanArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let plan = pipeline
        .plan(&args.cvr)
        .await
        .with_context(|| format!("cannot plan {}", args.cvr))?;
    match args.format {
        Format::Text => write!(out, "{}", plan.to_text())?,
        Format::Json => writeln!(out, "{}", plan.to_json())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `orgsync runs ...`.
pub(crate) async fn runs(
    pipeline: &Pipeline,
    args: &RunsArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match &args.action {
        None => {
            let reports = pipeline.reports(args.cvr.as_deref(), args.limit).await?;
            match args.format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?,
                Format::Text if reports.is_empty() => writeln!(out, "no runs")?,
                Format::Text => {
                    writeln!(
                        out,
                        "{:<34} {:<8} {:<10} {:<20} changes",
                        "RUN", "CVR", "STATE", "ENQUEUED (UTC)"
                    )?;
                    for report in &reports {
                        writeln!(out, "{}", report.line())?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsAction::Show { run_id, format }) => {
            let report = pipeline.report(run_id).await?;
            print_report(out, &report, *format)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsAction::Release {
            run_id,
            by,
            include_unread,
        }) => {
            let by = by.clone().unwrap_or_else(orgsync_queue::current_user);
            let options = orgsync_jobs::release::ReleaseOptions {
                include_unread: *include_unread,
            };
            let report = orgsync_jobs::release::release_with(pipeline, run_id, &by, options)
                .await
                .with_context(|| format!("cannot release run {run_id}"))?;
            print_report(out, &report, Format::Text)?;
            // Rejected deactivations need a person: exit 1 so a script notices.
            let rejected = report.release.as_ref().map_or(0, |r| r.rejected.len());
            Ok(if rejected > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Some(RunsAction::AcceptEmpty { cvr, by }) => {
            let by = by.clone().unwrap_or_else(orgsync_queue::current_user);
            let forgotten = orgsync_jobs::release::accept_empty(pipeline, cvr, &by)
                .await
                .with_context(|| format!("cannot accept an empty target for {cvr}"))?;
            match forgotten {
                Some(counts) => writeln!(
                    out,
                    "{cvr}: the baseline of {} units and {} users is forgotten; the next run starts the target afresh",
                    counts.units, counts.users
                )?,
                None => writeln!(
                    out,
                    "{cvr}: there was no baseline; the next run starts the target afresh"
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(RunsAction::Revert { run_id, by }) => {
            let by = by.clone().unwrap_or_else(orgsync_queue::current_user);
            let report = orgsync_jobs::release::revert(pipeline, run_id, &by)
                .await
                .with_context(|| format!("cannot revert run {run_id}"))?;
            print_report(out, &report, Format::Text)?;
            let rejected = report.revert.as_ref().map_or(0, |r| r.rejected.len());
            Ok(if rejected > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
