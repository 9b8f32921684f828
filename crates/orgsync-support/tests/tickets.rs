//! The ticket lifecycle against a fake Zendesk and the Redis at 127.0.0.1:6379: persistence
//! before a ticket, one comment per run, held runs at once, follow-ups, recovery, the hourly cap,
//! 429s, and no secret or CPR-shaped number in anything the desk received.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use common::{EMAIL, FakeZendesk, TOKEN};
use orgsync_queue::{QueueConfig, QueueHandle};
use orgsync_support::scrub::contains_secret_or_cpr;
use orgsync_support::sink::Sink;
use orgsync_support::sink::log::LogSink;
use orgsync_support::sink::zendesk::{ZendeskClient, ZendeskOptions};
use orgsync_support::{
    OutcomeKind, RunOutcome, StsIncident, SupportError, TicketAction, TicketSettings, Tickets,
};
use secrecy::SecretString;

const CVR: &str = "29189846";
/// Things that must never reach a ticket.
const SECRETS: &[&str] = &[
    TOKEN,
    "hunter2",
    "eyJhbGciOiJSUzI1NiJ9",
    "010203-1234",
    "0102031234",
];

struct App {
    zendesk: FakeZendesk,
    tickets: Tickets,
    queue: QueueHandle,
}

async fn queue(name: &str) -> QueueHandle {
    let prefix = format!(
        "orgsync-test:support-{name}:{}",
        uuid::Uuid::new_v4().simple()
    );
    QueueHandle::connect(QueueConfig::new("redis://127.0.0.1:6379", prefix))
        .await
        .expect("Redis at 127.0.0.1:6379")
}

fn zendesk_sink(url: &url::Url, options: impl FnOnce(&mut ZendeskOptions)) -> Sink {
    let mut o = ZendeskOptions::new(url.clone(), EMAIL, SecretString::from(TOKEN));
    options(&mut o);
    Sink::Zendesk(Box::new(ZendeskClient::new(o).unwrap()))
}

impl App {
    async fn new(name: &str, settings: TicketSettings) -> App {
        let zendesk = FakeZendesk::start().await;
        let queue = queue(name).await;
        let tickets = Tickets::new(queue.clone(), zendesk_sink(&zendesk.url, |_| {}), settings)
            .with_secret(&SecretString::from(TOKEN));
        App {
            zendesk,
            tickets,
            queue,
        }
    }

    /// Scans everything the desk received, then removes the test's Redis keys.
    async fn finish(self) {
        assert_clean(&self.zendesk.all_text());
        for t in self.zendesk.tickets() {
            assert_eq!(t.public_comments, 0, "ticket {} has public comments", t.id);
        }
        self.queue.purge_all_keys().await.unwrap();
    }
}

fn assert_clean(texts: &[String]) {
    assert!(!texts.is_empty());
    for text in texts {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret:?} leaked into:\n{text}");
        }
        assert!(
            !contains_secret_or_cpr(text),
            "secret-shaped text in:\n{text}"
        );
    }
}

fn night(n: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, n, 2, 0, 0).unwrap()
}

/// A run's outcome whose message and STS fault carry things the scrubber must remove.
fn failed(cvr: &str, n: u32, class: &str) -> RunOutcome {
    RunOutcome {
        cvr: cvr.to_owned(),
        customer: "Aarhus Kommune".to_owned(),
        run_id: format!("{cvr}-202612{n:02}T020000-s"),
        at: night(n),
        kind: OutcomeKind::Failed,
        error_class: Some(class.to_owned()),
        message: Some(
            "STS answered 503 (request had password=hunter2, Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.x.y, user 010203-1234)".to_owned(),
        ),
        held_reasons: Vec::new(),
        failed_jobs: Vec::new(),
        sts: Some(StsIncident {
            operation: "OrganisationEnhed/fremsoeg".to_owned(),
            endpoint: Some("https://organisation.stoettesystemerne.dk/organisation/organisationenhed/6/".to_owned()),
            first_call_at: Some(night(n)),
            last_call_at: Some(night(n) + chrono::Duration::minutes(90)),
            fault: Some("Service Unavailable for 0102031234".to_owned()),
            transaction_ids: vec!["6f1c2a3e-1111-4222-8333-944455556666".to_owned()],
        }),
    }
}

