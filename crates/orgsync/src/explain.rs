//! `orgsync explain <cvr> <e-mail | user name | UUID>`: an object's history from the provisioning
//! log and what the next run would do to it now, and why.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use orgsync_jobs::pipeline::Pipeline;

use crate::runs::Format;

/// `orgsync explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The municipality's CVR number.
    pub cvr: String,
    /// The user's e-mail or user name (STS or target), or the STS UUID of a user or unit.
    pub object: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only the history from the log: do not read STS and the target (a full read of the
    /// municipality, as `plan` does) to say what the next run would do.
    #[arg(long)]
    pub history_only: bool,
}

/// Runs `orgsync explain`. Exit 1 when nothing at all is known of the object.
pub(crate) async fn run(
    pipeline: &Pipeline,
    args: &ExplainArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let explanation = pipeline
        .explain(&args.cvr, &args.object, !args.history_only)
        .await
        .with_context(|| format!("cannot explain {} of {}", args.object, args.cvr))?;
    match args.format {
        Format::Text => write!(out, "{}", explanation.to_text())?,
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?,
    }
    let known = !explanation.history.is_empty()
        || explanation.now.as_ref().is_some_and(|n| {
            n.sts_user.is_some()
                || n.sts_unit.is_some()
                || n.target_user.is_some()
                || n.target_department.is_some()
        });
    Ok(if known {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
