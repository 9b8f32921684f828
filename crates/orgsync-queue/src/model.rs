//! Public data types: jobs to enqueue, what a handler sees, dead letters, the error log, stats.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::QueueError;

/// A job payload type. The job type string names the stream the job goes to and must stay
/// stable across releases (old payloads in Redis are matched by it).
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct SyncCustomer { cvr: String }
/// impl orgsync_queue::Job for SyncCustomer { const JOB_TYPE: &'static str = "sync_customer"; }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// Stable name: 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
    const JOB_TYPE: &'static str;

    /// The run (or other unit of work) this job belongs to, if any. The worker logs it as
    /// `run.id` on the job's span and on its failed attempts, so that log collectors and
    /// error trackers can group a run's failures. Default: none.
    fn run_id(&self) -> Option<String> {
        None
    }
}

/// A job id (a UUIDv7 string: sortable by creation time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    pub(crate) fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Wraps an id read from a user (CLI argument, API path).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub(crate) job_type: String,
    pub(crate) payload: String,
    pub(crate) customer: Option<String>,
    pub(crate) run: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) run_after: Option<Duration>,
    pub(crate) notify_on_death: bool,
}

impl NewJob {
    /// A typed job.
    pub fn new<J: Job>(job: &J) -> Result<Self, QueueError> {
        let payload = serde_json::to_string(job).map_err(|source| QueueError::Serialize {
            job_type: J::JOB_TYPE.to_owned(),
            source,
        })?;
        Self::raw(J::JOB_TYPE, payload)
    }

    /// A job from its type name and JSON payload (tools, tests, other languages).
    pub fn raw(job_type: &str, payload_json: impl Into<String>) -> Result<Self, QueueError> {
        validate_job_type(job_type)?;
        Ok(Self {
            job_type: job_type.to_owned(),
            payload: payload_json.into(),
            customer: None,
            run: None,
            idempotency_key: None,
            run_after: None,
            notify_on_death: false,
        })
    }

    /// When this job is dead-lettered, by whatever path (its handler's last attempt, a
    /// payload that does not decode, a panic, or workers dying while they held it), the queue
    /// enqueues a [`DeathNotice`] for it in the same script, so that whoever waits for the job
    /// learns it will not finish. A replay of the job keeps the mark.
    pub fn notify_on_death(mut self) -> Self {
        self.notify_on_death = true;
        self
    }

    /// The customer (CVR) the job is for, so dead letters and the error log can be filtered.
    pub fn customer(mut self, customer: impl Into<String>) -> Self {
        self.customer = Some(customer.into());
        self
    }

    /// The run (any caller-given group id) the job belongs to, so dead letters can be
    /// filtered by it. A batch child without one belongs to its batch's id, and so does the
    /// batch's completion job.
    pub fn run(mut self, run: impl Into<String>) -> Self {
        self.run = Some(run.into());
        self
    }

    /// A second enqueue with the same key (within the idempotency TTL) is a no-op.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Do not run before this delay has passed.
    pub fn run_after(mut self, delay: Duration) -> Self {
        self.run_after = Some(delay);
        self
    }

    /// Do not run before this time.
    pub fn run_at(self, at: DateTime<Utc>) -> Self {
        let delay = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        self.run_after(delay)
    }

    /// The job type.
    pub fn job_type(&self) -> &str {
        &self.job_type
    }
}

pub(crate) fn validate_job_type(job_type: &str) -> Result<(), QueueError> {
    let ok = !job_type.is_empty()
        && job_type.len() <= 64
        && job_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidJobType(job_type.to_owned()))
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Enqueued {
    /// A new job was created.
    Created {
        /// Its id.
        job_id: JobId,
    },
    /// A job with the same idempotency key exists already; nothing was enqueued.
    Duplicate {
        /// The id of the job that holds the key.
        existing: JobId,
    },
}

impl Enqueued {
    /// The id of the new job, or of the job that holds the idempotency key.
    pub fn job_id(&self) -> &JobId {
        match self {
            Self::Created { job_id } => job_id,
            Self::Duplicate { existing } => existing,
        }
    }

