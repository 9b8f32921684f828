//! CLI pieces for the `orgsync` binary: clap types for `dlq ...` and `queue stats`, and the
//! functions that run them and render text tables or JSON.

use std::io::Write;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use crate::client::{QueueHandle, current_user};
use crate::error::QueueError;
use crate::model::{DeadLetterFilter, JobId, JobRecord, JobState, QueueStats};

/// Output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned table for people.
    #[default]
    Text,
    /// JSON for scripts.
    Json,
}

/// Dead-letter queue: jobs whose attempts are spent or that failed permanently.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: DlqAction,
}

/// `dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqAction {
    /// List dead letters, oldest first (`--run` for one run's).
    List {
        /// Which dead letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Show one dead letter: payload and every attempt's time and error chain.
    Show {
        /// Job id.
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Replay dead letters as new jobs with fresh attempts (audited).
    Replay(ReplayArgs),
    /// Delete dead letters for good (audited).
    Delete {
        /// Job ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Who deletes them (default: the OS user).
        #[arg(long)]
        by: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
}

/// Filters on dead letters.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this customer (CVR number).
    #[arg(long, alias = "customer")]
    pub cvr: Option<String>,
    /// Only this job type.
    #[arg(long)]
    pub job_type: Option<String>,
    /// Only this final error class (`sts.unavailable`, `target.auth`, `job.abandoned`, ...; README lists them).
    #[arg(long)]
    pub error_class: Option<String>,
    /// Only this run (the run id a job was enqueued with, or its batch).
    #[arg(long)]
    pub run: Option<String>,
    /// Only those whose last error, class, id or customer contains this text (any case).
    #[arg(long)]
    pub text: Option<String>,
}

/// `dlq replay` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Job ids to replay.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Replay every dead letter matching the filters.
    #[arg(long)]
    pub all: bool,
    /// Which dead letters (with --all).
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only those that died at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_time, requires = "all")]
    pub since: Option<DateTime<Utc>>,
    /// Only those that died at or before this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_time, requires = "all")]
    pub until: Option<DateTime<Utc>>,
    /// Who replays them (default: the OS user).
    #[arg(long)]
    pub by: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// The queue as a whole.
#[derive(Debug, Clone, clap::Args)]
pub struct QueueCommand {
    /// What to do.
    #[command(subcommand)]
    pub action: QueueAction,
}

/// `queue` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueAction {
    /// Jobs per type and state, the oldest waiting job's age, live workers.
    Stats {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
    /// Jobs in one state: scheduled or retrying (with the next attempt's time, the attempt
    /// number and the last error) or running (with the worker).
    Jobs {
        /// Which state.
        #[arg(long, value_enum)]
        state: ListedState,
        /// Only this customer (CVR number).
        #[arg(long, alias = "customer")]
        cvr: Option<String>,
        /// Only this run.
        #[arg(long)]
        run: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: OutputFormat,
    },
}

/// A state `queue jobs` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListedState {
    /// Waiting for their first run-after time.
    Scheduled,
    /// Failed, waiting for their next attempt.
    Retrying,
    /// Their handler runs now.
    Running,
}

impl ListedState {
    fn job_state(self) -> JobState {
        match self {
            Self::Scheduled => JobState::Scheduled,
            Self::Retrying => JobState::Retrying,
            Self::Running => JobState::Running,
        }
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("expected RFC 3339 (2026-11-22T00:00:00Z) or YYYY-MM-DD, got {text:?}")
        })
}

impl FilterArgs {
    fn to_filter(&self) -> DeadLetterFilter {
        DeadLetterFilter {
            customer: self.cvr.clone(),
            job_type: self.job_type.clone(),
            error_class: self.error_class.clone(),
            since: None,
            until: None,
            run: self.run.clone(),
            text: self.text.clone(),
        }
    }
}

