//! The `orgsync sts ...` subcommands: clap types and their run function, for the binary to plug in.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use orgsync_model::ids::Cvr;
use orgsync_model::policy::{Guards, Mappings, Policy, UserDefaults};
use orgsync_model::validate;
use serde::Serialize;
use serde_json::Value;

use crate::client::{SnapshotRead, StsClient};
use crate::error::StsError;
use crate::issues::ReadIssue;
use crate::limits::SystemLimits;
use crate::options::ClientOptions;
use crate::pager::ReadProgress;

/// Talk to STS Organisation directly.
#[derive(Debug, Clone, Subcommand)]
pub enum StsCommand {
    /// Read one municipality from STS and print the snapshot (JSON) or a summary.
    Snapshot(SnapshotArgs),
}

/// Arguments of `orgsync sts snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// The municipality's CVR number (8 digits).
    #[arg(value_parser = parse_cvr)]
    pub cvr: Cvr,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub format: OutputFormat,
    /// Print the read's progress (calls, objects, estimated calls left) to stderr every
    /// second; on by default when stderr is a terminal.
    #[arg(long)]
    pub progress: bool,
}

/// How `orgsync sts snapshot` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The snapshot JSON plus an `issues` key.
    Json,
    /// Counts and issues, for people.
    Summary,
}

fn parse_cvr(text: &str) -> Result<Cvr, String> {
    Cvr::parse(text).map_err(|e| e.to_string())
}

/// Why a CLI command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The STS read failed.
    #[error(transparent)]
    Sts(#[from] StsError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The snapshot could not be turned into JSON.
    #[error("cannot serialise the snapshot: {0}")]
    Json(#[from] serde_json::Error),
    /// STS answered, but returned no unit: the read is not usable (a municipality has at
    /// least its top unit), so nothing is printed as if it were a snapshot.
    #[error(
        "STS returned no units for CVR {cvr} ({users} users, {calls} calls): check the CVR and organisation_uuid, and that the municipality's organisation is in STS; nothing printed"
    )]
    NoUnits {
        /// The municipality.
        cvr: Cvr,
        /// Users the read found.
        users: usize,
        /// Calls the read made.
        calls: u64,
    },
}

/// One entry of the `issues` key: from the reader or from `orgsync_model::validate`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportedIssue {
    /// `read` (the STS data) or `validate` (the snapshot as a whole).
    pub source: &'static str,
    /// Stable machine-readable code.
    pub code: String,
    /// The unit, user or other object concerned.
    pub object: Option<uuid::Uuid>,
    /// The element concerned (read issues only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<String>,
    /// What happened.
    pub message: String,
}

/// Read issues plus the model's validation issues and faults, for printing.
pub fn report_issues(read: &SnapshotRead) -> Vec<ReportedIssue> {
    let mut out: Vec<ReportedIssue> = read.issues.iter().map(from_read_issue).collect();
    let policy = Policy {
        cvr: read.snapshot.cvr.clone(),
        domains: Vec::new(),
        top_unit: None,
        excluded_units: Default::default(),
        custom_id: Default::default(),
        defaults: UserDefaults {
            user_type: String::new(),
            language: String::new(),
            timezone: String::new(),
            currency: String::new(),
        },
        guards: Guards::default(),
        mappings: Mappings::default(),
    };
    let (issues, faults) = match validate::validate(read.snapshot.clone(), &policy, None) {
        Ok(valid) => (valid.issues().to_vec(), Vec::new()),
        Err(invalid) => (invalid.issues, invalid.faults),
    };
    for issue in issues {
        out.push(ReportedIssue {
            source: "validate",
            code: code_of(&issue.code),
            object: issue.object,
            element: None,
            message: issue.message,
        });
    }
    for fault in faults {
        let code = serde_json::to_value(&fault)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "fault".to_owned());
        out.push(ReportedIssue {
            source: "validate",
            code,
            object: None,
            element: None,
            message: fault.to_string(),
        });
    }
    out
}

fn code_of(code: &impl Serialize) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn from_read_issue(issue: &ReadIssue) -> ReportedIssue {
    ReportedIssue {
        source: "read",
        code: code_of(&issue.code),
        object: issue.object,
        element: Some(format!("{}/{}", issue.object_kind, issue.element)),
        message: issue.message.clone(),
    }
}

/// The JSON printed by `--format json`: the snapshot's JSON with an `issues` key added.
pub fn snapshot_json(read: &SnapshotRead) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(&read.snapshot)?;
    let issues = serde_json::to_value(report_issues(read))?;
    if let Value::Object(map) = &mut value {
        map.insert("issues".to_owned(), issues);
        map.insert("sts_calls".to_owned(), Value::from(read.calls));
    }
    Ok(value)
}

/// Where `orgsync sts` commands get their client: [`ClientOptions`] alone give the unsigned
/// (simulator) transport; the binary's configuration gives the signed one where configured.
pub trait ClientSource {
    /// A client for one municipality.
    fn client(&self, cvr: &Cvr, limits: SystemLimits) -> Result<StsClient, StsError>;
    /// The system-wide calls-per-second limit.
    fn max_calls_per_second(&self) -> f64;
}

