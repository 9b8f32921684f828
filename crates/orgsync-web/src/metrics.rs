//! `/metrics` in the Prometheus text format: the queue's series through the queue crate's
//! renderer (the one the worker's and scheduler's `/metrics` use), plus the runs, STS calls and
//! target writes of the kept run reports.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use orgsync_jobs::report::RunReport;
use orgsync_queue::{DeadLetterFacets, QueueStats, metrics};

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

/// The Prometheus text for `input`: the queue's series and dead letters by class and customer
/// (the same renderer as the worker's `/metrics`), then the runs of the kept reports.
pub fn render(input: &MetricsInput) -> String {
    let mut out = String::new();
    metrics::render_prometheus(&input.stats, &mut out);
    metrics::render_dead_letter_facets(&input.facets, &mut out);
    let mut runs: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut sts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut writes: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &input.reports {
        *runs.entry((&r.cvr, r.state.as_str())).or_default() += 1;
        *sts.entry(&r.cvr).or_default() += r.sts_calls;
        *writes.entry(&r.cvr).or_default() += r.writes.written;
    }
    let mut f = metrics::family(
        &mut out,
        "orgsync_runs",
        "gauge",
        "Runs per customer and outcome among the kept reports.",
    );
    for ((cvr, state), n) in runs {
        f.sample(&[("cvr", cvr), ("state", state)], n);
    }
    let mut f = metrics::family(
        &mut out,
        "orgsync_sts_calls",
        "gauge",
        "STS calls of the kept runs per customer.",
    );
    for (cvr, n) in sts {
        f.sample(&[("cvr", cvr)], n);
    }
    let mut f = metrics::family(
        &mut out,
        "orgsync_target_writes",
        "gauge",
        "Target writes of the kept runs per customer.",
    );
    for (cvr, n) in writes {
        f.sample(&[("cvr", cvr)], n);
    }
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
    fn renders_the_queue_series_dead_letters_and_runs_in_prometheus_text() {
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
                    value: "target.unauthorized".into(),
                    count: 2,
                }],
                ..DeadLetterFacets::default()
            },
            reports: Vec::new(),
        };
        let text = render(&input);
        for line in [
            "# TYPE orgsync_queue_jobs gauge",
            "orgsync_queue_jobs{job_type=\"sync_department\",state=\"waiting\"} 3",
            "orgsync_queue_dead_letters_by_class{error_class=\"target.unauthorized\"} 2",
            "orgsync_queue_workers{job_type=\"sync_department\"} 1",
            "# TYPE orgsync_queue_attempt_duration_seconds histogram",
            "# TYPE orgsync_runs gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
