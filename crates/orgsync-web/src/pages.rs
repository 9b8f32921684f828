//! The HTML pages: overview (live), jobs by state, job detail with its replay chain, dead
//! letters with filters, selection and confirmed replay/delete, the audit log, runs, a run's
//! report, customers with "Run now", and the release of a held run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use orgsync_jobs::report::{RunReport, Trigger};
use orgsync_queue::{DeadLetterFilter, JobId, JobRecord, JobState};

use crate::auth::{CurrentUser, check_csrf, parse_form};
use crate::view::{self, ago, can_write, csrf, page, progress, time};
use crate::{WebError, WebState};

type Params = Query<HashMap<String, String>>;

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, WebError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            WebError::BadRequest(format!(
                "{field}: expected RFC 3339, YYYY-MM-DDTHH:MM or YYYY-MM-DD (UTC), got {text:?}"
            ))
        })
}

/// The dead-letter filter from query or form fields (`cvr`, `job_type`, `error_class`, `run`,
/// `q`, `since`, `until`).
pub(crate) fn dead_filter<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<DeadLetterFilter, WebError> {
    let s = |k: &str| get(k).map(str::to_owned);
    Ok(DeadLetterFilter {
        customer: s("cvr"),
        job_type: s("job_type"),
        error_class: s("error_class"),
        run: s("run"),
        text: s("q"),
        since: get("since").map(|t| parse_time("since", t)).transpose()?,
        until: get("until").map(|t| parse_time("until", t)).transpose()?,
    })
}

fn filter_fields(f: &DeadLetterFilter) -> Vec<(&'static str, String)> {
    let t = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339());
    [
        ("cvr", f.customer.clone()),
        ("job_type", f.job_type.clone()),
        ("error_class", f.error_class.clone()),
        ("run", f.run.clone()),
        ("q", f.text.clone()),
        ("since", t(f.since)),
        ("until", t(f.until)),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}

fn query_string(fields: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter().map(|(k, v)| (*k, v.as_str())))
        .finish()
}

fn job_link(id: &JobId) -> Markup {
    html! { a href=(format!("/jobs/{id}")) { code { (id) } } }
}

fn state_class(state: JobState) -> &'static str {
    match state {
        JobState::Succeeded => "ok",
        JobState::Dead => "err",
        _ => "",
    }
}

/// The live part of the overview (also `GET /overview/live`).
async fn overview_fragment(state: &WebState) -> Result<Markup, WebError> {
    let stats = state.queue.stats().await?;
    let hours = state.queue.hourly_counts(7 * 24).await?;
    let running = state
        .queue
        .jobs_in_state(JobState::Running, None, None, 200)
        .await?;
    let reports = state.pipeline.reports(None, 50).await?;
    let mut active = Vec::new();
    for r in reports.iter().filter(|r| !r.state.is_final()) {
        active.push(state.pipeline.progress(&r.run_id).await?);
    }
    let oldest = stats
        .job_types
        .iter()
        .filter_map(|t| t.oldest_waiting_ms.map(|ms| (ms, &t.job_type)))
        .max();
    Ok(html! {
        p id="refreshed" { "Updated " (time(Some(Utc::now()))) " UTC" }
        h2 { "Jobs" }
        table id="job-stats" {
            tr { th { "type" } th { "waiting" } th { "scheduled / retrying" } th { "running" } th { "succeeded" } th { "failed attempts" } th { "dead" } th { "workers" } }
            @for t in &stats.job_types {
                tr {
                    td { (t.job_type) }
                    td.num { (t.waiting) }
                    td.num { a href="/jobs?state=retrying" { (t.scheduled) } }
                    td.num { a href="/jobs?state=running" { (t.running) } }
                    td.num { (t.succeeded) }
                    td.num { (t.failed_attempts) }
                    td.num { a href=(format!("/dead-letters?job_type={}", t.job_type)) { (t.dead) } }
                    td.num { (t.live_workers) }
                }
            }
        }
        p { "Oldest waiting job: " @match oldest { Some((ms, ty)) => { (view::duration(ms / 1000)) " (" (ty) ")" } None => { "none waiting" } } }
        h2 { "Runs in progress" }
        @if active.is_empty() { p id="no-active-runs" { "No run in progress." } }
        @else {
            table id="active-runs" {
                tr { th { "run" } th { "customer" } th { "state" } th { "departments" } th { "STS calls" } th { "started" } }
                @for p in &active {
                    @let (done, total) = p.departments();
                    tr {
                        td { a href=(format!("/runs/{}", p.report.run_id)) { (p.report.run_id) } }
                        td { (p.report.customer) " (" (p.report.cvr) ")" }
                        td.state { (p.report.state.as_str()) }
                        td { (progress(done, total)) }
                        td.num { (p.report.sts_calls) }
                        td { (ago(p.report.started_at)) }
                    }
                }
            }
        }
        h2 { "Succeeded, failed attempts and dead per hour" }
        (view::chart(&hours))
        h2 { "Workers" }
        table id="workers" {
            tr { th { "worker" } th { "job type" } th { "heartbeat" } th { "running" } }
            @for w in &stats.workers {
                tr {
                    td { code { (w.name) } }
                    td { (w.job_type) }
                    td { (ago(Some(w.last_heartbeat))) }
                    td { @for j in running.iter().filter(|j| j.worker.as_deref() == Some(w.name.as_str())) { (job_link(&j.job_id)) " " } }
                }
            }
        }
    })
}