/// Runs a `dlq` command and writes its output.
pub async fn run_dlq(
    cmd: &DlqCommand,
    queue: &QueueHandle,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match &cmd.action {
        DlqAction::List { filter, format } => {
            let letters = queue
                .dead_letters(&filter.to_filter())
                .await
                .context("reading the dead-letter queue")?;
            match format {
                OutputFormat::Json => write_json(out, &letters)?,
                OutputFormat::Text => render_list(out, &letters)?,
            }
        }
        DlqAction::Show { id, format } => {
            let letter = queue
                .dead_letter(&JobId::new(id.as_str()))
                .await
                .with_context(|| format!("reading dead letter {id}"))?;
            match format {
                OutputFormat::Json => write_json(out, &letter)?,
                OutputFormat::Text => render_show(out, &letter)?,
            }
        }
        DlqAction::Replay(args) => {
            let by = args.by.clone().unwrap_or_else(current_user);
            let mut replayed = Vec::new();
            let mut failures = Vec::new();
            if args.all {
                let mut filter = args.filter.to_filter();
                filter.since = args.since;
                filter.until = args.until;
                replayed = queue
                    .replay_matching(&filter, &by)
                    .await
                    .context("replaying dead letters")?;
            } else {
                for id in &args.ids {
                    let job_id = JobId::new(id.as_str());
                    match queue.replay(&job_id, &by).await {
                        Ok(r) => replayed.push(r),
                        Err(QueueError::NotDead { state, .. }) if state == "replayed" => {
                            failures.push(already_replayed(queue, &job_id).await);
                        }
                        Err(e) => failures.push(format!("{id}: {e}")),
                    }
                }
            }
            match args.format {
                OutputFormat::Json => write_json(out, &replayed)?,
                OutputFormat::Text => {
                    let rows = replayed
                        .iter()
                        .map(|r| vec![r.dead_letter.to_string(), r.new_job.to_string()])
                        .collect::<Vec<_>>();
                    render_table(out, &["DEAD LETTER", "NEW JOB"], &rows)?;
                    writeln!(out, "{} replayed by {by}", replayed.len())?;
                }
            }
            if !failures.is_empty() {
                anyhow::bail!("could not replay: {}", failures.join("; "));
            }
        }
        DlqAction::Delete { ids, by, format } => {
            let by = by.clone().unwrap_or_else(current_user);
            let mut deleted = Vec::new();
            let mut failures = Vec::new();
            for id in ids {
                match queue
                    .delete_dead_letter(&JobId::new(id.as_str()), &by)
                    .await
                {
                    Ok(()) => deleted.push(id.clone()),
                    Err(e) => failures.push(format!("{id}: {e}")),
                }
            }
            match format {
                OutputFormat::Json => write_json(out, &deleted)?,
                OutputFormat::Text => {
                    for id in &deleted {
                        writeln!(out, "deleted {id}")?;
                    }
                    writeln!(out, "{} deleted by {by}", deleted.len())?;
                }
            }
            if !failures.is_empty() {
                anyhow::bail!("could not delete: {}", failures.join("; "));
            }
        }
    }
    Ok(())
}

/// What to say about a dead letter that was replayed already: which job replaced it (the
/// last of its replay chain) and where that one is now.
async fn already_replayed(queue: &QueueHandle, id: &JobId) -> String {
    match queue.replay_chain(id).await {
        Ok(chain) => {
            let first = chain.iter().position(|r| r.job_id == *id).unwrap_or(0);
            let by = chain
                .get(first)
                .and_then(|r| r.replayed_by.clone())
                .unwrap_or_else(|| "-".into());
            match chain.last() {
                Some(current) if current.job_id != *id => {
                    let hint = match current.state {
                        JobState::Dead => {
                            format!("; replay that one: orgsync dlq replay {}", current.job_id)
                        }
                        _ => String::new(),
                    };
                    format!(
                        "{id} was replayed already (by {by}); the job that replaced it is {} ({}, {}){hint}",
                        current.job_id,
                        current.job_type,
                        current.state.as_str()
                    )
                }
                _ => format!("{id} was replayed already (by {by}); its replay is no longer stored"),
            }
        }
        Err(e) => format!("{id} was replayed already; its replay chain could not be read: {e}"),
    }
}

