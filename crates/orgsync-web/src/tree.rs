//! The department tree of a run (by default the customer's last run that planned): every synced
//! department with its users, collapsible with `<details>` (no JavaScript), departments whose
//! job failed highlighted and linked to the current job of their dead letter's replay chain.
//! Also as JSON under `/api/`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use maud::{Markup, html};
use orgsync_jobs::report::RunReport;
use orgsync_model::plan::TreeDepartment;
use orgsync_queue::{JobId, JobState};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::CurrentUser;
use crate::view::{page, time};
use crate::{WebError, WebState};

/// How many reports of a customer are looked through for the newest one with a tree (a run
/// that failed before planning has none).
const RUNS_LOOKED_AT: usize = 20;

/// Levels open when the page loads; deeper ones are closed until clicked (except the way to a
/// failed department).
const OPEN_LEVELS: usize = 2;

/// A department's failed job, as the tree shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FailedJob {
    /// The dead-lettered job of the run.
    pub job_id: String,
    /// The current job of its replay chain (the job itself when it was never replayed).
    pub current_job: Option<String>,
    /// That job's state (`dead` until a replay succeeds).
    pub current_state: Option<JobState>,
    /// Its last error.
    pub error: String,
    /// Whether a replay completed it since.
    pub recovered: bool,
}

/// One department in the tree.
#[derive(Clone, Debug, Serialize)]
pub struct TreeNode {
    /// The unit.
    pub uuid: Uuid,
    /// Its title.
    pub title: String,
    /// Users whose primary department it is.
    pub users: u64,
    /// Users here and in every department below.
    pub users_below: u64,
    /// The department job, when it failed for good in this run.
    pub failed: Option<FailedJob>,
    /// Sub-departments, by title.
    pub children: Vec<TreeNode>,
}

/// A run's department tree.
#[derive(Clone, Debug, Serialize)]
pub struct RunTree {
    /// The run.
    pub run_id: String,
    /// Its customer.
    pub cvr: String,
    /// The customer's name.
    pub customer: String,
    /// The run's state.
    pub state: String,
    /// When it was enqueued.
    pub enqueued_at: chrono::DateTime<chrono::Utc>,
    /// Departments in the tree.
    pub departments: usize,
    /// Departments whose job failed and has not recovered.
    pub failed_departments: usize,
    /// The root department(s).
    pub roots: Vec<TreeNode>,
}

