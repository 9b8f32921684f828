//! `orgsync scheduler`: enqueues a run for each customer's schedule fire. It never calls STS.
//!
//! Every fire is enqueued with the idempotency key `sync:<cvr>:<fire time>`, so any number of
//! scheduler processes enqueue each fire once. On start, the latest fire missed within the grace
//! period is enqueued (once: if it was enqueued before the downtime, the key says so).

use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::pipeline::{EnqueuedRun, Pipeline, PipelineError};
use crate::report::Trigger;

/// When a customer's schedule fires next after a time.
pub type NextFire = Arc<dyn Fn(DateTime<Utc>) -> Option<DateTime<Utc>> + Send + Sync>;

/// One scheduled customer.
#[derive(Clone)]
pub struct ScheduledCustomer {
    /// The CVR.
    pub cvr: String,
    /// Its schedule (cron in its time zone).
    pub next_after: NextFire,
    /// Up to this much random delay after a fire (the same for every scheduler process).
    pub jitter: Duration,
}

impl std::fmt::Debug for ScheduledCustomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledCustomer")
            .field("cvr", &self.cvr)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

/// Scheduler timing.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// How often the clock is checked (default 1 s).
    pub tick: Duration,
    /// A fire missed while no scheduler ran is still enqueued when it is at most this old
    /// (default 6 hours). Keep it below the queue's idempotency-key lifetime (7 days).
    pub grace: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            tick: Duration::from_secs(1),
            grace: Duration::from_secs(6 * 3600),
        }
    }
}

/// The latest fire in `(from, to]`, if any.
pub fn latest_fire(
    next_after: &NextFire,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut latest = None;
    let mut cursor = from;
    // Bounded: a schedule firing every second over a day's grace is 86,400 steps.
    for _ in 0..200_000 {
        match next_after(cursor) {
            Some(fire) if fire <= to => {
                latest = Some(fire);
                cursor = fire;
            }
            _ => break,
        }
    }
    latest
}

/// The jitter of one fire: the same in every scheduler process.
fn jitter_for(cvr: &str, fire: DateTime<Utc>, max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    cvr.hash(&mut hasher);
    fire.timestamp().hash(&mut hasher);
    Duration::from_secs(hasher.finish() % (max.as_secs() + 1))
}

/// Enqueues the latest fire in `(from, to]` of every customer. Returns what was enqueued (or
/// found enqueued already).
pub async fn enqueue_due(
    pipeline: &Pipeline,
    customers: &[ScheduledCustomer],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Result<EnqueuedRun, PipelineError>> {
    let mut out = Vec::new();
    for customer in customers {
        let Some(fire) = latest_fire(&customer.next_after, from, to) else {
            continue;
        };
        let delay = jitter_for(&customer.cvr, fire, customer.jitter);
        let result = pipeline
            .enqueue_run(&customer.cvr, Trigger::Schedule { fire }, delay)
            .await;
        match &result {
            Ok(run) if run.duplicate => info!(
                customer.cvr = %customer.cvr, run.id = %run.run_id,
                "fire {} of {} was already enqueued (by another scheduler)", fire.to_rfc3339(), customer.cvr
            ),
            Ok(run) => info!(
                customer.cvr = %customer.cvr, run.id = %run.run_id,
                "enqueued run {} of {} for the fire at {} (starts in {} s)",
                run.run_id, customer.cvr, fire.to_rfc3339(), delay.as_secs()
            ),
            Err(e) => {
                warn!(customer.cvr = %customer.cvr, "cannot enqueue the fire at {} of {}: {e}", fire.to_rfc3339(), customer.cvr)
            }
        }
        out.push(result);
    }
    out
}

/// Runs until `shutdown` resolves.
pub async fn run(
    pipeline: Arc<Pipeline>,
    customers: Vec<ScheduledCustomer>,
    options: SchedulerOptions,
    shutdown: impl Future<Output = std::io::Result<()>>,
) {
    run_reloading(pipeline, move || customers.clone(), options, shutdown).await;
}

/// Runs until `shutdown` resolves, asking `customers` for the scheduled customers on every
/// tick, so that a customer file added, changed or removed while the scheduler runs takes
/// effect without a restart (the caller makes the question cheap when nothing changed). A
/// customer that appears later is scheduled from then on; one that disappears is no longer
/// enqueued.
pub async fn run_reloading(
    pipeline: Arc<Pipeline>,
    customers: impl Fn() -> Vec<ScheduledCustomer>,
    options: SchedulerOptions,
    shutdown: impl Future<Output = std::io::Result<()>>,
) {
    let grace = chrono::Duration::from_std(options.grace).unwrap_or(chrono::Duration::hours(6));
    // One cursor per customer: a fire that could not be enqueued (Redis away) is tried again
    // on the next tick without holding back the other customers. The customers of the start
    // look back over the grace period; those added later start from when they appeared.
    let start = Utc::now() - grace;
    let mut cursors: std::collections::HashMap<String, DateTime<Utc>> =
        std::collections::HashMap::new();
    for c in customers() {
        if let Some(next) = (c.next_after)(Utc::now()) {
            info!(customer.cvr = %c.cvr, "{} fires next at {}", c.cvr, next.to_rfc3339());
        }
        cursors.insert(c.cvr.clone(), start);
    }
    tokio::pin!(shutdown);
    loop {
        let now = Utc::now();
        let current = customers();
        cursors.retain(|cvr, _| current.iter().any(|c| c.cvr == *cvr));
        for customer in &current {
            let cursor = cursors.entry(customer.cvr.clone()).or_insert_with(|| {
                info!(customer.cvr = %customer.cvr, "{} is scheduled from now on", customer.cvr);
                now
            });
            let results =
                enqueue_due(&pipeline, std::slice::from_ref(customer), *cursor, now).await;
            if results.iter().all(Result::is_ok) {
                *cursor = now;
            }
        }
        tokio::select! {
            _ = &mut shutdown => {
                info!("scheduler stopped");
                return;
            }
            () = tokio::time::sleep(options.tick) => {}
        }
    }
}