/// Runs a `queue` command and writes its output.
pub async fn run_queue(
    cmd: &QueueCommand,
    queue: &QueueHandle,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match &cmd.action {
        QueueAction::Stats { format } => {
            let stats = queue.stats().await.context("reading queue stats")?;
            match format {
                OutputFormat::Json => write_json(out, &stats)?,
                OutputFormat::Text => render_stats(out, &stats)?,
            }
        }
        QueueAction::Jobs {
            state,
            cvr,
            run,
            limit,
            format,
        } => {
            let jobs = queue
                .jobs_in_state(state.job_state(), cvr.as_deref(), run.as_deref(), *limit)
                .await
                .context("listing jobs")?;
            match format {
                OutputFormat::Json => write_json(out, &jobs)?,
                OutputFormat::Text => render_jobs(out, *state, &jobs)?,
            }
        }
    }
    Ok(())
}

fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn render_list(out: &mut impl Write, letters: &[JobRecord]) -> anyhow::Result<()> {
    let rows = letters
        .iter()
        .map(|l| {
            vec![
                l.job_id.to_string(),
                time(l.dead_at),
                l.job_type.clone(),
                l.customer.clone().unwrap_or_else(|| "-".into()),
                l.final_error_class.clone().unwrap_or_else(|| "-".into()),
                l.attempts.to_string(),
                truncate(l.last_error.as_deref().unwrap_or("-"), 70),
            ]
        })
        .collect::<Vec<_>>();
    render_table(
        out,
        &[
            "ID",
            "DEAD AT",
            "TYPE",
            "CUSTOMER",
            "CLASS",
            "ATTEMPTS",
            "LAST ERROR",
        ],
        &rows,
    )?;
    writeln!(out, "{} dead letters", letters.len())?;
    Ok(())
}

fn render_jobs(out: &mut impl Write, state: ListedState, jobs: &[JobRecord]) -> anyhow::Result<()> {
    let rows = jobs
        .iter()
        .map(|j| {
            let when = match state {
                ListedState::Running => time(j.started_at),
                _ => time(j.run_at),
            };
            vec![
                j.job_id.to_string(),
                j.job_type.clone(),
                j.customer.clone().unwrap_or_else(|| "-".into()),
                j.run.clone().unwrap_or_else(|| "-".into()),
                when,
                match state {
                    ListedState::Running => (j.attempts + 1).to_string(),
                    _ => j.attempts.to_string(),
                },
                match state {
                    ListedState::Running => j.worker.clone().unwrap_or_else(|| "-".into()),
                    // Snoozed (busy, no attempt spent) and never failed: why it waits.
                    _ if j.last_error.is_none() && j.snoozes > 0 => truncate(
                        &format!(
                            "snoozed {}x: {}",
                            j.snoozes,
                            j.last_snooze.as_deref().unwrap_or("-")
                        ),
                        70,
                    ),
                    _ => truncate(
                        &format!(
                            "{}{}",
                            j.last_error_class
                                .as_ref()
                                .map(|c| format!("[{c}] "))
                                .unwrap_or_default(),
                            j.last_error.as_deref().unwrap_or("-")
                        ),
                        70,
                    ),
                },
            ]
        })
        .collect::<Vec<_>>();
    let (when, attempt, last) = match state {
        ListedState::Running => ("STARTED", "ATTEMPT", "WORKER"),
        _ => ("NEXT ATTEMPT", "FAILED", "LAST ERROR"),
    };
    render_table(
        out,
        &["ID", "TYPE", "CUSTOMER", "RUN", when, attempt, last],
        &rows,
    )?;
    let name = match state {
        ListedState::Scheduled => "scheduled",
        ListedState::Retrying => "retrying",
        ListedState::Running => "running",
    };
    writeln!(out, "{} {name} jobs", jobs.len())?;
    Ok(())
}