impl ClientSource for ClientOptions {
    fn client(&self, cvr: &Cvr, limits: SystemLimits) -> Result<StsClient, StsError> {
        StsClient::new(cvr.clone(), self, limits)
    }

    fn max_calls_per_second(&self) -> f64 {
        self.max_calls_per_second
    }
}

/// Runs an `orgsync sts` command with clients from `source`, printing to `out` (progress, when
/// asked for or when stderr is a terminal, to stderr).
pub async fn run(
    command: &StsCommand,
    source: &impl ClientSource,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let StsCommand::Snapshot(args) = command;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if args.progress || terminal {
        let mut stderr = ProgressLines {
            out: std::io::stderr(),
            terminal,
        };
        let result = run_with_progress(command, source, out, Some(&mut stderr)).await;
        if terminal {
            // End the line rewritten in place.
            writeln!(stderr.out)?;
        }
        result
    } else {
        run_with_progress(command, source, out, None).await
    }
}

/// Where progress lines go: one per line, or, on a terminal, one line rewritten in place.
struct ProgressLines<W: Write> {
    out: W,
    terminal: bool,
}

impl<W: Write> Write for ProgressLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.terminal && buf.ends_with(b"\n") {
            self.out.write_all(b"\r\x1b[2K")?;
            self.out.write_all(&buf[..buf.len() - 1])?;
            self.out.flush()?;
            return Ok(buf.len());
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// One progress line, for people.
pub fn progress_line(progress: &ReadProgress) -> String {
    let left = match (progress.done, progress.paging) {
        (true, _) => "done".to_owned(),
        (false, true) => format!("at least {} calls left", progress.remaining_estimate),
        (false, false) => format!("about {} calls left", progress.remaining_estimate),
    };
    format!(
        "reading STS: {} calls, {} objects found, {left}",
        progress.calls, progress.objects
    )
}

/// Like [`run`], with the progress lines (every second and at the end) written to `progress`.
pub async fn run_with_progress(
    command: &StsCommand,
    source: &impl ClientSource,
    out: &mut impl Write,
    mut progress: Option<&mut dyn Write>,
) -> Result<(), CliError> {
    match command {
        StsCommand::Snapshot(args) => {
            let limits = SystemLimits::new(source.max_calls_per_second());
            let client = source.client(&args.cvr, limits)?;
            let watch = client.progress();
            let reading = client.read_snapshot();
            tokio::pin!(reading);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let read = loop {
                tokio::select! {
                    read = &mut reading => break read,
                    _ = tick.tick() => {
                        if let Some(progress) = progress.as_mut() {
                            writeln!(progress, "{}", progress_line(&watch.borrow()))?;
                        }
                    }
                }
            };
            if let Some(progress) = progress.as_mut() {
                writeln!(progress, "{}", progress_line(&watch.borrow()))?;
            }
            let read = read?;
            if read.snapshot.units.is_empty() {
                return Err(CliError::NoUnits {
                    cvr: args.cvr.clone(),
                    users: read.snapshot.users.len(),
                    calls: read.calls,
                });
            }
            match args.format {
                OutputFormat::Json => {
                    serde_json::to_writer_pretty(&mut *out, &snapshot_json(&read)?)?;
                    writeln!(out)?;
                }
                OutputFormat::Summary => write_summary(&read, out)?,
            }
            Ok(())
        }
    }
}

fn write_summary(read: &SnapshotRead, out: &mut impl Write) -> std::io::Result<()> {
    let snapshot = &read.snapshot;
    let active_units = snapshot.units.iter().filter(|u| u.active).count();
    let active_users = snapshot.users.iter().filter(|u| u.active).count();
    let positions: usize = snapshot.users.iter().map(|u| u.positions.len()).sum();
    let managers: usize = snapshot
        .users
        .iter()
        .flat_map(|u| &u.positions)
        .filter(|p| p.manager)
        .count();
    let with_email = snapshot.users.iter().filter(|u| u.email.is_some()).count();
    writeln!(out, "municipality {}", snapshot.cvr)?;
    writeln!(
        out,
        "units        {} ({active_units} active)",
        snapshot.units.len()
    )?;
    writeln!(
        out,
        "users        {} ({active_users} active, {with_email} with e-mail)",
        snapshot.users.len()
    )?;
    writeln!(out, "positions    {positions} ({managers} manager)")?;
    writeln!(out, "sts calls    {}", read.calls)?;
    match &snapshot.partial {
        Some(reason) => writeln!(out, "PARTIAL      {reason}")?,
        None => writeln!(out, "complete     yes")?,
    }
    let issues = report_issues(read);
    writeln!(out, "issues       {}", issues.len())?;
    for issue in issues.iter().take(50) {
        let object = issue.object.map(|o| format!(" {o}")).unwrap_or_default();
        let element = issue
            .element
            .as_deref()
            .map(|e| format!(" [{e}]"))
            .unwrap_or_default();
        writeln!(
            out,
            "  {} {}{object}{element}: {}",
            issue.source, issue.code, issue.message
        )?;
    }
    if issues.len() > 50 {
        writeln!(out, "  ... and {} more", issues.len() - 50)?;
    }
    Ok(())
}
