//! `Tickets`: one ticket per (customer CVR, error class), opened when a run-scoped problem
//! persists, commented at most once per run, followed up when a person closed it, told when the
//! problem recovered, and capped per hour for the whole installation. The state lives in Redis
//! through `orgsync-queue`'s run-state store (this crate knows no key).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use orgsync_queue::{LockAttempt, QueueHandle};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::classes::class_info;
use crate::error::SupportError;
use crate::outcome::{OutcomeKind, RunOutcome};
use crate::scrub::Scrubber;
use crate::sink::log::LogSink;
use crate::sink::zendesk::{ZendeskClient, ZendeskOptions};
use crate::sink::{NewTicket, Sink, TicketStatus};
use crate::text::{self, Streak};

/// How long a customer's ticket state is kept without a run (a customer removed from the
/// configuration is forgotten after this).
const STATE_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// How long `observe` waits for another process observing the same customer.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// When tickets open and recover, and the cap.
#[derive(Clone, Debug)]
pub struct TicketSettings {
    /// Consecutive failing runs that open a ticket (default 2).
    pub open_after_runs: u32,
    /// Good runs in a row that make a ticket recovered (default 1).
    pub recovered_after_runs: u32,
    /// New tickets per hour for the whole installation (default 20).
    pub max_new_tickets_per_hour: u32,
    /// `[web] public_url`: tickets link to `{public_url}/runs/{run_id}`.
    pub public_url: Option<Url>,
}

impl Default for TicketSettings {
    fn default() -> Self {
        TicketSettings {
            open_after_runs: 2,
            recovered_after_runs: 1,
            max_new_tickets_per_hour: 20,
            public_url: None,
        }
    }
}

/// What [`Tickets::observe`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TicketAction {
    /// Nothing to do: a good run with no open ticket, or a refused run.
    Nothing,
    /// This run was observed before; nothing was done again.
    AlreadySeen,
    /// The problem is counted but has not persisted long enough for a ticket.
    Counting {
        /// The class.
        class: String,
        /// Consecutive failing runs so far.
        runs: u32,
    },
    /// A new ticket was opened.
    Opened {
        /// The class.
        class: String,
        /// The new ticket's id.
        ticket: String,
        /// The closed or solved ticket it follows up.
        follows_up: Option<String>,
    },
    /// A private comment was added to the open ticket.
    Commented {
        /// The class.
        class: String,
        /// The ticket.
        ticket: String,
    },
    /// A ticket was due but the hourly cap was reached; the next failing run tries again.
    Capped {
        /// The class.
        class: String,
    },
    /// Tickets got a "recovered" comment (class, ticket id), or recovered silently when their
    /// ticket was closed meanwhile.
    Recovered(Vec<(String, String)>),
}

/// One customer's problems, stored as one JSON value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CustomerState {
    /// The last run observed (a repeated `observe` of it does nothing).
    last_run_id: Option<String>,
    /// Good runs in a row.
    good_runs: u32,
    /// Per class.
    problems: BTreeMap<String, Problem>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Problem {
    since: DateTime<Utc>,
    runs: u32,
    last_run_id: String,
    ticket: Option<String>,
}

impl Problem {
    fn streak(&self) -> Streak {
        Streak {
            since: self.since,
            runs: self.runs,
        }
    }
}

/// The ticket logic. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Tickets {
    queue: QueueHandle,
    sink: Sink,
    settings: TicketSettings,
    scrubber: Scrubber,
}

/// The external id, Sentry fingerprint and state key of a problem: `orgsync:{cvr}:{class}`.
pub fn external_id(cvr: &str, class: &str) -> String {
    format!("orgsync:{cvr}:{class}")
}

impl Tickets {
    /// Tickets to `sink`, state in `queue`'s store.
    pub fn new(queue: QueueHandle, sink: Sink, settings: TicketSettings) -> Tickets {
        Tickets {
            queue,
            sink,
            settings,
            scrubber: Scrubber::new(),
        }
    }

    /// Also removes `secret` literally from every outgoing text.
    pub fn with_secret(mut self, secret: &SecretString) -> Tickets {
        self.scrubber = self.scrubber.with_secret(secret.expose_secret());
        self
    }