/// `GET /`.
pub async fn overview(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
) -> Result<Markup, WebError> {
    let live = overview_fragment(&state).await?;
    Ok(page("Overview", &user, html! { div id="live" { (live) } }))
}

/// `GET /overview/live`: the overview's live part, for polling.
pub async fn overview_live(State(state): State<Arc<WebState>>) -> Result<Markup, WebError> {
    overview_fragment(&state).await
}

/// `GET /jobs?state=retrying|scheduled|running&cvr=&run=&job_type=&q=`.
pub async fn jobs(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Params,
) -> Result<Markup, WebError> {
    let listed = list_jobs(&state, &q).await?;
    let st = param(&q, "state").unwrap_or("retrying");
    Ok(page(
        "Jobs",
        &user,
        html! {
            form.filters method="get" action="/jobs" {
                select name="state" {
                    @for s in ["retrying", "scheduled", "running"] {
                        option value=(s) selected[s == st] { (s) }
                    }
                }
                input name="cvr" placeholder="CVR" value=(param(&q, "cvr").unwrap_or(""));
                input name="run" placeholder="run id" value=(param(&q, "run").unwrap_or(""));
                input name="job_type" placeholder="job type" value=(param(&q, "job_type").unwrap_or(""));
                input name="q" placeholder="text in the error" value=(param(&q, "q").unwrap_or(""));
                button type="submit" { "Filter" }
            }
            table id="jobs" {
                tr { th { "job" } th { "type" } th { "customer" } th { "run" }
                     th { @if st == "running" { "started" } @else { "next attempt" } }
                     th { "failed attempts" } th { @if st == "running" { "worker" } @else { "last error" } } }
                @for j in &listed {
                    tr {
                        td { (job_link(&j.job_id)) }
                        td { (j.job_type) }
                        td { (j.customer.as_deref().unwrap_or("-")) }
                        td { @if let Some(r) = &j.run { a href=(format!("/runs/{r}")) { (r) } } }
                        td { @if st == "running" { (ago(j.started_at)) } @else { (time(j.run_at)) " (" (ago(j.run_at)) ")" } }
                        td.num { (j.attempts) }
                        td { @if st == "running" { code { (j.worker.as_deref().unwrap_or("-")) } }
                             @else { span.err { (j.last_error_class.as_deref().unwrap_or("")) } " " (j.last_error.as_deref().unwrap_or("")) } }
                    }
                }
            }
            p { (listed.len()) " " (st) " jobs" }
        },
    ))
}

