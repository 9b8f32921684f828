//! The one Prometheus renderer of orgsync: the text exposition format (0.0.4) written by
//! [`family`] and [`Family::sample`], and the queue's series ([`render_prometheus`],
//! [`render_dead_letter_facets`]). The worker's and scheduler's `--metrics-bind` `/metrics` and
//! the dashboard's `/metrics` render the queue's series through it, so a series has the same
//! name and labels wherever it is scraped; the dashboard writes its run series with [`family`]
//! too, the roles append their process series after it.
//!
//! Hand-written rather than `prometheus-client`: every value is read from Redis at scrape time
//! (no process-local registry to update), so the crate would only be a text writer, and this
//! one is some fifty lines.

use std::fmt::{Display, Write as _};

use crate::dashboard::DeadLetterFacets;
use crate::model::{ATTEMPT_DURATION_BUCKETS_MS, QueueStats};

/// One metric family being written: its `# HELP` and `# TYPE` lines are out; add samples.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

/// Starts family `name` of type `kind` (`gauge`, `counter`, `histogram`) in `out`.
pub fn family<'a>(out: &'a mut String, name: &'a str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out, name }
}

impl Family<'_> {
    /// A sample of the family itself.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        self.sample_of("", labels, value)
    }

    /// A sample of a suffixed series of the family (`_bucket`, `_sum`, `_count`).
    pub fn sample_of(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            let text: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", text.join(","));
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// Renders the queue's statistics, every series labelled by `job_type`. Appends to `out`.
///
/// Series: `orgsync_queue_jobs{job_type,state}` (gauge; states `waiting`, `scheduled`,
/// `running`, `succeeded`, `dead`), `orgsync_queue_failed_attempts_total{job_type}` (counter),
/// `orgsync_queue_snoozes_total{job_type}` (counter),
/// `orgsync_queue_dead_letters{job_type}` (gauge), `orgsync_queue_oldest_waiting_seconds{job_type}`
/// (gauge, 0 when nothing waits), `orgsync_queue_workers{job_type}` (gauge, live workers),
/// `orgsync_queue_attempt_duration_seconds{job_type}` (histogram of every attempt, succeeded or
/// failed, all time; buckets [`ATTEMPT_DURATION_BUCKETS_MS`]).
pub fn render_prometheus(stats: &QueueStats, out: &mut String) {
    let mut f = family(
        out,
        "orgsync_queue_jobs",
        "gauge",
        "Jobs per type and state (succeeded: within the history retention).",
    );
    for t in &stats.job_types {
        for (state, n) in [
            ("waiting", t.waiting),
            ("scheduled", t.scheduled),
            ("running", t.running),
            ("succeeded", t.succeeded),
            ("dead", t.dead),
        ] {
            f.sample(&[("job_type", &t.job_type), ("state", state)], n);
        }
    }
    let series: [Series; 5] = [
        (
            "orgsync_queue_failed_attempts_total",
            "counter",
            "Failed attempts, all time.",
            |t| t.failed_attempts as f64,
        ),
        (
            "orgsync_queue_snoozes_total",
            "counter",
            "Snoozes (a job found what it needs busy and runs again later without spending an attempt), all time.",
            |t| t.snoozes as f64,
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
        let mut f = family(out, name, kind, help);
        for t in &stats.job_types {
            f.sample(&[("job_type", &t.job_type)], value(t));
        }
    }
    let mut f = family(
        out,
        "orgsync_queue_attempt_duration_seconds",
        "histogram",
        "How long job attempts took (succeeded and failed), all time.",
    );
    for t in &stats.job_types {
        let h = &t.attempt_durations;
        for (bound, n) in ATTEMPT_DURATION_BUCKETS_MS.iter().zip(&h.cumulative) {
            let le = (*bound as f64 / 1000.0).to_string();
            f.sample_of("_bucket", &[("job_type", &t.job_type), ("le", &le)], n);
        }
        f.sample_of(
            "_bucket",
            &[("job_type", &t.job_type), ("le", "+Inf")],
            h.count,
        );
        f.sample_of(
            "_sum",
            &[("job_type", &t.job_type)],
            h.sum_ms as f64 / 1000.0,
        );
        f.sample_of("_count", &[("job_type", &t.job_type)], h.count);
    }
}

/// Renders the dead letters per final error class and per customer (the dashboard's facets):
/// `orgsync_queue_dead_letters_by_class{error_class}` and
/// `orgsync_queue_dead_letters_by_customer{cvr}` (gauges). Appends to `out`.
pub fn render_dead_letter_facets(facets: &DeadLetterFacets, out: &mut String) {
    let mut f = family(
        out,
        "orgsync_queue_dead_letters_by_class",
        "gauge",
        "Dead letters per final error class.",
    );
    for c in &facets.error_classes {
        f.sample(&[("error_class", &c.value)], c.count);
    }
    let mut f = family(
        out,
        "orgsync_queue_dead_letters_by_customer",
        "gauge",
        "Dead letters per customer.",
    );
    for c in &facets.customers {
        f.sample(&[("cvr", &c.value)], c.count);
    }
}

/// One per-job-type series: name, type, help, and how to read its value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::model::JobTypeStats) -> f64,
);

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
    use crate::dashboard::Facet;
    use crate::model::{DurationHistogram, JobTypeStats};

    #[test]
    fn every_job_type_has_every_series_with_its_values() {
        let mut cumulative = vec![0; ATTEMPT_DURATION_BUCKETS_MS.len()];
        cumulative[1..].iter_mut().for_each(|c| *c = 2);
        let stats = QueueStats {
            job_types: vec![JobTypeStats {
                job_type: "sync_customer".to_owned(),
                waiting: 3,
                scheduled: 1,
                running: 2,
                succeeded: 40,
                failed_attempts: 7,
                snoozes: 9,
                dead: 5,
                oldest_waiting_ms: Some(1500),
                live_workers: 4,
                attempt_durations: DurationHistogram {
                    cumulative,
                    count: 3,
                    sum_ms: 3_100_150,
                },
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
            "# TYPE orgsync_queue_snoozes_total counter",
            "orgsync_queue_snoozes_total{job_type=\"sync_customer\"} 9",
            "orgsync_queue_dead_letters{job_type=\"sync_customer\"} 5",
            "orgsync_queue_oldest_waiting_seconds{job_type=\"sync_customer\"} 1.5",
            "orgsync_queue_workers{job_type=\"sync_customer\"} 4",
            "# TYPE orgsync_queue_attempt_duration_seconds histogram",
            "orgsync_queue_attempt_duration_seconds_bucket{job_type=\"sync_customer\",le=\"0.05\"} 0",
            "orgsync_queue_attempt_duration_seconds_bucket{job_type=\"sync_customer\",le=\"0.1\"} 2",
            "orgsync_queue_attempt_duration_seconds_bucket{job_type=\"sync_customer\",le=\"1800\"} 2",
            "orgsync_queue_attempt_duration_seconds_bucket{job_type=\"sync_customer\",le=\"+Inf\"} 3",
            "orgsync_queue_attempt_duration_seconds_sum{job_type=\"sync_customer\"} 3100.15",
            "orgsync_queue_attempt_duration_seconds_count{job_type=\"sync_customer\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn dead_letters_per_class_and_customer_escape_their_label_values() {
        let facets = DeadLetterFacets {
            error_classes: vec![Facet {
                value: "target.\"rejected\"".into(),
                count: 2,
            }],
            customers: vec![Facet {
                value: "11111111".into(),
                count: 2,
            }],
            job_types: Vec::new(),
        };
        let mut text = String::new();
        render_dead_letter_facets(&facets, &mut text);
        assert!(
            text.contains(
                "orgsync_queue_dead_letters_by_class{error_class=\"target.\\\"rejected\\\"\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("orgsync_queue_dead_letters_by_customer{cvr=\"11111111\"} 2\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