    /// Whether the enqueue was a no-op because of the idempotency key.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate { .. })
    }
}

/// What a handler knows about the job it runs. Take it as a handler argument:
/// `async fn handle(job: MyJob, ctx: JobContext) -> Result<(), JobError>`.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job id.
    pub job_id: JobId,
    /// The job type.
    pub job_type: &'static str,
    /// This attempt, 1-based.
    pub attempt: u32,
    /// The job type's attempt limit.
    pub max_attempts: u32,
    /// The customer given at enqueue.
    pub customer: Option<String>,
    /// The dead letter this job replays.
    pub replay_of: Option<JobId>,
    /// The batch this job is a child of (see [`QueueHandle::enqueue_batch`]); a replay of a
    /// dead child keeps it.
    ///
    /// [`QueueHandle::enqueue_batch`]: crate::QueueHandle::enqueue_batch
    pub batch: Option<String>,
    /// When the job was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// The run the job belongs to ([`Job::run_id`]).
    pub run_id: Option<String>,
    /// How long the job has waited in snoozes so far ([`JobError::snooze`](crate::JobError::snooze)).
    pub snoozed: Duration,
    /// The worker running it.
    pub worker: String,
    pub(crate) entry_id: String,
}

impl<Args: Sync> apalis::prelude::FromRequest<apalis::prelude::Task<Args>> for JobContext {
    type Error = apalis::prelude::MissingDataError;

    async fn from_request(task: &apalis::prelude::Task<Args>) -> Result<Self, Self::Error> {
        task.data().get_checked::<JobContext>().cloned()
    }
}

/// One failed attempt as stored in the dead-letter record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the handler started.
    #[serde(with = "ms_time")]
    pub started_at: DateTime<Utc>,
    /// When it failed.
    #[serde(with = "ms_time")]
    pub finished_at: DateTime<Utc>,
    /// The error class.
    pub class: String,
    /// Whether the error allowed another attempt.
    pub retriable: bool,
    /// The outermost message.
    pub message: String,
    /// The error chain, outermost first.
    pub chain: Vec<String>,
    /// The worker that ran it.
    pub worker: String,
}

/// States a job can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Ready, waiting for a worker.
    Waiting,
    /// Enqueued with a run-after time not reached yet.
    Scheduled,
    /// Failed, waiting for its next attempt.
    Retrying,
    /// Its handler is running (a job fetched into a worker's buffer but not started yet
    /// is still `Waiting`).
    Running,
    /// Done.
    Succeeded,
    /// In the dead-letter queue.
    Dead,
    /// Was a dead letter, replayed as a new job.
    Replayed,
}

impl JobState {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "waiting" => Self::Waiting,
            "scheduled" => Self::Scheduled,
            "retrying" => Self::Retrying,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "dead" => Self::Dead,
            "replayed" => Self::Replayed,
            _ => return None,
        })
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Scheduled => "scheduled",
            Self::Retrying => "retrying",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Replayed => "replayed",
        }
    }
}