pub(crate) async fn list_jobs(
    state: &WebState,
    q: &HashMap<String, String>,
) -> Result<Vec<JobRecord>, WebError> {
    let st = match param(q, "state").unwrap_or("retrying") {
        "retrying" => JobState::Retrying,
        "scheduled" => JobState::Scheduled,
        "running" => JobState::Running,
        other => {
            return Err(WebError::BadRequest(format!(
                "state: expected retrying, scheduled or running, got {other:?}"
            )));
        }
    };
    let mut listed = state
        .queue
        .jobs_in_state(st, param(q, "cvr"), param(q, "run"), 1_000)
        .await?;
    if let Some(t) = param(q, "job_type") {
        listed.retain(|j| j.job_type == t);
    }
    if let Some(text) = param(q, "q") {
        let text = text.to_lowercase();
        listed.retain(|j| {
            j.last_error
                .as_deref()
                .is_some_and(|e| e.to_lowercase().contains(&text))
        });
    }
    Ok(listed)
}

fn attempt_table(j: &JobRecord) -> Markup {
    html! {
        table id="attempts" {
            tr { th { "attempt" } th { "started" } th { "duration" } th { "worker" } th { "class" } th { "error chain" } }
            @for a in &j.attempt_log {
                tr {
                    td.num { (a.attempt) }
                    td { (time(Some(a.started_at))) }
                    td.num { ((a.finished_at - a.started_at).num_milliseconds()) " ms" }
                    td { code { (a.worker) } }
                    td.err { (a.class) @if a.retriable { " (retriable)" } }
                    td { ol { @for c in &a.chain { li { (c) } } } }
                }
            }
        }
    }
}

/// `GET /jobs/{id}`.
pub async fn job(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    let id = JobId::new(id);
    let chain = state.queue.replay_chain(&id).await?;
    let Some(j) = chain.iter().find(|r| r.job_id == id).cloned() else {
        return Err(WebError::NotFound(format!("no job {id}")));
    };
    Ok(page(
        &format!("Job {}", j.job_id),
        &user,
        html! {
            table id="job" {
                tr { th { "type" } td { (j.job_type) } }
                tr { th { "state" } td id="job-state" class=(state_class(j.state)) { (j.state.as_str()) } }
                tr { th { "customer" } td { (j.customer.as_deref().unwrap_or("-")) } }
                tr { th { "run" } td { @if let Some(r) = &j.run { a href=(format!("/runs/{r}")) { (r) } } @else { "-" } } }
                tr { th { "enqueued" } td { (time(j.enqueued_at)) } }
                tr { th { "started" } td { (time(j.started_at)) } }
                tr { th { "finished" } td { (time(j.finished_at)) } }
                tr { th { "dead since" } td { (time(j.dead_at)) } }
                tr { th { "next attempt" } td { (time(j.run_at)) } }
                tr { th { "worker" } td { (j.worker.as_deref().unwrap_or("-")) } }
                tr { th { "failed attempts" } td { (j.attempts) } }
                tr { th { "final error class" } td.err { (j.final_error_class.as_deref().unwrap_or("-")) } }
                @if let Some(by) = &j.replayed_by { tr { th { "replayed by" } td { (by) " at " (time(j.replayed_at)) } } }
            }
            @if chain.len() > 1 {
                h2 { "Replay chain" }
                ol id="replay-chain" {
                    @for r in &chain {
                        li { (job_link(&r.job_id)) " " span class=(state_class(r.state)) { (r.state.as_str()) }
                             @if r.job_id == j.job_id { " (this job)" } }
                    }
                }
            }
            @if j.state == JobState::Dead && can_write(&user) {
                form method="post" action="/dead-letters/confirm" {
                    (csrf(&user))
                    input type="hidden" name="id" value=(j.job_id);
                    button.primary type="submit" name="action" value="replay" id="replay" { "Replay" }
                    " "
                    button.danger type="submit" name="action" value="delete" id="delete" { "Delete" }
                }
            }
            h2 { "Payload" }
            (view::pre_json(&view::redact(&j.payload)))
            h2 { "Attempts" }
            (attempt_table(&j))
        },
    ))
}

