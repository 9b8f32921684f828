//! `/metrics` in the Prometheus text format, rendered from the queue's stats and the run
//! reports by [`render`], a plain function so other roles (worker, scheduler) can serve the
//! same text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use orgsync_jobs::report::RunReport;
use orgsync_queue::{DeadLetterFacets, QueueStats};

use crate::{WebError, WebState};

/// What the metrics are made of.
#[derive(Debug, Clone, Default)]
pub struct MetricsInput {
    /// Jobs per type and state, workers.
    pub stats: QueueStats,
    /// Dead letters per customer, job type and error class.
    pub facets: DeadLetterFacets,
    /// Recent run reports (the newest per customer and before).
    pub reports: Vec<RunReport>,
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text for `input`.
pub fn render(input: &MetricsInput) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let mut jobs = Vec::new();
    for t in &input.stats.job_types {
        for (state, n) in [
            ("waiting", t.waiting),
            ("scheduled", t.scheduled),
            ("running", t.running),
            ("succeeded", t.succeeded),
            ("dead", t.dead),
        ] {
            jobs.push((
                format!("job_type=\"{}\",state=\"{state}\"", label(&t.job_type)),
                n,
            ));
        }
    }
    family(
        "orgsync_jobs",
        "gauge",
        "Jobs per type and state (succeeded: within the history retention).",
        jobs,
    );
    family(
        "orgsync_job_failed_attempts_total",
        "counter",
        "Failed job attempts per job type.",
        input
            .stats
            .job_types
            .iter()
            .map(|t| {
                (
                    format!("job_type=\"{}\"", label(&t.job_type)),
                    t.failed_attempts,
                )
            })
            .collect(),
    );
    family(
        "orgsync_oldest_waiting_job_seconds",
        "gauge",
        "Age of the oldest waiting job per job type.",
        input
            .stats
            .job_types
            .iter()
            .map(|t| {
                (
                    format!("job_type=\"{}\"", label(&t.job_type)),
                    t.oldest_waiting_ms.unwrap_or(0) / 1000,
                )
            })
            .collect(),
    );
    family(
        "orgsync_dead_letters",
        "gauge",
        "Dead letters per final error class.",
        input
            .facets
            .error_classes
            .iter()
            .map(|f| (format!("error_class=\"{}\"", label(&f.value)), f.count))
            .collect(),
    );
    family(
        "orgsync_dead_letters_by_customer",
        "gauge",
        "Dead letters per customer.",
        input
            .facets
            .customers
            .iter()
            .map(|f| (format!("cvr=\"{}\"", label(&f.value)), f.count))
            .collect(),
    );
    family(
        "orgsync_workers",
        "gauge",
        "Live workers per job type.",
        input
            .stats
            .job_types
            .iter()
            .map(|t| {
                (
                    format!("job_type=\"{}\"", label(&t.job_type)),
                    t.live_workers,
                )
            })
            .collect(),
    );
    let mut runs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sts: BTreeMap<String, u64> = BTreeMap::new();
    let mut writes: BTreeMap<String, u64> = BTreeMap::new();
    for r in &input.reports {
        *runs
            .entry((r.cvr.clone(), r.state.as_str().to_owned()))
            .or_default() += 1;
        *sts.entry(r.cvr.clone()).or_default() += r.sts_calls;
        *writes.entry(r.cvr.clone()).or_default() += r.writes.written;
    }
    family(
        "orgsync_runs",
        "gauge",
        "Runs per customer and outcome among the kept reports.",
        runs.into_iter()
            .map(|((cvr, state), n)| {
                (
                    format!("cvr=\"{}\",state=\"{}\"", label(&cvr), label(&state)),
                    n,
                )
            })
            .collect(),
    );
    family(
        "orgsync_sts_calls",
        "gauge",
        "STS calls of the kept runs per customer.",
        sts.into_iter()
            .map(|(cvr, n)| (format!("cvr=\"{}\"", label(&cvr)), n))
            .collect(),
    );
    family(
        "orgsync_target_writes",
        "gauge",
        "Target writes of the kept runs per customer.",
        writes
            .into_iter()
            .map(|(cvr, n)| (format!("cvr=\"{}\"", label(&cvr)), n))
            .collect(),
    );
    out
}

/// Reads what [`render`] needs.
pub async fn collect(state: &WebState) -> Result<MetricsInput, WebError> {
    Ok(MetricsInput {
        stats: state.queue.stats().await?,
        facets: state.queue.dead_letter_facets().await?,
        reports: state.pipeline.reports(None, 1_000).await?,
    })
}

/// `GET /metrics`.
pub async fn handler(State(state): State<Arc<WebState>>) -> Result<impl IntoResponse, WebError> {
    let input = collect(&state).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&input),
    ))
}

#[cfg(test)]
mod tests {
    use orgsync_queue::{Facet, JobTypeStats};

    use super::*;

    #[test]
    fn renders_jobs_per_type_and_state_and_dead_letters_per_class_in_prometheus_text() {
        let input = MetricsInput {
            stats: QueueStats {
                job_types: vec![JobTypeStats {
                    job_type: "sync_department".into(),
                    waiting: 3,
                    dead: 2,
                    live_workers: 1,
                    ..JobTypeStats::default()
                }],
                workers: Vec::new(),
            },
            facets: DeadLetterFacets {
                error_classes: vec![Facet {
                    value: "target.\"rejected\"".into(),
                    count: 2,
                }],
                ..DeadLetterFacets::default()
            },
            reports: Vec::new(),
        };
        let text = render(&input);
        assert!(text.contains("# TYPE orgsync_jobs gauge\n"), "{text}");
        assert!(text.contains("orgsync_jobs{job_type=\"sync_department\",state=\"waiting\"} 3\n"));
        assert!(text.contains("orgsync_dead_letters{error_class=\"target.\\\"rejected\\\"\"} 2\n"));
        assert!(text.contains("orgsync_workers{job_type=\"sync_department\"} 1\n"));
    }
}