fn render_show(out: &mut impl Write, l: &JobRecord) -> anyhow::Result<()> {
    let fields = [
        ("id", l.job_id.to_string()),
        ("type", l.job_type.clone()),
        ("state", l.state.as_str().to_owned()),
        ("customer", l.customer.clone().unwrap_or_else(|| "-".into())),
        ("enqueued at", time(l.enqueued_at)),
        ("dead at", time(l.dead_at)),
        (
            "final class",
            l.final_error_class.clone().unwrap_or_else(|| "-".into()),
        ),
        ("attempts", l.attempts.to_string()),
        (
            "replay of",
            l.replay_of
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into()),
        ),
    ];
    for (k, v) in fields {
        writeln!(out, "{k:<12} {v}")?;
    }
    writeln!(out, "payload")?;
    for line in serde_json::to_string_pretty(&l.payload)?.lines() {
        writeln!(out, "  {line}")?;
    }
    writeln!(out, "attempts")?;
    let rows = l
        .attempt_log
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                a.finished_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                a.class.clone(),
                if a.retriable { "yes" } else { "no" }.to_owned(),
                a.chain.join(": "),
            ]
        })
        .collect::<Vec<_>>();
    render_table(
        out,
        &[
            "#",
            "STARTED",
            "FAILED",
            "CLASS",
            "RETRIABLE",
            "ERROR CHAIN",
        ],
        &rows,
    )?;
    Ok(())
}

fn render_stats(out: &mut impl Write, stats: &QueueStats) -> anyhow::Result<()> {
    let rows = stats
        .job_types
        .iter()
        .map(|s| {
            vec![
                s.job_type.clone(),
                s.waiting.to_string(),
                s.scheduled.to_string(),
                s.running.to_string(),
                s.succeeded.to_string(),
                s.failed_attempts.to_string(),
                s.dead.to_string(),
                s.oldest_waiting_ms
                    .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                s.live_workers.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    render_table(
        out,
        &[
            "TYPE",
            "WAITING",
            "SCHEDULED",
            "RUNNING",
            "SUCCEEDED",
            "FAILED ATTEMPTS",
            "DEAD",
            "OLDEST WAITING",
            "WORKERS",
        ],
        &rows,
    )?;
    writeln!(out, "{} live workers", stats.workers.len())?;
    for w in &stats.workers {
        writeln!(
            out,
            "  {}  {}  last heartbeat {}",
            w.name,
            w.job_type,
            time(Some(w.last_heartbeat))
        )?;
    }
    Ok(())
}

fn render_table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
    }

    #[derive(Debug, clap::Subcommand)]
    enum TestCommand {
        Dlq(DlqCommand),
        Queue(QueueCommand),
    }

    #[test]
    fn verify_cli() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn replay_takes_ids_or_all_with_filters_but_not_both() {
        let cli = TestCli::try_parse_from([
            "orgsync",
            "dlq",
            "replay",
            "--all",
            "--cvr",
            "29189846",
            "--since",
            "2026-11-01",
            "--by",
            "anna",
        ])
        .unwrap();
        let TestCommand::Dlq(DlqCommand {
            action: DlqAction::Replay(args),
        }) = cli.command
        else {
            panic!("wrong command");
        };
        assert!(args.all);
        assert_eq!(args.filter.cvr.as_deref(), Some("29189846"));
        assert_eq!(time(args.since), "2026-11-01T00:00:00Z");
        assert!(TestCli::try_parse_from(["orgsync", "dlq", "replay", "a", "--all"]).is_err());
        assert!(TestCli::try_parse_from(["orgsync", "dlq", "replay"]).is_err());
        assert!(TestCli::try_parse_from(["orgsync", "dlq", "replay", "a", "b"]).is_ok());
        assert!(TestCli::try_parse_from(["orgsync", "dlq", "delete"]).is_err());
        assert!(TestCli::try_parse_from(["orgsync", "queue", "stats", "--format", "json"]).is_ok());
    }

    #[test]
    fn tables_are_aligned_on_the_widest_cell() {
        let mut out = Vec::new();
        render_table(
            &mut out,
            &["A", "BB", "C"],
            &[
                vec!["long".into(), "x".into(), "z".into()],
                vec!["s".into(), "yyy".into(), "z".into()],
            ],
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "A     BB   C\nlong  x    z\ns     yyy  z\n");
    }
}