/// `GET /dead-letters?cvr=&job_type=&error_class=&run=&q=&since=&until=&cursor=`.
pub async fn dead_letters(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Params,
) -> Result<Markup, WebError> {
    let filter = dead_filter(|k| param(&q, k))?;
    let page_ = state
        .queue
        .dead_letter_page(&filter, param(&q, "cursor"), 50)
        .await?;
    // A free-text count scans every candidate; the confirmation counts before acting anyway.
    let count = match filter.text {
        None => Some(state.queue.count_dead_letters(&filter).await?),
        Some(_) => None,
    };
    let n = count.map(|c| c.to_string()).unwrap_or_default();
    let facets = state.queue.dead_letter_facets().await?;
    let fields = filter_fields(&filter);
    let write = can_write(&user);
    let select = |name: &str, values: &[orgsync_queue::Facet], current: &Option<String>| {
        html! {
            select name=(name) id=(format!("filter-{name}")) {
                option value="" { "any " (name.replace('_', " ")) }
                @for f in values {
                    option value=(f.value) selected[current.as_deref() == Some(f.value.as_str())] { (f.value) " (" (f.count) ")" }
                }
            }
        }
    };
    Ok(page(
        "Dead letters",
        &user,
        html! {
            form.filters method="get" action="/dead-letters" id="filters" {
                (select("cvr", &facets.customers, &filter.customer))
                (select("job_type", &facets.job_types, &filter.job_type))
                (select("error_class", &facets.error_classes, &filter.error_class))
                input name="run" placeholder="run id" value=(filter.run.as_deref().unwrap_or(""));
                input name="q" id="filter-q" placeholder="text in the error" value=(filter.text.as_deref().unwrap_or(""));
                input name="since" placeholder="since (YYYY-MM-DD)" value=(param(&q, "since").unwrap_or(""));
                input name="until" placeholder="until" value=(param(&q, "until").unwrap_or(""));
                button type="submit" id="apply-filter" { "Filter" }
            }
            p id="matching" { @match count { Some(c) => { (c) " dead letters match" } None => { "Matching dead letters below (the count is shown when you act on all of them)" } } }
            form method="post" action="/dead-letters/confirm" id="selection" {
                (csrf(&user))
                @for (k, v) in &fields { input type="hidden" name=(format!("filter_{k}")) value=(v); }
                table id="dead-letters" {
                    tr {
                        @if write { th { input type="checkbox" id="select-all" title="select all on this page"; } }
                        th { "job" } th { "dead since" } th { "type" } th { "customer" } th { "run" } th { "class" } th { "attempts" } th { "last error" } th { "replays" }
                    }
                    @for d in &page_.items {
                        tr.dead-letter {
                            @if write { td { input type="checkbox" name="id" value=(d.job_id); } }
                            td { (job_link(&d.job_id)) }
                            td { (time(d.dead_at)) }
                            td { (d.job_type) }
                            td.cvr { (d.customer.as_deref().unwrap_or("-")) }
                            td { @if let Some(r) = &d.run { a href=(format!("/runs/{r}")) { (r) } } }
                            td.err.class { (d.final_error_class.as_deref().unwrap_or("-")) }
                            td.num { (d.attempts) }
                            td { (d.last_error.as_deref().unwrap_or("")) }
                            td { @if let Some(of) = &d.replay_of { "replay of " (job_link(of)) } }
                        }
                    }
                }
                @if write {
                    p {
                        button.primary type="submit" name="action" value="replay" id="replay-selected" { "Replay selected" } " "
                        button.danger type="submit" name="action" value="delete" id="delete-selected" { "Delete selected" } " "
                        button.primary type="submit" name="action" value="replay-all" id="replay-all" { "Replay all " (n) " matching" } " "
                        button.danger type="submit" name="action" value="delete-all" id="delete-all" { "Delete all " (n) " matching" }
                    }
                }
            }
            @if let Some(next) = &page_.next_cursor {
                @let more: Vec<(&str, String)> = fields.iter().cloned().chain([("cursor", next.clone())]).collect();
                p { a id="next-page" href=(format!("/dead-letters?{}", query_string(&more))) { "Older (search on) →" } }
            }
        },
    ))
}

/// What a dead-letter action touches: explicit ids, or every dead letter matching a filter.
enum Selection {
    Ids(Vec<JobId>),
    Matching(DeadLetterFilter),
}