fn succeeded(cvr: &str, n: u32) -> RunOutcome {
    RunOutcome {
        kind: OutcomeKind::Succeeded,
        error_class: None,
        message: None,
        sts: None,
        ..failed(cvr, n, "")
    }
}

fn settings() -> TicketSettings {
    TicketSettings {
        public_url: Some(url::Url::parse("https://orgsync.supplier.dk/").unwrap()),
        ..TicketSettings::default()
    }
}

fn opened(action: &TicketAction) -> String {
    match action {
        TicketAction::Opened { ticket, .. } => ticket.clone(),
        other => panic!("expected a new ticket, got {other:?}"),
    }
}

#[tokio::test]
async fn two_failing_nights_open_one_ticket_and_the_third_adds_one_comment() {
    let app = App::new("persist", settings()).await;
    let t = &app.tickets;

    let first = t.observe(&failed(CVR, 1, "sts.unavailable")).await.unwrap();
    assert_eq!(
        first,
        TicketAction::Counting {
            class: "sts.unavailable".into(),
            runs: 1
        }
    );
    assert!(app.zendesk.tickets().is_empty());

    let id = opened(&t.observe(&failed(CVR, 2, "sts.unavailable")).await.unwrap());
    let ticket = app.zendesk.ticket(&id);
    assert_eq!(ticket.external_id, format!("orgsync:{CVR}:sts.unavailable"));
    assert!(ticket.subject.contains("Aarhus Kommune") && ticket.subject.contains(CVR));
    let body = &ticket.comments[0];
    for needle in [
        "Municipality: Aarhus Kommune (CVR 29189846)",
        "Since: 2026-12-01 02:00 UTC (2 consecutive runs)",
        "orgsync runs show 29189846-20261202T020000-s",
        "Dashboard: https://orgsync.supplier.dk/runs/29189846-20261202T020000-s",
        "Text for KOMBIT's service desk",
        "OrganisationEnhed/fremsoeg",
        "6f1c2a3e-1111-4222-8333-944455556666",
    ] {
        assert!(body.contains(needle), "no {needle:?} in:\n{body}");
    }
    // The create carried an Idempotency-Key naming the problem and the run.
    let posts: Vec<_> = app
        .zendesk
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].idempotency_key.as_deref(),
        Some("orgsync:29189846:sts.unavailable:29189846-20261202T020000-s")
    );

    let third = t.observe(&failed(CVR, 3, "sts.unavailable")).await.unwrap();
    assert_eq!(
        third,
        TicketAction::Commented {
            class: "sts.unavailable".into(),
            ticket: id.clone()
        }
    );
    // Observing the same run again (a retried FinishRun) adds nothing.
    assert_eq!(
        t.observe(&failed(CVR, 3, "sts.unavailable")).await.unwrap(),
        TicketAction::AlreadySeen
    );
    assert_eq!(app.zendesk.tickets().len(), 1);
    let comments = app.zendesk.ticket(&id).comments;
    assert_eq!(comments.len(), 2, "{comments:#?}");
    assert!(comments[1].contains("3 consecutive failing runs since 2026-12-01 02:00 UTC"));
    app.finish().await;
}