    /// Tickets as `[support]` and `[web] public_url` say; the Zendesk token is read from the
    /// variable `zendesk_token_env` names.
    pub fn from_config(
        support: &orgsync_config::SupportConfig,
        public_url: Option<&Url>,
        queue: QueueHandle,
    ) -> Result<Tickets, SupportError> {
        let settings = TicketSettings {
            open_after_runs: support.open_after_runs,
            recovered_after_runs: support.recovered_after_runs,
            max_new_tickets_per_hour: support.max_new_tickets_per_hour,
            public_url: public_url.cloned(),
        };
        match support.sink {
            orgsync_config::SupportSink::Log => Ok(Tickets::new(
                queue,
                Sink::Log(LogSink::new(support.log_file.clone())),
                settings,
            )),
            orgsync_config::SupportSink::Zendesk => {
                let missing = |field: &str| SupportError::Config {
                    field: format!("support.{field}"),
                    message: "missing; sink = \"zendesk\" needs it".to_owned(),
                };
                let url = support
                    .zendesk_url
                    .clone()
                    .ok_or_else(|| missing("zendesk_url"))?;
                let email = support
                    .zendesk_email
                    .clone()
                    .ok_or_else(|| missing("zendesk_email"))?;
                let token = std::env::var(&support.zendesk_token_env)
                    .ok()
                    .filter(|t| !t.trim().is_empty())
                    .map(SecretString::from)
                    .ok_or_else(|| SupportError::Config {
                        field: support.zendesk_token_env.clone(),
                        message: "the Zendesk API token is not set in this environment variable ([support] zendesk_token_env)".to_owned(),
                    })?;
                let client = ZendeskClient::new(ZendeskOptions::new(url, email, token.clone()))?;
                Ok(
                    Tickets::new(queue, Sink::Zendesk(Box::new(client)), settings)
                        .with_secret(&token),
                )
            }
        }
    }