fn selection(form: &[(String, String)], all: bool) -> Result<Selection, WebError> {
    if all {
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n.strip_prefix("filter_") == Some(k))
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        return Ok(Selection::Matching(dead_filter(get)?));
    }
    let ids: Vec<JobId> = form
        .iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| JobId::new(v.as_str()))
        .collect();
    if ids.is_empty() {
        return Err(WebError::BadRequest(
            "id: select at least one dead letter".into(),
        ));
    }
    Ok(Selection::Ids(ids))
}

/// `POST /dead-letters/confirm`: asks "replay/delete N dead letters?".
pub async fn dead_letters_confirm(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    body: axum::body::Bytes,
) -> Result<Markup, WebError> {
    let form = parse_form(&body);
    check_csrf(&user, &form)?;
    user.require_support()?;
    let action = form
        .iter()
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let (verb, all) = match action {
        "replay" => ("replay", false),
        "delete" => ("delete", false),
        "replay-all" => ("replay", true),
        "delete-all" => ("delete", true),
        other => {
            return Err(WebError::BadRequest(format!(
                "action: expected replay, delete, replay-all or delete-all, got {other:?}"
            )));
        }
    };
    let sel = selection(&form, all)?;
    let count = match &sel {
        Selection::Ids(ids) => ids.len() as u64,
        Selection::Matching(f) => state.queue.count_dead_letters(f).await?,
    };
    Ok(page(
        &format!("Confirm {verb}"),
        &user,
        html! {
            p id="confirm-text" { strong { (verb[..1].to_uppercase()) (verb[1..]) " " (count) " dead " (if count == 1 { "letter" } else { "letters" }) "?" }
                @if verb == "delete" { " They are removed for good." } @else { " Each is enqueued again as a new job with fresh attempts." } }
            form method="post" action=(format!("/dead-letters/{verb}")) {
                (csrf(&user))
                @for (k, v) in form.iter().filter(|(k, _)| k == "id" || k.starts_with("filter_")) { input type="hidden" name=(k) value=(v); }
                @if all { input type="hidden" name="all" value="1"; }
                input type="hidden" name="expected" value=(count);
                button.primary type="submit" id="confirm" { "Yes, " (verb) " " (count) } " "
                a href="/dead-letters" { "Cancel" }
            }
        },
    ))
}

async fn apply(
    state: &WebState,
    user: &CurrentUser,
    body: &[u8],
    replay: bool,
) -> Result<Markup, WebError> {
    let form = parse_form(body);
    check_csrf(user, &form)?;
    user.require_support()?;
    let all = form.iter().any(|(k, v)| k == "all" && v == "1");
    let ids = match selection(&form, all)? {
        Selection::Ids(ids) => ids,
        Selection::Matching(f) => state.queue.dead_letter_ids(&f).await?,
    };
    let mut done: Vec<(JobId, Option<JobId>)> = Vec::new();
    let mut problems = Vec::new();
    for id in ids {
        let result = if replay {
            state
                .queue
                .replay(&id, &user.name)
                .await
                .map(|r| Some(r.new_job))
        } else {
            state
                .queue
                .delete_dead_letter(&id, &user.name)
                .await
                .map(|()| None)
        };
        match result {
            Ok(new) => done.push((id, new)),
            Err(e) => problems.push(format!("{id}: {e}")),
        }
    }
    tracing::info!(web.user = %user.name, count = done.len(), replay, "dead letters changed from the dashboard");
    let verb = if replay { "Replayed" } else { "Deleted" };
    Ok(page(
        verb,
        user,
        html! {
            p id="result" { (verb) " " (done.len()) " dead letters as " (user.name) "." }
            @if !problems.is_empty() { ul.err { @for p in &problems { li { (p) } } } }
            table id="results" {
                tr { th { "dead letter" } @if replay { th { "new job" } } }
                @for (old, new) in &done {
                    tr { td { (job_link(old)) } @if let Some(n) = new { td { (job_link(n)) } } }
                }
            }
            p { a href="/dead-letters" { "Dead letters" } " · " a href="/audit" { "Audit log" } }
        },
    ))
}

/// `POST /dead-letters/replay`.
pub async fn dead_letters_replay(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    body: axum::body::Bytes,
) -> Result<Markup, WebError> {
    apply(&state, &user, &body, true).await
}