#[tokio::test]
async fn a_held_run_and_a_missing_service_agreement_open_a_ticket_at_once() {
    let app = App::new("held", settings()).await;
    let held = RunOutcome {
        kind: OutcomeKind::Held,
        error_class: Some("guard.mass_deactivation".into()),
        held_reasons: vec!["over_count".into()],
        sts: None,
        ..failed(CVR, 1, "")
    };
    let id = opened(&app.tickets.observe(&held).await.unwrap());
    let body = &app.zendesk.ticket(&id).comments[0];
    for needle in [
        "Held because: over_count",
        "orgsync runs release 29189846-20261201T020000-s",
        "orgsync explain 29189846 <e-mail>",
    ] {
        assert!(body.contains(needle), "no {needle:?} in:\n{body}");
    }
    assert_eq!(app.zendesk.ticket(&id).priority, "high");

    let other = "11111111";
    let agreement = app
        .tickets
        .observe(&failed(other, 1, "sts.agreement_missing"))
        .await
        .unwrap();
    let id = opened(&agreement);
    let ticket = app.zendesk.ticket(&id);
    assert_eq!(ticket.external_id, "orgsync:11111111:sts.agreement_missing");
    assert!(ticket.comments[0].contains("service agreement"));
    assert_eq!(app.zendesk.tickets().len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn a_ticket_a_person_closed_gets_a_follow_up_and_a_solved_one_a_new_ticket() {
    let app = App::new("followup", settings()).await;
    let t = &app.tickets;
    t.observe(&failed(CVR, 1, "target.auth")).await.unwrap();
    let first = opened(&t.observe(&failed(CVR, 2, "target.auth")).await.unwrap());

    app.zendesk.set_status(&first, "closed");
    let action = t.observe(&failed(CVR, 3, "target.auth")).await.unwrap();
    let TicketAction::Opened {
        ticket: second,
        follows_up,
        ..
    } = action
    else {
        panic!("expected a follow-up ticket, got {action:?}");
    };
    assert_eq!(follows_up.as_deref(), Some(first.as_str()));
    let ticket = app.zendesk.ticket(&second);
    assert_eq!(ticket.via_followup_source_id, Some(first.parse().unwrap()));
    assert!(ticket.comments[0].contains(&format!("follows up ticket #{first}")));
    assert_eq!(
        app.zendesk.ticket(&first).comments.len(),
        1,
        "a closed ticket is not updated"
    );

    app.zendesk.set_status(&second, "solved");
    let action = t.observe(&failed(CVR, 4, "target.auth")).await.unwrap();
    let TicketAction::Opened {
        ticket: third,
        follows_up,
        ..
    } = action
    else {
        panic!("expected a new ticket after a solved one, got {action:?}");
    };
    assert_eq!(follows_up.as_deref(), Some(second.as_str()));
    // Zendesk links follow-ups to closed tickets only; a solved one is named in the text.
    assert_eq!(app.zendesk.ticket(&third).via_followup_source_id, None);
    assert!(app.zendesk.ticket(&third).comments[0].contains(&format!("#{second}")));
    assert_eq!(app.zendesk.tickets().len(), 3);
    app.finish().await;
}

#[tokio::test]
async fn recovery_adds_a_comment_and_a_new_streak_counts_from_one() {
    let app = App::new("recovery", settings()).await;
    let t = &app.tickets;
    t.observe(&failed(CVR, 1, "target.unavailable"))
        .await
        .unwrap();
    let id = opened(
        &t.observe(&failed(CVR, 2, "target.unavailable"))
            .await
            .unwrap(),
    );

    let action = t.observe(&succeeded(CVR, 3)).await.unwrap();
    assert_eq!(
        action,
        TicketAction::Recovered(vec![("target.unavailable".into(), id.clone())])
    );
    let comments = app.zendesk.ticket(&id).comments;
    assert_eq!(comments.len(), 2);
    assert!(
        comments[1].starts_with("Recovered: run 29189846-20261203T020000-s"),
        "{}",
        comments[1]
    );
    assert!(comments[1].contains("lasted from 2026-12-01 02:00 UTC over 2 failing runs"));

    // A second good run has nothing left to say.
    assert_eq!(
        t.observe(&succeeded(CVR, 4)).await.unwrap(),
        TicketAction::Nothing
    );
    assert_eq!(
        t.observe(&failed(CVR, 5, "target.unavailable"))
            .await
            .unwrap(),
        TicketAction::Counting {
            class: "target.unavailable".into(),
            runs: 1
        }
    );
    assert_eq!(app.zendesk.ticket(&id).comments.len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn recovery_waits_for_recovered_after_runs_good_runs() {
    let app = App::new(
        "recovery2",
        TicketSettings {
            recovered_after_runs: 2,
            ..settings()
        },
    )
    .await;
    let t = &app.tickets;
    t.observe(&failed(CVR, 1, "sts.bad_data")).await.unwrap();
    let id = opened(&t.observe(&failed(CVR, 2, "sts.bad_data")).await.unwrap());
    assert_eq!(
        t.observe(&succeeded(CVR, 3)).await.unwrap(),
        TicketAction::Nothing
    );
    assert_eq!(app.zendesk.ticket(&id).comments.len(), 1);
    assert!(matches!(
        t.observe(&succeeded(CVR, 4)).await.unwrap(),
        TicketAction::Recovered(r) if r.len() == 1
    ));
    assert_eq!(app.zendesk.ticket(&id).comments.len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn thirty_customers_failing_at_once_open_at_most_the_hourly_cap() {
    let app = App::new("cap", settings()).await;
    let cvrs: Vec<String> = (0..30).map(|i| format!("{:08}", 30_000_000 + i)).collect();
    for n in 1..=2 {
        let outcomes: Vec<RunOutcome> = cvrs
            .iter()
            .map(|cvr| failed(cvr, n, "sts.unavailable"))
            .collect();
        let actions =
            futures::future::join_all(outcomes.iter().map(|o| app.tickets.observe(o))).await;
        let actions: Vec<TicketAction> = actions.into_iter().map(Result::unwrap).collect();
        if n == 2 {
            let opened = actions
                .iter()
                .filter(|a| matches!(a, TicketAction::Opened { .. }))
                .count();
            let capped = actions
                .iter()
                .filter(|a| matches!(a, TicketAction::Capped { .. }))
                .count();
            assert_eq!((opened, capped), (20, 10), "{actions:?}");
        }
    }
    assert_eq!(app.zendesk.tickets().len(), 20);
    // A capped problem opens its ticket on a later failing run in a new hour.
    let capped_cvr = cvrs
        .iter()
        .find(|cvr| {
            !app.zendesk
                .tickets()
                .iter()
                .any(|t| t.external_id.contains(cvr.as_str()))
        })
        .unwrap()
        .clone();
    opened(
        &app.tickets
            .observe(&failed(&capped_cvr, 3, "sts.unavailable"))
            .await
            .unwrap(),
    );
    assert_eq!(app.zendesk.tickets().len(), 21);
    app.finish().await;
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_endless_429s_are_a_retriable_error() {
    let app = App::new("ratelimit", settings()).await;
    let t = &app.tickets;
    t.observe(&failed(CVR, 1, "sts.unavailable")).await.unwrap();
    app.zendesk.desk.lock().unwrap().rate_limit_next = 1;
    let started = Instant::now();
    let id = opened(&t.observe(&failed(CVR, 2, "sts.unavailable")).await.unwrap());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not waited out"
    );
    assert_eq!(app.zendesk.tickets().len(), 1);
    assert_eq!(app.zendesk.ticket(&id).comments.len(), 1);

    // More 429s than the client waits out: a retriable error, and the run can be observed again.
    app.zendesk.desk.lock().unwrap().rate_limit_next = 10;
    let error = t
        .observe(&failed(CVR, 3, "sts.unavailable"))
        .await
        .unwrap_err();
    assert!(matches!(error, SupportError::RateLimited { .. }), "{error}");
    assert!(error.is_retriable());
    app.zendesk.desk.lock().unwrap().rate_limit_next = 0;
    assert!(matches!(
        t.observe(&failed(CVR, 3, "sts.unavailable")).await.unwrap(),
        TicketAction::Commented { .. }
    ));
    assert_eq!(app.zendesk.ticket(&id).comments.len(), 2);
    app.finish().await;
}

#[tokio::test]
async fn a_lost_ticket_state_finds_the_open_ticket_by_external_id_instead_of_opening_another() {
    let app = App::new("lost", settings()).await;
    t_two_nights(&app.tickets).await;
    assert_eq!(app.zendesk.tickets().len(), 1);
    // Redis loses the state (flushed); the next failing nights find the ticket by external_id.
    app.queue.purge_all_keys().await.unwrap();
    app.tickets
        .observe(&failed(CVR, 3, "sts.unavailable"))
        .await
        .unwrap();
    let action = app
        .tickets
        .observe(&failed(CVR, 4, "sts.unavailable"))
        .await
        .unwrap();
    assert!(
        matches!(action, TicketAction::Commented { .. }),
        "{action:?}"
    );
    assert_eq!(app.zendesk.tickets().len(), 1);
    app.finish().await;
}

async fn t_two_nights(tickets: &Tickets) {
    tickets
        .observe(&failed(CVR, 1, "sts.unavailable"))
        .await
        .unwrap();
    opened(
        &tickets
            .observe(&failed(CVR, 2, "sts.unavailable"))
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn refused_credentials_are_a_clear_error_without_the_token() {
    let zendesk = FakeZendesk::start().await;
    let queue = queue("unauthorized").await;
    let mut options = ZendeskOptions::new(
        zendesk.url.clone(),
        EMAIL,
        SecretString::from("wrong-token-value"),
    );
    options.timeout = Duration::from_secs(5);
    let tickets = Tickets::new(
        queue.clone(),
        Sink::Zendesk(Box::new(ZendeskClient::new(options).unwrap())),
        TicketSettings::default(),
    );
    let held = RunOutcome {
        kind: OutcomeKind::Held,
        ..failed(CVR, 1, "guard.source_drop")
    };
    let error = tickets.observe(&held).await.unwrap_err();
    assert!(
        matches!(error, SupportError::Unauthorized { status: 401, .. }),
        "{error}"
    );
    assert!(!error.is_retriable());
    let text = format!("{error} {error:?}");
    assert!(text.contains("zendesk_token_env"), "{text}");
    assert!(!text.contains("wrong-token-value"), "{text}");
    queue.purge_all_keys().await.unwrap();
}

#[tokio::test]
async fn the_log_sink_writes_the_same_deduplicated_feed_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tickets.jsonl");
    let queue = queue("log").await;
    let tickets = Tickets::new(
        queue.clone(),
        Sink::Log(LogSink::new(Some(path.clone()))),
        settings(),
    );
    for n in 1..=3 {
        tickets
            .observe(&failed(CVR, n, "sts.unavailable"))
            .await
            .unwrap();
    }
    tickets
        .observe(&failed(CVR, 3, "sts.unavailable"))
        .await
        .unwrap();
    tickets.observe(&succeeded(CVR, 4)).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "comment", "comment"]);
    assert_eq!(lines[0]["external_id"], "orgsync:29189846:sts.unavailable");
    assert_eq!(lines[1]["ticket_id"], lines[0]["ticket_id"]);
    assert!(lines[2]["body"].as_str().unwrap().starts_with("Recovered:"));
    assert!(
        lines[0]["body"]
            .as_str()
            .unwrap()
            .contains("Text for KOMBIT's service desk")
    );
    assert_clean(&text.lines().map(str::to_owned).collect::<Vec<_>>());
    queue.purge_all_keys().await.unwrap();
}

#[tokio::test]
async fn from_config_reads_the_token_from_the_named_variable_and_names_it_when_missing() {
    let queue = queue("config").await;
    let mut support = orgsync_config::SupportConfig {
        sink: orgsync_config::SupportSink::Zendesk,
        zendesk_url: Some(url::Url::parse("https://acme.zendesk.com").unwrap()),
        zendesk_email: Some(EMAIL.to_owned()),
        zendesk_token_env: "ORGSYNC_TEST_SUPPORT_TOKEN_UNSET".to_owned(),
        ..Default::default()
    };
    let error = Tickets::from_config(&support, None, queue.clone()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("ORGSYNC_TEST_SUPPORT_TOKEN_UNSET:"),
        "{error}"
    );
    support.sink = orgsync_config::SupportSink::Log;
    assert!(Tickets::from_config(&support, None, queue.clone()).is_ok());
    queue.purge_all_keys().await.unwrap();
}