/// A job as stored: dead letters, succeeded history, replays.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// The job id.
    pub job_id: JobId,
    /// The job type.
    pub job_type: String,
    /// Its state.
    pub state: JobState,
    /// The customer given at enqueue.
    pub customer: Option<String>,
    /// The payload (JSON; a string when it is not JSON).
    pub payload: serde_json::Value,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was enqueued.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// When its handler last started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it succeeded.
    pub finished_at: Option<DateTime<Utc>>,
    /// When it went to the dead-letter queue.
    pub dead_at: Option<DateTime<Utc>>,
    /// The error class of its last failed attempt.
    pub last_error_class: Option<String>,
    /// The message of its last failed attempt.
    pub last_error: Option<String>,
    /// The final error class (dead letters).
    pub final_error_class: Option<String>,
    /// The dead letter this job replays.
    pub replay_of: Option<JobId>,
    /// Who replayed it (on the new job) or who replayed this dead letter.
    pub replayed_by: Option<String>,
    /// When.
    pub replayed_at: Option<DateTime<Utc>>,
    /// The new job a replayed dead letter became.
    pub replayed_as: Option<JobId>,
    /// The idempotency key given at enqueue.
    pub idempotency_key: Option<String>,
    /// The batch this job is a child of; a replay of a dead child keeps it.
    pub batch: Option<String>,
    /// How many workers died (stopped sending heartbeats) while running it.
    pub orphaned: u32,
    /// The run it belongs to (see [`NewJob::run`]).
    pub run: Option<String>,
    /// When it is due (scheduled and retrying jobs: the next attempt).
    pub run_at: Option<DateTime<Utc>>,
    /// The worker running it (running jobs).
    pub worker: Option<String>,
    /// Every failed attempt.
    pub attempt_log: Vec<AttemptRecord>,
    /// How often it snoozed (busy: run again later without spending an attempt).
    pub snoozes: u32,
    /// How long it waited in snoozes, in total, in milliseconds.
    pub snoozed_ms: u64,
    /// Why it snoozed last (the handler's message).
    pub last_snooze: Option<String>,
}

impl JobRecord {
    pub(crate) fn from_hash(
        id: &str,
        mut h: HashMap<String, String>,
        log: Vec<AttemptRecord>,
    ) -> Option<Self> {
        let job_type = h.remove("type")?;
        let payload_text = h.remove("payload").unwrap_or_default();
        let payload =
            serde_json::from_str(&payload_text).unwrap_or(serde_json::Value::String(payload_text));
        let time = |h: &HashMap<String, String>, k: &str| h.get(k).and_then(|v| parse_ms(v));
        let state = h
            .get("state")
            .and_then(|s| JobState::parse(s))
            .unwrap_or(JobState::Waiting);
        Some(Self {
            job_id: JobId::new(id),
            job_type,
            state,
            customer: h.get("customer").cloned(),
            payload,
            attempts: h.get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
            enqueued_at: time(&h, "enqueued_at"),
            started_at: time(&h, "started_at"),
            finished_at: time(&h, "finished_at"),
            dead_at: time(&h, "dead_at"),
            last_error_class: h.get("last_class").cloned(),
            last_error: h.get("last_message").cloned(),
            final_error_class: h.get("final_class").cloned(),
            replay_of: h.get("replay_of").map(JobId::new),
            replayed_by: h.get("replayed_by").cloned(),
            replayed_at: time(&h, "replayed_at"),
            replayed_as: h.get("replayed_as").map(JobId::new),
            idempotency_key: h.get("idem").cloned(),
            batch: h.get("batch").cloned(),
            orphaned: h.get("orphaned").and_then(|o| o.parse().ok()).unwrap_or(0),
            run: h.get("run").cloned(),
            run_at: time(&h, "run_at"),
            worker: h.get("worker").cloned(),
            attempt_log: log,
            snoozes: h.get("snoozes").and_then(|o| o.parse().ok()).unwrap_or(0),
            snoozed_ms: h
                .get("snoozed_ms")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0),
            last_snooze: h.get("last_snooze").cloned(),
        })
    }
}

/// Which dead letters to list, replay or delete. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Customer (CVR) given at enqueue.
    pub customer: Option<String>,
    /// Job type.
    pub job_type: Option<String>,
    /// Final error class.
    pub error_class: Option<String>,
    /// Dead since (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Dead until (inclusive).
    pub until: Option<DateTime<Utc>>,
    /// The run (see [`NewJob::run`]).
    pub run: Option<String>,
    /// Free text: every word of it (case-insensitive) must be a whole word of the last error
    /// message, the final error class or the customer (see the dashboard's `dead_letter_page`).
    pub text: Option<String>,
}

