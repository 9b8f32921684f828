//! The words of tickets and comments: which municipality, what failed, since when, how many runs,
//! what support can do (exact commands and the dashboard link), and for STS-side classes a text
//! for KOMBIT's service desk. Texts are scrubbed by the caller before they leave the process.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use url::Url;

use crate::classes::class_info;
use crate::outcome::{OutcomeKind, RunOutcome};

/// At most this many `dlq replay` commands are listed; the rest by `dlq list`.
const MAX_LISTED_JOBS: usize = 10;

/// A new ticket's subject and first (private) comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketText {
    /// At most 150 characters.
    pub subject: String,
    /// The first comment.
    pub body: String,
}

/// How long the problem has lasted, for the texts.
#[derive(Clone, Copy, Debug)]
pub struct Streak {
    /// The first failing run's end.
    pub since: DateTime<Utc>,
    /// Consecutive failing runs, this one included.
    pub runs: u32,
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The dashboard link of a run, when `[web] public_url` is set.
pub fn run_link(public_url: Option<&Url>, run_id: &str) -> Option<String> {
    public_url.map(|url| format!("{}/runs/{run_id}", url.as_str().trim_end_matches('/')))
}

/// The subject and body of a new ticket for `class`. `follows_up` names the earlier ticket a
/// person closed or solved.
pub fn new_ticket(
    outcome: &RunOutcome,
    class: &str,
    streak: Streak,
    public_url: Option<&Url>,
    follows_up: Option<&str>,
) -> TicketText {
    let info = class_info(class);
    let mut subject = format!(
        "orgsync: {} (CVR {}): {class}",
        outcome.customer, outcome.cvr
    );
    if subject.chars().count() > 150 {
        subject = subject.chars().take(149).collect::<String>() + "…";
    }
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Municipality: {} (CVR {})",
        outcome.customer, outcome.cvr
    );
    let _ = writeln!(body, "Error class: {class}");
    let _ = writeln!(body, "What failed: {}", info.what);
    if let Some(message) = &outcome.message {
        let _ = writeln!(body, "Details: {message}");
    }
    let _ = writeln!(
        body,
        "Since: {} ({} consecutive {})",
        time(streak.since),
        streak.runs,
        if streak.runs == 1 { "run" } else { "runs" }
    );
    let _ = writeln!(
        body,
        "Latest run: {} ({}, ended {})",
        outcome.run_id,
        kind_name(outcome.kind),
        time(outcome.at)
    );
    if !outcome.held_reasons.is_empty() {
        let _ = writeln!(body, "Held because: {}", outcome.held_reasons.join(", "));
    }
    if let Some(earlier) = follows_up {
        let _ = writeln!(
            body,
            "This follows up ticket #{earlier}, which was closed or solved."
        );
    }
    let _ = writeln!(body);
    let _ = writeln!(body, "What support can do: {}", info.action);
    body.push_str(&commands(outcome, public_url));
    if info.kombit {
        let _ = writeln!(body);
        body.push_str(&kombit_text(outcome, class, streak));
    }
    TicketText { subject, body }
}

/// The private comment a later failing run adds to the open ticket.
pub fn repeat_comment(
    outcome: &RunOutcome,
    class: &str,
    streak: Streak,
    public_url: Option<&Url>,
) -> String {
    let mut body = format!(
        "Run {} ({}, ended {}) failed again with {class}: {} consecutive failing runs since {}.\n",
        outcome.run_id,
        kind_name(outcome.kind),
        time(outcome.at),
        streak.runs,
        time(streak.since),
    );
    if let Some(message) = &outcome.message {
        let _ = writeln!(body, "Details: {message}");
    }
    body.push_str(&commands(outcome, public_url));
    if class_info(class).kombit
        && let Some(sts) = &outcome.sts
        && !sts.transaction_ids.is_empty()
    {
        let _ = writeln!(
            body,
            "Transaction UUIDs of this run: {}",
            sts.transaction_ids.join(", ")
        );
    }
    body
}

