//! The JSON API under `/api/`: the same data as the pages, for scripts (HTTP Basic) and for
//! the pages' own polling. Writes take JSON bodies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use orgsync_jobs::report::Trigger;
use orgsync_queue::JobId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::CurrentUser;
use crate::pages::{dead_filter, list_jobs};
use crate::view::redact;
use crate::{WebError, WebState};

type Params = Query<HashMap<String, String>>;

/// The OpenAPI 3.0 document of this API (`docs/openapi.yaml`; a test checks that it names
/// exactly the router's `/api/` routes).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// `GET /api/openapi.yaml`.
pub async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI,
    )
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn redacted(record: &orgsync_queue::JobRecord) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or_default();
    v["payload"] = redact(&record.payload);
    v
}

/// `GET /api/overview`: jobs per type and state, workers, hourly counts (7 days), runs in
/// progress with their department progress.
pub async fn overview(State(state): State<Arc<WebState>>) -> Result<Json<Value>, WebError> {
    let stats = state.queue.stats().await?;
    let hourly = state.queue.hourly_counts(7 * 24).await?;
    let mut active = Vec::new();
    for r in state
        .pipeline
        .reports(None, 50)
        .await?
        .into_iter()
        .filter(|r| !r.state.is_final())
    {
        let p = state.pipeline.progress(&r.run_id).await?;
        let (done, total) = p.departments();
        active.push(
            json!({"run_id": r.run_id, "cvr": r.cvr, "state": p.report.state.as_str(),
            "departments_done": done, "departments_total": total, "sts_calls": p.report.sts_calls}),
        );
    }
    Ok(Json(
        json!({"stats": stats, "hourly": hourly, "runs_in_progress": active}),
    ))
}

/// `GET /api/jobs?state=retrying|scheduled|running&cvr=&run=&job_type=&q=`.
pub async fn jobs(
    State(state): State<Arc<WebState>>,
    Query(q): Params,
) -> Result<Json<Value>, WebError> {
    let listed = list_jobs(&state, &q).await?;
    Ok(Json(
        json!({"jobs": listed.iter().map(redacted).collect::<Vec<_>>()}),
    ))
}