impl DeadLetterFilter {
    pub(crate) fn matches(&self, r: &JobRecord) -> bool {
        let eq = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| have == Some(w))
        };
        eq(&self.customer, r.customer.as_ref())
            && self.job_type.as_ref().is_none_or(|t| *t == r.job_type)
            && eq(&self.error_class, r.final_error_class.as_ref())
            && self.since.is_none_or(|s| r.dead_at.is_some_and(|d| d >= s))
            && self.until.is_none_or(|u| r.dead_at.is_some_and(|d| d <= u))
            && eq(&self.run, r.run.as_ref())
            && self.text.as_ref().is_none_or(|q| {
                let text = format!(
                    "{} {} {}",
                    r.last_error.as_deref().unwrap_or(""),
                    r.final_error_class.as_deref().unwrap_or(""),
                    r.customer.as_deref().unwrap_or("")
                );
                let have = search_words(&text);
                search_words(q).iter().all(|w| have.contains(w))
            })
    }
}

/// The words of a dead letter's searchable text, as the index keeps them (the scripts'
/// `words`): runs, ASCII letters lower-cased, of characters other than ASCII whitespace, punctuation and
/// control characters, 2 to 40 bytes long, distinct, the first 32.
pub(crate) fn search_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text.to_ascii_lowercase().split(|c: char| {
        c.is_ascii_whitespace() || c.is_ascii_punctuation() || c.is_ascii_control()
    }) {
        if (2..=40).contains(&w.len()) && !out.iter().any(|o| o == w) {
            out.push(w.to_owned());
            if out.len() >= 32 {
                break;
            }
        }
    }
    out
}

/// The result of replaying one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// The dead letter.
    pub dead_letter: JobId,
    /// The new job.
    pub new_job: JobId,
}

/// One line of the error log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorLogEntry {
    /// Stream entry id (pass as `after` to page on).
    pub entry_id: String,
    /// When the failure was recorded (what `since`/`until` select on).
    pub time: DateTime<Utc>,
    /// The job id.
    pub job_id: JobId,
    /// The job type.
    pub job_type: String,
    /// The customer given at enqueue.
    pub customer: Option<String>,
    /// 1-based attempt.
    pub attempt: u32,
    /// Error class.
    pub class: String,
    /// Message (the error chain joined by `: `).
    pub message: String,
}

/// Which error-log lines to read.
#[derive(Debug, Clone, Default)]
pub struct ErrorLogQuery {
    /// Recorded from this time (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Recorded until this time (inclusive).
    pub until: Option<DateTime<Utc>>,
    /// Only this customer.
    pub customer: Option<String>,
    /// Only this job type.
    pub job_type: Option<String>,
    /// At most this many lines (default 100).
    pub limit: Option<usize>,
}

/// One audit line (replay or delete of a dead letter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Stream entry id (pass as `before` to [`QueueHandle::audit_page`] to page on).
    ///
    /// [`QueueHandle::audit_page`]: crate::QueueHandle::audit_page
    pub entry_id: String,
    /// `replay` or `delete`.
    pub action: String,
    /// The dead letter.
    pub job_id: JobId,
    /// The new job (replays).
    pub new_job_id: Option<JobId>,
    /// Who did it.
    pub by: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Job type.
    pub job_type: String,
    /// Customer.
    pub customer: Option<String>,
    /// Final error class of the dead letter.
    pub error_class: Option<String>,
}

/// Counts for one job type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobTypeStats {
    /// The job type.
    pub job_type: String,
    /// Ready, not yet fetched by a worker.
    pub waiting: u64,
    /// Scheduled for later or waiting for a retry.
    pub scheduled: u64,
    /// Fetched by a worker (running or buffered in it).
    pub running: u64,
    /// Succeeded within the history retention.
    pub succeeded: u64,
    /// Failed attempts, all time.
    pub failed_attempts: u64,
    /// Snoozes (busy: run again later without spending an attempt), all time.
    pub snoozes: u64,
    /// In the dead-letter queue now.
    pub dead: u64,
    /// Age of the oldest waiting job, in milliseconds.
    pub oldest_waiting_ms: Option<u64>,
    /// Workers of this type that sent a heartbeat recently.
    pub live_workers: u64,
    /// How long its attempts took (succeeded and failed), all time.
    pub attempt_durations: DurationHistogram,
}