/// The private comment that says the problem is gone.
pub fn recovery_comment(
    outcome: &RunOutcome,
    class: &str,
    streak: Streak,
    good_runs: u32,
    public_url: Option<&Url>,
) -> String {
    let mut body = format!(
        "Recovered: run {} of {} (CVR {}) succeeded at {} ({} good {} in a row). The problem ({class}) lasted from {} over {} failing {}.\n",
        outcome.run_id,
        outcome.customer,
        outcome.cvr,
        time(outcome.at),
        good_runs,
        if good_runs == 1 { "run" } else { "runs" },
        time(streak.since),
        streak.runs,
        if streak.runs == 1 { "run" } else { "runs" },
    );
    if let Some(link) = run_link(public_url, &outcome.run_id) {
        let _ = writeln!(body, "Run report: {link}");
    }
    body.push_str("orgsync will open a new ticket if it comes back. The ticket can be solved.\n");
    body
}

fn kind_name(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Succeeded => "succeeded",
        OutcomeKind::Failed => "failed",
        OutcomeKind::Held => "held",
        OutcomeKind::PartlyFailed => "partly failed",
        OutcomeKind::Refused => "refused",
    }
}

/// The exact commands for this outcome, one per line.
fn commands(outcome: &RunOutcome, public_url: Option<&Url>) -> String {
    let mut out = String::from("Commands:\n");
    let _ = writeln!(
        out,
        "  orgsync runs show {}        # the run report",
        outcome.run_id
    );
    for id in outcome.failed_jobs.iter().take(MAX_LISTED_JOBS) {
        let _ = writeln!(
            out,
            "  orgsync dlq replay {id}        # after fixing the cause"
        );
    }
    if outcome.failed_jobs.len() > MAX_LISTED_JOBS {
        let _ = writeln!(
            out,
            "  orgsync dlq list --cvr {}        # all {} dead letters; `dlq replay --all --cvr {}` replays them",
            outcome.cvr,
            outcome.failed_jobs.len(),
            outcome.cvr
        );
    }
    if outcome.kind == OutcomeKind::Held {
        let _ = writeln!(
            out,
            "  orgsync explain {} <e-mail>        # why one held user would be deactivated",
            outcome.cvr
        );
        let _ = writeln!(
            out,
            "  orgsync runs release {} --by <your name>        # apply the held deactivations",
            outcome.run_id
        );
    }
    if let Some(link) = run_link(public_url, &outcome.run_id) {
        let _ = writeln!(out, "Dashboard: {link}");
    }
    out
}

/// A ready-to-send text for KOMBIT's service desk (in Danish, as KOMBIT's desk works).
pub fn kombit_text(outcome: &RunOutcome, class: &str, streak: Streak) -> String {
    let mut out = String::from("--- Text for KOMBIT's service desk (ready to send) ---\n");
    let _ = writeln!(
        out,
        "Emne: Fejl ved kald af STS Organisation for {} (CVR {})",
        outcome.customer, outcome.cvr
    );
    let _ = writeln!(out);
    let problem = if class == "sts.bad_data" {
        "returnerer data, vi ikke kan anvende"
    } else {
        "svarer ikke eller svarer med serverfejl"
    };
    match &outcome.sts {
        Some(sts) => {
            let _ = writeln!(
                out,
                "Vi oplever, at STS Organisation {problem} ved kald af {}{} for myndigheden {} (CVR {}).",
                if sts.operation.is_empty() {
                    "Organisation-servicen"
                } else {
                    &sts.operation
                },
                sts.endpoint
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                outcome.customer,
                outcome.cvr
            );
            if let Some(first) = sts.first_call_at {
                let _ = writeln!(out, "Første fejlede kald: {}", time(first));
            }
            if let Some(last) = sts.last_call_at {
                let _ = writeln!(out, "Seneste fejlede kald: {}", time(last));
            }
            if let Some(fault) = &sts.fault {
                let _ = writeln!(out, "Fejlbesked fra servicen: {fault}");
            }
            if !sts.transaction_ids.is_empty() {
                let _ = writeln!(out, "TransaktionsID'er: {}", sts.transaction_ids.join(", "));
            }
        }
        None => {
            let _ = writeln!(
                out,
                "Vi oplever, at STS Organisation {problem} for myndigheden {} (CVR {}).",
                outcome.customer, outcome.cvr
            );
        }
    }
    let _ = writeln!(
        out,
        "Problemet har varet siden {} ({} kørsler i træk).",
        time(streak.since),
        streak.runs
    );
    let _ = writeln!(out, "Vi beder jer undersøge fejlen og vende tilbage.");
    out.push_str("--- end of text ---\n");
    out
}