/// `GET /api/jobs/{id}`: the job (payload redacted) and its replay chain.
pub async fn job(
    State(state): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, WebError> {
    let id = JobId::new(id);
    let chain = state.queue.replay_chain(&id).await?;
    let job = chain
        .iter()
        .find(|r| r.job_id == id)
        .ok_or_else(|| WebError::NotFound(format!("no job {id}")))?;
    Ok(Json(json!({
        "job": redacted(job),
        "replay_chain": chain.iter().map(|r| json!({"job_id": r.job_id, "state": r.state})).collect::<Vec<_>>(),
        "current_job": chain.last().map(|r| r.job_id.clone()),
    })))
}

/// `GET /api/dead-letters?cvr=&job_type=&error_class=&run=&q=&since=&until=&cursor=&limit=`.
pub async fn dead_letters(
    State(state): State<Arc<WebState>>,
    Query(q): Params,
) -> Result<Json<Value>, WebError> {
    let filter = dead_filter(|k| param(&q, k))?;
    let limit = match param(&q, "limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1_000).contains(l))
            .ok_or_else(|| WebError::BadRequest(format!("limit: expected 1 to 1000, got {l:?}")))?,
        None => 50,
    };
    let page = state
        .queue
        .dead_letter_page(&filter, param(&q, "cursor"), limit)
        .await?;
    Ok(Json(json!({
        "items": page.items.iter().map(redacted).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// `GET /api/dead-letters/facets`.
pub async fn facets(State(state): State<Arc<WebState>>) -> Result<Json<Value>, WebError> {
    Ok(Json(json!(state.queue.dead_letter_facets().await?)))
}

/// A write's selection: `{"ids": [...]}` or `{"filter": {"cvr": ..., ...}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    /// Explicit dead-letter ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every dead letter matching these fields (`cvr`, `job_type`, `error_class`, `run`, `q`,
    /// `since`, `until`).
    #[serde(default)]
    pub filter: Option<HashMap<String, String>>,
}

async fn selected(state: &WebState, body: &SelectionBody) -> Result<Vec<JobId>, WebError> {
    match (&body.filter, body.ids.is_empty()) {
        (Some(f), true) => {
            let filter = dead_filter(|k| f.get(k).map(String::as_str).filter(|v| !v.is_empty()))?;
            Ok(state.queue.dead_letter_ids(&filter).await?)
        }
        (None, false) => Ok(body.ids.iter().map(|i| JobId::new(i.as_str())).collect()),
        _ => Err(WebError::BadRequest(
            "body: give either \"ids\" (non-empty) or \"filter\"".into(),
        )),
    }
}

/// `POST /api/dead-letters/replay`.
pub async fn replay(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Json(body): Json<SelectionBody>,
) -> Result<Json<Value>, WebError> {
    user.require_support()?;
    let mut replayed = Vec::new();
    let mut errors = Vec::new();
    for id in selected(&state, &body).await? {
        match state.queue.replay(&id, &user.name).await {
            Ok(r) => replayed.push(r),
            Err(e) => errors.push(json!({"job_id": id, "error": e.to_string()})),
        }
    }
    Ok(Json(json!({"replayed": replayed, "errors": errors})))
}

/// `POST /api/dead-letters/delete`.
pub async fn delete(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Json(body): Json<SelectionBody>,
) -> Result<Json<Value>, WebError> {
    user.require_support()?;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for id in selected(&state, &body).await? {
        match state.queue.delete_dead_letter(&id, &user.name).await {
            Ok(()) => deleted.push(id),
            Err(e) => errors.push(json!({"job_id": id, "error": e.to_string()})),
        }
    }
    Ok(Json(json!({"deleted": deleted, "errors": errors})))
}

/// `GET /api/audit?before=&limit=`.
pub async fn audit(
    State(state): State<Arc<WebState>>,
    Query(q): Params,
) -> Result<Json<Value>, WebError> {
    let limit = param(&q, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100);
    Ok(Json(json!(
        state.queue.audit_page(param(&q, "before"), limit).await?
    )))
}

/// `GET /api/runs?cvr=&limit=`.
pub async fn runs(
    State(state): State<Arc<WebState>>,
    Query(q): Params,
) -> Result<Json<Value>, WebError> {
    let limit = param(&q, "limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100);
    Ok(Json(json!(
        state.pipeline.reports(param(&q, "cvr"), limit).await?
    )))
}

/// `GET /api/runs/{id}`: the report, the fan-out, and for each failed department the current
/// job of its replay chain.
pub async fn run(
    State(state): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, WebError> {
    let p = state.pipeline.progress(&id).await?;
    let mut current = Vec::new();
    for f in &p.report.failed_departments {
        let cur = state
            .queue
            .current_job(&JobId::new(f.job_id.as_str()))
            .await
            .ok();
        current.push(json!({"unit": f.unit, "first_job": f.job_id,
            "current_job": cur.as_ref().map(|c| c.job_id.clone()),
            "current_state": cur.as_ref().map(|c| c.state)}));
    }
    let (done, total) = p.departments();
    Ok(Json(json!({"report": p.report, "departments_done": done,
        "departments_total": total, "failed_departments": current})))
}

/// `POST /api/runs/{id}/release`.
pub async fn release(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Result<Json<Value>, WebError> {
    user.require_support()?;
    let report = orgsync_jobs::release::release(&state.pipeline, &id, &user.name).await?;
    Ok(Json(json!(report)))
}

/// `GET /api/customers`.
pub async fn customers(State(state): State<Arc<WebState>>) -> Result<Json<Value>, WebError> {
    let mut out = Vec::new();
    for c in &state.customers {
        let last = state.pipeline.reports(Some(&c.cvr), 1).await?.pop();
        out.push(json!({"cvr": c.cvr, "name": c.name, "schedule": c.schedule, "enabled": c.enabled,
            "next_fire": if c.enabled { (c.next_fire)() } else { None },
            "last_run": last.map(|r| json!({"run_id": r.run_id, "state": r.state.as_str(), "finished_at": r.finished_at})),
            "active_run": state.pipeline.active_run(&c.cvr).await?}));
    }
    Ok(Json(json!(out)))
}

/// `POST /api/customers/{cvr}/sync`: "Run now".
pub async fn run_now(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(cvr): Path<String>,
) -> Result<Json<Value>, WebError> {
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
    Ok(Json(
        json!({"run_id": run.run_id, "job_id": run.job_id, "duplicate": run.duplicate}),
    ))
}
