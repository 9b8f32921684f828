//! The queue's statistics in the Prometheus text exposition format, for any `/metrics` endpoint
//! (the worker's and scheduler's `--metrics-bind`, a dashboard).

use std::fmt::Write as _;

use crate::model::QueueStats;

/// Renders `stats` as Prometheus text (format 0.0.4): jobs per type and state, failed
/// attempts, dead letters, the oldest waiting job's age and live workers, every series
/// labelled by `job_type`. Appends to `out`, so a caller can add its own series before or after.
///
/// Series: `orgsync_queue_jobs{job_type,state}` (gauge; states `waiting`, `scheduled`,
/// `running`, `succeeded`, `dead`), `orgsync_queue_failed_attempts_total{job_type}` (counter),
/// `orgsync_queue_dead_letters{job_type}` (gauge), `orgsync_queue_oldest_waiting_seconds{job_type}`
/// (gauge, 0 when nothing waits), `orgsync_queue_workers{job_type}` (gauge, live workers).
pub fn render_prometheus(stats: &QueueStats, out: &mut String) {
    header(
        out,
        "orgsync_queue_jobs",
        "gauge",
        "Jobs per type and state (succeeded: within the history retention).",
    );
    for t in &stats.job_types {
        let job_type = escape(&t.job_type);
        for (state, n) in [
            ("waiting", t.waiting),
            ("scheduled", t.scheduled),
            ("running", t.running),
            ("succeeded", t.succeeded),
            ("dead", t.dead),
        ] {
            let _ = writeln!(
                out,
                "orgsync_queue_jobs{{job_type=\"{job_type}\",state=\"{state}\"}} {n}"
            );
        }
    }
    let series: [Series; 4] = [
        (
            "orgsync_queue_failed_attempts_total",
            "counter",
            "Failed attempts, all time.",
            |t| t.failed_attempts as f64,
        ),
        (
            "orgsync_queue_dead_letters",
            "gauge",
            "Jobs in the dead-letter queue now (they wait for a person to replay or delete them).",
            |t| t.dead as f64,
        ),
        (
            "orgsync_queue_oldest_waiting_seconds",
            "gauge",
            "Age of the oldest job ready to run and not yet fetched; 0 when none waits.",
            |t| t.oldest_waiting_ms.unwrap_or(0) as f64 / 1000.0,
        ),
        (
            "orgsync_queue_workers",
            "gauge",
            "Workers of this job type with a recent heartbeat.",
            |t| t.live_workers as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for t in &stats.job_types {
            let _ = writeln!(
                out,
                "{name}{{job_type=\"{}\"}} {}",
                escape(&t.job_type),
                value(t)
            );
        }
    }
}

/// One per-job-type series: name, type, help, and how to read its value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::model::JobTypeStats) -> f64,
);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the exposition format requires (`\`, `"` and newlines).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobTypeStats;

    #[test]
    fn every_job_type_has_every_series_with_its_values() {
        let stats = QueueStats {
            job_types: vec![JobTypeStats {
                job_type: "sync_customer".to_owned(),
                waiting: 3,
                scheduled: 1,
                running: 2,
                succeeded: 40,
                failed_attempts: 7,
                dead: 5,
                oldest_waiting_ms: Some(1500),
                live_workers: 4,
            }],
            workers: Vec::new(),
        };
        let mut text = String::new();
        render_prometheus(&stats, &mut text);
        for line in [
            "# TYPE orgsync_queue_jobs gauge",
            "orgsync_queue_jobs{job_type=\"sync_customer\",state=\"waiting\"} 3",
            "orgsync_queue_jobs{job_type=\"sync_customer\",state=\"running\"} 2",
            "orgsync_queue_jobs{job_type=\"sync_customer\",state=\"dead\"} 5",
            "# TYPE orgsync_queue_failed_attempts_total counter",
            "orgsync_queue_failed_attempts_total{job_type=\"sync_customer\"} 7",
            "orgsync_queue_dead_letters{job_type=\"sync_customer\"} 5",
            "orgsync_queue_oldest_waiting_seconds{job_type=\"sync_customer\"} 1.5",
            "orgsync_queue_workers{job_type=\"sync_customer\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