/// The upper bounds (ms) of the attempt-duration histogram's buckets; one more, unbounded,
/// follows. From a department job's milliseconds to a large customer's STS read of minutes.
pub const ATTEMPT_DURATION_BUCKETS_MS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    1_800_000,
];

/// Attempt durations of one job type as a histogram over [`ATTEMPT_DURATION_BUCKETS_MS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DurationHistogram {
    /// Per bucket bound of [`ATTEMPT_DURATION_BUCKETS_MS`]: attempts that took at most that long
    /// (cumulative, as Prometheus buckets are).
    pub cumulative: Vec<u64>,
    /// All attempts (the `+Inf` bucket).
    pub count: u64,
    /// Their total duration, in milliseconds.
    pub sum_ms: u64,
}

impl DurationHistogram {
    /// From the job type's stored counters (`dur_le:B`, non-cumulative; `dur_count`;
    /// `dur_sum_ms`).
    pub(crate) fn from_counters(counters: &std::collections::HashMap<String, i64>) -> Self {
        let get = |k: &str| u64::try_from(*counters.get(k).unwrap_or(&0)).unwrap_or(0);
        let mut running = 0;
        let cumulative = ATTEMPT_DURATION_BUCKETS_MS
            .iter()
            .map(|b| {
                running += get(&format!("dur_le:{b}"));
                running
            })
            .collect();
        DurationHistogram {
            cumulative,
            count: get("dur_count"),
            sum_ms: get("dur_sum_ms"),
        }
    }
}

/// A live worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerInfo {
    /// Unique name (host, pid, job type, random suffix).
    pub name: String,
    /// Its job type.
    pub job_type: String,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
}

/// Queue statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Per job type, sorted by name.
    pub job_types: Vec<JobTypeStats>,
    /// Live workers.
    pub workers: Vec<WorkerInfo>,
}

pub(crate) fn parse_ms(text: &str) -> Option<DateTime<Utc>> {
    let ms: i64 = text.parse().ok()?;
    Utc.timestamp_millis_opt(ms).single()
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Serde for times: written as RFC 3339, read from RFC 3339 or milliseconds (Lua writes those).
mod ms_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(i64),
        }
        let ms = match Raw::deserialize(d)? {
            Raw::Text(t) => match t.parse::<i64>() {
                Ok(ms) => ms,
                Err(_) => {
                    return DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom);
                }
            },
            Raw::Number(n) => n,
        };
        super::parse_ms(&ms.to_string()).ok_or_else(|| serde::de::Error::custom("bad time"))
    }
}

/// The job the queue enqueues when a job marked [`NewJob::notify_on_death`] is dead-lettered.
/// Its id is the dead job's id with `.died` appended, so one death gives one notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeathNotice {
    /// The dead letter's id.
    pub job_id: JobId,
    /// Its job type.
    pub job_type: String,
    /// Its customer, when it had one.
    #[serde(default)]
    pub customer: Option<String>,
    /// Its run, when it had one.
    #[serde(default)]
    pub run: Option<String>,
}

impl Job for DeathNotice {
    const JOB_TYPE: &'static str = "DeathNotice";

    fn run_id(&self) -> Option<String> {
        self.run.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_split_on_ascii_punctuation_keep_danish_words_whole_and_are_bounded() {
        assert_eq!(
            search_words("Target said: 401 Unauthorized (token revoked); Økonomi-afdeling a"),
            [
                "target",
                "said",
                "401",
                "unauthorized",
                "token",
                "revoked",
                "Økonomi",
                "afdeling"
            ]
        );
        let long: String = (0..100).map(|n| format!("w{n} w{n} ")).collect();
        let words = search_words(&long);
        assert_eq!(words.len(), 32, "at most 32, each once");
        assert_eq!(words[31], "w31");
    }
}