/// `POST /dead-letters/delete`.
pub async fn dead_letters_delete(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    body: axum::body::Bytes,
) -> Result<Markup, WebError> {
    apply(&state, &user, &body, false).await
}

/// `GET /audit?before=`.
pub async fn audit(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Params,
) -> Result<Markup, WebError> {
    let p = state.queue.audit_page(param(&q, "before"), 100).await?;
    Ok(page(
        "Audit log",
        &user,
        html! {
            table id="audit" {
                tr { th { "time" } th { "who" } th { "action" } th { "dead letter" } th { "new job" } th { "type" } th { "customer" } th { "class" } }
                @for e in &p.items {
                    tr {
                        td { (time(Some(e.time))) }
                        td.by { (e.by) }
                        td.action { (e.action) }
                        td { (job_link(&e.job_id)) }
                        td { @if let Some(n) = &e.new_job_id { (job_link(n)) } }
                        td { (e.job_type) }
                        td { (e.customer.as_deref().unwrap_or("-")) }
                        td { (e.error_class.as_deref().unwrap_or("-")) }
                    }
                }
            }
            @if let Some(b) = &p.next_before { p { a href=(format!("/audit?before={b}")) { "Older →" } } }
        },
    ))
}

fn runs_table(reports: &[RunReport]) -> Markup {
    html! {
        table id="runs" {
            tr { th { "run" } th { "customer" } th { "state" } th { "trigger" } th { "enqueued" } th { "departments" } th { "writes" } th { "failed departments" } }
            @for r in reports {
                tr {
                    td { a href=(format!("/runs/{}", r.run_id)) { (r.run_id) } }
                    td { (r.customer) " (" (r.cvr) ")" }
                    td.state { (r.state.as_str()) }
                    td { (trigger(&r.trigger)) }
                    td { (time(Some(r.enqueued_at))) }
                    td { (r.departments_done) " / " (r.departments_total) }
                    td.num { (r.writes.written) }
                    td.num { (r.failed_departments.iter().filter(|f| f.recovered_at.is_none()).count()) }
                }
            }
        }
    }
}

fn trigger(t: &Trigger) -> String {
    match t {
        Trigger::Schedule { fire } => format!("schedule {}", fire.format("%Y-%m-%d %H:%M")),
        Trigger::Manual { by } => format!("manual by {by}"),
    }
}

/// `GET /runs?cvr=`.
pub async fn runs(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Query(q): Params,
) -> Result<Markup, WebError> {
    let reports = state.pipeline.reports(param(&q, "cvr"), 100).await?;
    Ok(page("Runs", &user, runs_table(&reports)))
}

fn held_lists(r: &RunReport, page_no: usize) -> Markup {
    let Some(held) = &r.held else {
        return html! {};
    };
    let v = serde_json::to_value(held).unwrap_or_default();
    let empty = Vec::new();
    let users = v["users"].as_array().unwrap_or(&empty);
    let departments = v["departments"].as_array().unwrap_or(&empty);
    let per = 100;
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_owned();
    let unread_user = |u: &serde_json::Value| held.unread.users.contains(&s(&u["user_name"]));
    html! {
        h2 { "Held deactivations (" (held.deactivations) ")" }
        p id="held-reason" { (held.reason) }
        @if !held.unread.is_empty() {
            p id="held-unread" { strong { (held.unread.len()) " of them are unread, not absent" } ": the partial STS read may have missed them, so they may still be in STS. A new run reads them again." }
        }
        h3 { "Users (" (users.len()) ")" }
        table id="held-users" {
            tr { th { "user name" } th { "name" } th { "external id" } th { "read" } }
            @for u in users.iter().skip(page_no * per).take(per) {
                tr.held-user { td.user-name { (s(&u["user_name"])) } td { (s(&u["first_name"])) " " (s(&u["last_name"])) } td { code { (s(&u["external_id"])) } } td { @if unread_user(u) { "unread" } @else { "absent" } } }
            }
        }
        @if users.len() > (page_no + 1) * per { p { a href=(format!("?page={}", page_no + 1)) { "More users →" } } }
        h3 { "Departments (" (departments.len()) ")" }
        table id="held-departments" {
            tr { th { "title" } th { "external id" } }
            @for d in departments.iter().take(1_000) {
                tr { td { (s(&d["title"])) } td { code { (s(&d["external_id"])) } } }
            }
        }
    }
}

