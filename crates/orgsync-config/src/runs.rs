//! `[runs]` and `[worker]`: how long run state is kept, the scheduler's grace period, and how many
//! jobs a worker process runs at once.

use serde::Deserialize;

/// `[runs]`.
#[derive(Clone, Debug, Deserialize)]
pub struct RunsConfig {
    /// How long run reports are kept, in days.
    #[serde(default = "default_report_retention_days")]
    pub report_retention_days: u32,
    /// How long a run's stored plan (each department's users) is kept for its department jobs
    /// and their replays, in hours.
    #[serde(default = "default_data_ttl_hours")]
    pub data_ttl_hours: u32,
    /// A schedule fire missed while no scheduler ran is still run when at most this many
    /// minutes old.
    #[serde(default = "default_grace_minutes")]
    pub scheduler_grace_minutes: u32,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            report_retention_days: default_report_retention_days(),
            data_ttl_hours: default_data_ttl_hours(),
            scheduler_grace_minutes: default_grace_minutes(),
        }
    }
}

fn default_report_retention_days() -> u32 {
    90
}
fn default_data_ttl_hours() -> u32 {
    168
}
fn default_grace_minutes() -> u32 {
    360
}

/// `[worker]`.
#[derive(Clone, Debug, Deserialize)]
pub struct WorkerConfig {
    /// `SyncCustomer` jobs one worker process runs at once.
    #[serde(default = "default_customers")]
    pub sync_customer_concurrency: u32,
    /// `SyncDepartment` jobs one worker process runs at once.
    #[serde(default = "default_departments")]
    pub sync_department_concurrency: u32,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            sync_customer_concurrency: default_customers(),
            sync_department_concurrency: default_departments(),
        }
    }
}

fn default_customers() -> u32 {
    2
}
fn default_departments() -> u32 {
    8
}

/// The range checks of both sections: `(field, message)` for each problem.
pub(crate) fn check(runs: &RunsConfig, worker: &WorkerConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut range = |field: &'static str, value: u32, lo: u32, hi: u32, unit: &str| {
        if !(lo..=hi).contains(&value) {
            out.push((field, format!("{value}{unit}; expected {lo} to {hi}")));
        }
    };
    range(
        "runs.report_retention_days",
        runs.report_retention_days,
        1,
        3650,
        " days",
    );
    range("runs.data_ttl_hours", runs.data_ttl_hours, 1, 720, " hours");
    range(
        "runs.scheduler_grace_minutes",
        runs.scheduler_grace_minutes,
        0,
        10_080,
        " minutes",
    );
    range(
        "worker.sync_customer_concurrency",
        worker.sync_customer_concurrency,
        1,
        64,
        "",
    );
    range(
        "worker.sync_department_concurrency",
        worker.sync_department_concurrency,
        1,
        256,
        "",
    );
    out
}