    /// Records a run that ended and opens, comments or recovers tickets accordingly. Calling it
    /// again for the same run does nothing. Sink or Redis trouble is returned (retriable ones
    /// say so); the state is then left as it was, so calling again for the run retries it.
    pub async fn observe(&self, outcome: &RunOutcome) -> Result<TicketAction, SupportError> {
        let lock = format!("support.customer.{}", outcome.cvr);
        let owner = format!("{}:{}", outcome.run_id, std::process::id());
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match self.queue.try_lock(&lock, &owner, LOCK_WAIT * 2).await? {
                LockAttempt::Acquired => break,
                LockAttempt::Held { .. } if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                LockAttempt::Held { owner, .. } => {
                    return Err(SupportError::Busy {
                        cvr: outcome.cvr.clone(),
                        owner,
                    });
                }
            }
        }
        let result = self.observe_locked(outcome).await;
        let _ = self.queue.release_lock(&lock, &owner).await;
        result
    }

    async fn observe_locked(&self, outcome: &RunOutcome) -> Result<TicketAction, SupportError> {
        let name = format!("support.customer.{}", outcome.cvr);
        let mut state: CustomerState = match self.queue.get_value(&name).await? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| SupportError::StateFormat {
                    name: name.clone(),
                    source,
                })?
            }
            None => CustomerState::default(),
        };
        if state.last_run_id.as_deref() == Some(outcome.run_id.as_str()) {
            return Ok(TicketAction::AlreadySeen);
        }
        let action = match outcome.ticket_class() {
            Some(class) => self.failing(outcome, &class, &mut state).await?,
            None if outcome.kind == OutcomeKind::Succeeded => {
                self.good(outcome, &mut state).await?
            }
            None => TicketAction::Nothing,
        };
        state.last_run_id = Some(outcome.run_id.clone());
        let json = serde_json::to_vec(&state).map_err(|source| SupportError::StateFormat {
            name: name.clone(),
            source,
        })?;
        self.queue.put_value(&name, &json, Some(STATE_TTL)).await?;
        Ok(action)
    }

    async fn failing(
        &self,
        outcome: &RunOutcome,
        class: &str,
        state: &mut CustomerState,
    ) -> Result<TicketAction, SupportError> {
        state.good_runs = 0;
        // Another class's streak without a ticket is broken by this run.
        state
            .problems
            .retain(|c, p| c == class || p.ticket.is_some());
        let problem = state
            .problems
            .entry(class.to_owned())
            .or_insert_with(|| Problem {
                since: outcome.at,
                runs: 0,
                last_run_id: String::new(),
                ticket: None,
            });
        problem.runs += 1;
        problem.last_run_id = outcome.run_id.clone();
        let external_id = external_id(&outcome.cvr, class);
        let public_url = self.settings.public_url.as_ref();

        let mut follows_up = None;
        if let Some(ticket) = problem.ticket.clone() {
            match self.sink.status(&ticket).await? {
                Some(TicketStatus::Open) => {
                    let body = text::repeat_comment(outcome, class, problem.streak(), public_url);
                    self.sink
                        .comment(&ticket, &external_id, &self.scrubber.scrub(&body))
                        .await?;
                    return Ok(TicketAction::Commented {
                        class: class.to_owned(),
                        ticket,
                    });
                }
                Some(status) => {
                    // A person closed or solved it: the problem is back, so a new ticket that
                    // follows it up (Zendesk links only closed ones; a solved one is named in
                    // the text).
                    follows_up = Some((ticket, status));
                    problem.ticket = None;
                    problem.since = outcome.at;
                    problem.runs = 1;
                }
                None => {
                    problem.ticket = None;
                }
            }
        }

        let info = class_info(class);
        let due = follows_up.is_some()
            || info.at_once
            || outcome.kind == OutcomeKind::Held
            || problem.runs >= self.settings.open_after_runs;
        if !due {
            return Ok(TicketAction::Counting {
                class: class.to_owned(),
                runs: problem.runs,
            });
        }
        // A ticket for this problem may exist although our state lost it (Redis flushed, or a
        // create whose answer was lost): comment there instead of opening another.
        if follows_up.is_none()
            && let Some(ticket) = self.sink.find_open(&external_id).await?
        {
            let body = text::repeat_comment(outcome, class, problem.streak(), public_url);
            self.sink
                .comment(&ticket, &external_id, &self.scrubber.scrub(&body))
                .await?;
            problem.ticket = Some(ticket.clone());
            return Ok(TicketAction::Commented {
                class: class.to_owned(),
                ticket,
            });
        }
        if !self.take_cap_slot(outcome.at).await? {
            tracing::warn!(
                customer.cvr = %outcome.cvr,
                error.class = class,
                run.id = %outcome.run_id,
                "no ticket opened for CVR {} ({class}): the cap of {} new tickets per hour is reached; the next failing run tries again",
                outcome.cvr,
                self.settings.max_new_tickets_per_hour
            );
            return Ok(TicketAction::Capped {
                class: class.to_owned(),
            });
        }
        let earlier = follows_up.as_ref().map(|(id, _)| id.as_str());
        let words = text::new_ticket(outcome, class, problem.streak(), public_url, earlier);
        let ticket = NewTicket {
            external_id: external_id.clone(),
            idempotency_key: format!("{external_id}:{}", outcome.run_id),
            subject: self.scrubber.scrub(&words.subject),
            body: self.scrubber.scrub(&words.body),
            priority: info.priority.to_owned(),
            tags: vec![
                "orgsync".to_owned(),
                format!("orgsync_{}", class.replace('.', "_")),
                format!("cvr_{}", outcome.cvr),
            ],
            followup_of: follows_up
                .as_ref()
                .filter(|(_, status)| *status == TicketStatus::Closed)
                .map(|(id, _)| id.clone()),
        };
        let id = self.sink.create(&ticket).await?;
        problem.ticket = Some(id.clone());
        tracing::info!(
            customer.cvr = %outcome.cvr,
            error.class = class,
            run.id = %outcome.run_id,
            support.ticket = %id,
            "opened support ticket {id} for CVR {} ({class})",
            outcome.cvr
        );
        Ok(TicketAction::Opened {
            class: class.to_owned(),
            ticket: id,
            follows_up: follows_up.map(|(id, _)| id),
        })
    }

    async fn good(
        &self,
        outcome: &RunOutcome,
        state: &mut CustomerState,
    ) -> Result<TicketAction, SupportError> {
        state.good_runs += 1;
        state.problems.retain(|_, p| p.ticket.is_some());
        if state.problems.is_empty() || state.good_runs < self.settings.recovered_after_runs {
            return Ok(TicketAction::Nothing);
        }
        let mut recovered = Vec::new();
        let public_url = self.settings.public_url.as_ref();
        for (class, problem) in std::mem::take(&mut state.problems) {
            let Some(ticket) = problem.ticket.clone() else {
                continue;
            };
            if self.sink.status(&ticket).await? == Some(TicketStatus::Open) {
                let body = text::recovery_comment(
                    outcome,
                    &class,
                    problem.streak(),
                    state.good_runs,
                    public_url,
                );
                let external_id = external_id(&outcome.cvr, &class);
                self.sink
                    .comment(&ticket, &external_id, &self.scrubber.scrub(&body))
                    .await?;
            }
            recovered.push((class, ticket));
        }
        Ok(TicketAction::Recovered(recovered))
    }

    /// Counts a new ticket in the window of the hour the run ended in (a fleet-wide outage
    /// ends many runs in the same hour); false when the cap is reached.
    async fn take_cap_slot(&self, at: DateTime<Utc>) -> Result<bool, SupportError> {
        let window = format!("support.new_tickets.{}", at.format("%Y%m%d%H"));
        let count = self
            .queue
            .increment_value(&window, Duration::from_secs(2 * 3600))
            .await?;
        Ok(count <= u64::from(self.settings.max_new_tickets_per_hour))
    }
}