/// `GET /runs/{id}`: the run report, with failed departments linked to the current job of
/// their replay chain.
pub async fn run(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Markup, WebError> {
    let progress_ = state.pipeline.progress(&id).await?;
    let r = &progress_.report;
    let (done, total) = progress_.departments();
    let mut current = Vec::new();
    for f in &r.failed_departments {
        let cur = state
            .queue
            .current_job(&JobId::new(f.job_id.as_str()))
            .await
            .ok();
        current.push(cur);
    }
    let page_no = param(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let summary = serde_json::to_value(r.summary.as_ref()).unwrap_or_default();
    Ok(page(
        &format!("Run {}", r.run_id),
        &user,
        html! {
            table id="run" {
                tr { th { "customer" } td { (r.customer) " (" (r.cvr) ")" } }
                tr { th { "state" } td id="run-state" { (r.state.as_str()) } }
                tr { th { "trigger" } td { (trigger(&r.trigger)) } }
                tr { th { "enqueued / started / finished" } td { (time(Some(r.enqueued_at))) " / " (time(r.started_at)) " / " (time(r.finished_at)) } }
                tr { th { "departments" } td { (progress(done, total)) " · " a id="department-tree" href=(format!("/runs/{}/tree", r.run_id)) { "department tree" } } }
                tr { th { "STS calls" } td { (r.sts_calls) } }
                tr { th { "target writes" } td { (r.writes.written) " written, " (r.writes.unchanged) " unchanged, " (r.writes.rejected) " rejected" } }
                @if let Some(e) = &r.error { tr { th { "error" } td.err { (e) } } }
                @if let Some(rel) = &r.release { tr { th { "released" } td { "by " (rel.by) " at " (time(Some(rel.at))) ": " (rel.applied) " applied, " (rel.skipped.len()) " skipped" } } }
            }
            @if r.state.as_str() == "held" && can_write(&user) {
                p { a href=(format!("/runs/{}/release", r.run_id)) id="review-release" { "Review and release the held deactivations" } }
            }
            h2 { "Summary" }
            (view::pre_json(&summary))
            @if !r.skipped.is_empty() {
                h2 { "Skipped users" }
                table { @for (reason, n) in &r.skipped { tr { td { (reason) } td.num { (n) } } } }
            }
            @if !r.failed_departments.is_empty() {
                h2 { "Failed departments" }
                table id="failed-departments" {
                    tr { th { "department" } th { "first job" } th { "current job" } th { "state" } th { "error" } th { "recovered" } }
                    @for (f, cur) in r.failed_departments.iter().zip(&current) {
                        tr {
                            td { (f.title) }
                            td { (job_link(&JobId::new(f.job_id.as_str()))) }
                            td.current-job { @if let Some(c) = cur { (job_link(&c.job_id)) } }
                            td { @if let Some(c) = cur { span class=(state_class(c.state)) { (c.state.as_str()) } } }
                            td.err { (f.error) }
                            td { (time(f.recovered_at)) }
                        }
                    }
                }
                p { a href=(format!("/dead-letters?run={}", r.run_id)) { "This run's dead letters" } }
            }
            (held_lists(r, page_no))
            @if !r.rejections.is_empty() {
                h2 { "Rejected objects" }
                table { @for x in &r.rejections { tr { td { code { (x.external_id) } } td { (x.status.map(|s| s.to_string()).unwrap_or_default()) } td { (x.message) } } } }
            }
            @if !r.issues.is_empty() { h2 { "Issues" } ul { @for i in &r.issues { li { (i) } } } }
            @if !r.notes.is_empty() { h2 { "Notes" } ul { @for n in &r.notes { li { (n) } } } }
        },
    ))
}

/// `GET /runs/{id}/release`: what a release would deactivate, with a confirmation.
pub async fn release_page(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Result<Markup, WebError> {
    user.require_support()?;
    let r = state.pipeline.report(&id).await?;
    if r.state.as_str() != "held" {
        return Err(WebError::Conflict(format!(
            "run {id} is {}, not held: nothing to release",
            r.state.as_str()
        )));
    }
    let page_no = param(&q, "page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let n = r.held.as_ref().map(|h| h.deactivations).unwrap_or(0);
    let unread = r.held.as_ref().map_or(0, |h| h.unread.len());
    Ok(page(
        &format!("Release run {}", r.run_id),
        &user,
        html! {
            p { "Releasing applies these deactivations. Each is re-checked against the target as it is now: one already inactive, gone, or now another source's is skipped and listed." }
            (held_lists(&r, page_no))
            form method="post" action=(format!("/runs/{}/release", r.run_id)) {
                (csrf(&user))
                p { label { input type="checkbox" name="confirm" value="yes" id="confirm-release" required; " I have checked these " (n) " deactivations" } }
                @if unread > 0 {
                    p { label { input type="checkbox" name="include_unread" value="yes" id="include-unread"; " Also deactivate the " (unread) " unread objects (without this the release is refused)" } }
                }
                button.danger type="submit" id="release" { "Release " (n) " deactivations" }
            }
        },
    ))
}

/// `POST /runs/{id}/release`.
pub async fn release(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    let form = parse_form(&body);
    check_csrf(&user, &form)?;
    user.require_support()?;
    if !form.iter().any(|(k, v)| k == "confirm" && v == "yes") {
        return Err(WebError::BadRequest(
            "confirm: tick the confirmation to release".into(),
        ));
    }
    let options = orgsync_jobs::release::ReleaseOptions {
        include_unread: form
            .iter()
            .any(|(k, v)| k == "include_unread" && v == "yes"),
    };
    orgsync_jobs::release::release_with(&state.pipeline, &id, &user.name, options).await?;
    tracing::info!(web.user = %user.name, run.id = %id, "run released from the dashboard");
    Ok(Redirect::to(&format!("/runs/{id}")).into_response())
}

/// `GET /customers`.
pub async fn customers(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
) -> Result<Markup, WebError> {
    let mut rows = Vec::new();
    for c in &state.customers {
        let last = state.pipeline.reports(Some(&c.cvr), 1).await?.pop();
        let active = state.pipeline.active_run(&c.cvr).await?;
        rows.push((c, last, active));
    }
    Ok(page(
        "Customers",
        &user,
        html! {
            table id="customers" {
                tr { th { "CVR" } th { "name" } th { "schedule" } th { "next fire" } th { "last run" } th { "active run" } th {} }
                @for (c, last, active) in &rows {
                    tr {
                        td { (c.cvr) }
                        td { (c.name) " · " a.tree href=(format!("/customers/{}/tree", c.cvr)) { "department tree" } }
                        td { (c.schedule) @if !c.enabled { " (disabled)" } }
                        td { @if c.enabled { (time((c.next_fire)())) } @else { "-" } }
                        td { @if let Some(r) = last {
                            a href=(format!("/runs/{}", r.run_id)) { (r.state.as_str()) } " " (ago(r.finished_at.or(Some(r.enqueued_at))))
                            @if r.state.as_str() == "held" && can_write(&user) { " · " a href=(format!("/runs/{}/release", r.run_id)) { "review release" } }
                        } @else { "never" } }
                        td { @if let Some(a) = active { a href=(format!("/runs/{a}")) { (a) } } }
                        td { @if can_write(&user) {
                            form.inline method="post" action=(format!("/customers/{}/sync", c.cvr)) {
                                (csrf(&user)) button.primary type="submit" { "Run now" }
                            }
                        } }
                    }
                }
            }
        },
    ))
}

/// `POST /customers/{cvr}/sync`: "Run now".
pub async fn run_now(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(cvr): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, WebError> {
    check_csrf(&user, &parse_form(&body))?;
    user.require_support()?;
    let run = state
        .pipeline
        .enqueue_run(
            &cvr,
            Trigger::Manual {
                by: user.name.clone(),
            },
            Duration::ZERO,
        )
        .await?;
    Ok(Redirect::to(&format!("/runs/{}", run.run_id)).into_response())
}