async fn failed_jobs(
    state: &WebState,
    report: &RunReport,
) -> Result<HashMap<Uuid, FailedJob>, WebError> {
    let mut out = HashMap::new();
    for f in &report.failed_departments {
        let current = match state
            .queue
            .current_job(&JobId::new(f.job_id.as_str()))
            .await
        {
            Ok(job) => Some(job),
            Err(orgsync_queue::QueueError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        out.insert(
            f.unit,
            FailedJob {
                job_id: f.job_id.clone(),
                current_job: current.as_ref().map(|c| c.job_id.as_str().to_owned()),
                current_state: current.as_ref().map(|c| c.state),
                error: f.error.clone(),
                recovered: f.recovered_at.is_some(),
            },
        );
    }
    Ok(out)
}

/// Builds the nested tree from the parents-first list. A department whose parent is not in the
/// list becomes a root (only the top unit, for a tree the planner made).
fn nest(departments: &[TreeDepartment], failed: &mut HashMap<Uuid, FailedJob>) -> Vec<TreeNode> {
    let known: std::collections::HashSet<Uuid> = departments.iter().map(|d| d.uuid.0).collect();
    let mut children: HashMap<Option<Uuid>, Vec<&TreeDepartment>> = HashMap::new();
    for d in departments {
        let parent = d.parent.map(|p| p.0).filter(|p| known.contains(p));
        children.entry(parent).or_default().push(d);
    }
    fn build(
        d: &TreeDepartment,
        children: &HashMap<Option<Uuid>, Vec<&TreeDepartment>>,
        failed: &mut HashMap<Uuid, FailedJob>,
    ) -> TreeNode {
        let kids: Vec<TreeNode> = children
            .get(&Some(d.uuid.0))
            .map(|list| list.iter().map(|k| build(k, children, failed)).collect())
            .unwrap_or_default();
        TreeNode {
            uuid: d.uuid.0,
            title: d.title.clone(),
            users: d.users,
            users_below: d.users + kids.iter().map(|k| k.users_below).sum::<u64>(),
            failed: failed.remove(&d.uuid.0),
            children: kids,
        }
    }
    children
        .get(&None)
        .map(|roots| roots.iter().map(|r| build(r, &children, failed)).collect())
        .unwrap_or_default()
}

/// The tree of run `run_id`.
pub async fn run_tree(state: &WebState, run_id: &str) -> Result<RunTree, WebError> {
    let report = state.pipeline.report(run_id).await?;
    let departments = state
        .pipeline
        .department_tree(run_id)
        .await?
        .ok_or_else(|| {
            WebError::NotFound(format!(
                "run {run_id} has no department tree: it ended before planning, or its data has expired"
            ))
        })?;
    let mut failed = failed_jobs(state, &report).await?;
    let roots = nest(&departments, &mut failed);
    Ok(RunTree {
        run_id: report.run_id.clone(),
        cvr: report.cvr.clone(),
        customer: report.customer.clone(),
        state: report.state.as_str().to_owned(),
        enqueued_at: report.enqueued_at,
        departments: departments.len(),
        failed_departments: report
            .failed_departments
            .iter()
            .filter(|f| f.recovered_at.is_none())
            .count(),
        roots,
    })
}

/// The tree of the customer's newest run that has one.
pub async fn customer_tree(state: &WebState, cvr: &str) -> Result<RunTree, WebError> {
    for report in state.pipeline.reports(Some(cvr), RUNS_LOOKED_AT).await? {
        if state
            .pipeline
            .department_tree(&report.run_id)
            .await?
            .is_some()
        {
            return run_tree(state, &report.run_id).await;
        }
    }
    Err(WebError::NotFound(format!(
        "customer {cvr} has no run with a department tree among its last {RUNS_LOOKED_AT} runs"
    )))
}

/// Whether a department at or below `n` has a failed job that has not recovered.
fn failure_below(n: &TreeNode) -> bool {
    n.failed.as_ref().is_some_and(|f| !f.recovered) || n.children.iter().any(failure_below)
}

/// A department: open when it is among the first levels or leads to a failed department, so
/// every highlighted department shows without a click.
fn node(n: &TreeNode, level: usize) -> Markup {
    let failed = n.failed.as_ref().filter(|f| !f.recovered);
    let class = if failed.is_some() {
        "dept failed"
    } else {
        "dept"
    };
    let label = html! {
        span.dept-title { (n.title) }
        " "
        span.users title="users whose primary department it is" { (n.users) " users" }
        @if !n.children.is_empty() { span.below { " (" (n.users_below) " with sub-departments)" } }
        @if let Some(f) = &n.failed {
            " "
            @if let Some(cur) = &f.current_job {
                a.dead-letter href=(format!("/jobs/{cur}")) title=(f.error) {
                    @if f.recovered { "recovered: " } @else { "failed: " }
                    (cur) " (" (f.current_state.map(|s| s.as_str()).unwrap_or("?")) ")"
                }
            } @else {
                span.err title=(f.error) { "failed: " (f.job_id) " (gone)" }
            }
        }
    };
    html! {
        @if n.children.is_empty() {
            div class=(class) id=(format!("dept-{}", n.uuid)) data-users=(n.users) { (label) }
        } @else {
            details class=(class) id=(format!("dept-{}", n.uuid)) data-users=(n.users) open[level < OPEN_LEVELS || n.children.iter().any(failure_below)] {
                summary { (label) }
                div.children { @for c in &n.children { (node(c, level + 1)) } }
            }
        }
    }
}

fn render(user: &CurrentUser, t: &RunTree) -> Markup {
    page(
        &format!("Departments of {} ({})", t.customer, t.cvr),
        user,
        html! {
            p id="tree-run" {
                "Run " a href=(format!("/runs/{}", t.run_id)) { (t.run_id) }
                " (" (t.state) ", enqueued " (time(Some(t.enqueued_at))) "): "
                span id="tree-count" { (t.departments) " departments" } ", "
                span id="tree-failed" class=(if t.failed_departments > 0 { "err" } else { "ok" }) {
                    (t.failed_departments) " with a failed job"
                }
                @if t.failed_departments > 0 {
                    " · " a href=(format!("/dead-letters?run={}", t.run_id)) { "this run's dead letters" }
                }
            }
            p.hint { "Click a department to open or close it. Red: its users' job failed for good; the link leads to the dead letter (or the job that replaced it)." }
            div id="tree" { @for r in &t.roots { (node(r, 0)) } }
        },
    )
}

/// `GET /customers/{cvr}/tree`: the tree of the customer's last run.
pub async fn customer_page(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(cvr): Path<String>,
) -> Result<Markup, WebError> {
    Ok(render(&user, &customer_tree(&state, &cvr).await?))
}

/// `GET /runs/{id}/tree`.
pub async fn run_page(
    State(state): State<Arc<WebState>>,
    Extension(user): Extension<CurrentUser>,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    Ok(render(&user, &run_tree(&state, &id).await?))
}

/// `GET /api/customers/{cvr}/tree`.
pub async fn customer_api(
    State(state): State<Arc<WebState>>,
    Path(cvr): Path<String>,
) -> Result<Json<RunTree>, WebError> {
    Ok(Json(customer_tree(&state, &cvr).await?))
}

/// `GET /api/runs/{id}/tree`.
pub async fn run_api(
    State(state): State<Arc<WebState>>,
    Path(id): Path<String>,
) -> Result<Json<RunTree>, WebError> {
    Ok(Json(run_tree(&state, &id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgsync_model::ids::UnitId;

    fn d(n: u128, title: &str, parent: Option<u128>, users: u64) -> TreeDepartment {
        TreeDepartment {
            uuid: UnitId(Uuid::from_u128(n)),
            title: title.into(),
            parent: parent.map(|p| UnitId(Uuid::from_u128(p))),
            users,
        }
    }

    #[test]
    fn nesting_sums_users_below_and_attaches_the_failed_job_to_its_department() {
        let list = [
            d(1, "Kommune", None, 1),
            d(3, "Skole", Some(1), 2),
            d(4, "Kantine", Some(3), 5),
            d(2, "Økonomi", Some(1), 0),
        ];
        let mut failed = HashMap::from([(
            Uuid::from_u128(4),
            FailedJob {
                job_id: "j1".into(),
                current_job: Some("j1".into()),
                current_state: Some(JobState::Dead),
                error: "401".into(),
                recovered: false,
            },
        )]);
        let roots = nest(&list, &mut failed);
        assert_eq!(roots.len(), 1);
        let root = &roots[0];
        assert_eq!(root.users_below, 8);
        let titles: Vec<&str> = root.children.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(titles, ["Skole", "Økonomi"]);
        let kantine = &root.children[0].children[0];
        assert_eq!(kantine.title, "Kantine");
        assert_eq!(
            kantine.failed.as_ref().map(|f| f.job_id.as_str()),
            Some("j1")
        );
        assert!(root.failed.is_none());
        assert!(failed.is_empty(), "every failed job found its department");
    }
}
