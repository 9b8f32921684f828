//! Errors of the queue API (`QueueError`) and of job handlers (`JobError`, with its error class).

use std::error::Error as StdError;
use std::fmt;

/// Boxed error as apalis passes it around.
pub type BoxDynError = Box<dyn StdError + Send + Sync + 'static>;

/// The error classes the queue itself produces. A class is a short stable string that support
/// filters dead letters by; handlers give their own (orgsync's are `orgsync_model::error_class`,
/// dotted by origin like these).
pub mod class {
    /// The job's payload does not deserialise into the handler's type (never retried).
    pub const UNDECODABLE: &str = "job.undecodable";
    /// The handler panicked (retried).
    pub const PANICKED: &str = "job.panicked";
    /// Workers holding the job died too often while running it (never retried).
    pub const ABANDONED: &str = "job.abandoned";
    /// The handler returned apalis' `AbortError` (never retried).
    pub const ABORTED: &str = "job.aborted";
    /// The handler returned an error that is not a [`JobError`](crate::JobError) (retried).
    pub const UNCLASSIFIED: &str = "unclassified";
}

/// Errors of the queue API itself (connecting, enqueueing, reading, replaying).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The Redis URL could not be parsed.
    #[error("invalid Redis URL {url}: {source}")]
    InvalidUrl {
        /// The URL with its password masked.
        url: String,
        /// What redis-rs said.
        source: redis::RedisError,
    },
    /// Redis did not answer when connecting.
    #[error("Redis at {url} is unreachable: {source}")]
    Unreachable {
        /// The URL with its password masked.
        url: String,
        /// What redis-rs said.
        source: redis::RedisError,
    },
    /// A Redis command failed while running.
    #[error("Redis command failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// A job type name that is not usable in a key.
    #[error("invalid job type {0:?}: use 1 to 64 ASCII letters, digits, '_', '-' or '.'")]
    InvalidJobType(String),
    /// A payload that does not serialise to JSON.
    #[error("could not serialise the payload of job type {job_type}: {source}")]
    Serialize {
        /// The job type.
        job_type: String,
        /// What serde said.
        source: serde_json::Error,
    },
    /// Redis answered something this crate did not expect.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    /// No job with that id.
    #[error("no job with id {0}")]
    NotFound(String),
    /// A batch child's idempotency key is held by a job that is still pending in another
    /// batch; nothing was enqueued.
    #[error(
        "job {job_id} (a child of batch {batch}) is still pending in batch {other_batch}; a job belongs to one batch"
    )]
    BatchConflict {
        /// The batch being enqueued.
        batch: String,
        /// The job holding the child's idempotency key.
        job_id: String,
        /// The batch that job belongs to.
        other_batch: String,
    },
    /// A name that cannot be used (empty, or a collection name with characters other than
    /// ASCII letters, digits, `_`, `-` and `.`).
    #[error("invalid {kind} name {name:?}: {rule}")]
    InvalidName {
        /// What the name is for (`batch`, `collection`, ...).
        kind: &'static str,
        /// The name given.
        name: String,
        /// What a valid name looks like.
        rule: &'static str,
    },
    /// The job exists but is not in the dead-letter queue.
    #[error("job {id} is not a dead letter (state: {state})")]
    NotDead {
        /// The job id.
        id: String,
        /// Its current state.
        state: String,
    },
}

impl QueueError {
    /// Whether trying the same call again later may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
            Self::InvalidUrl { .. }
            | Self::InvalidJobType(_)
            | Self::Serialize { .. }
            | Self::Protocol(_)
            | Self::NotFound(_)
            | Self::NotDead { .. }
            | Self::BatchConflict { .. }
            | Self::InvalidName { .. } => false,
        }
    }
}

/// The error a job handler returns: an error class, whether another attempt may help,
/// and the error chain (outermost first), all of which end up in the error log and the
/// dead-letter queue.
///
/// ```
/// use orgsync_queue::JobError;
/// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
/// let err = JobError::retriable("sts.unavailable", io);
/// assert!(err.is_retriable());
/// assert_eq!(err.class(), "sts.unavailable");
/// ```
#[derive(Debug, Clone)]
pub struct JobError {
    class: String,
    retriable: bool,
    not_before: Option<std::time::Duration>,
    snooze: Option<std::time::Duration>,
    chain: Vec<String>,
}

impl JobError {
    /// A failure worth another attempt (timeouts, 5xx, connection resets).
    pub fn retriable(class: impl Into<String>, error: impl Into<BoxDynError>) -> Self {
        let error = error.into();
        Self::from_error(class, true, error.as_ref())
    }

    /// A failure no further attempt will fix (missing agreement, bad data): the job goes
    /// to the dead-letter queue at once.
    pub fn permanent(class: impl Into<String>, error: impl Into<BoxDynError>) -> Self {
        let error = error.into();
        Self::from_error(class, false, error.as_ref())
    }

    /// Builds from any error, walking its `source()` chain.
    pub fn from_error(
        class: impl Into<String>,
        retriable: bool,
        error: &(dyn StdError + 'static),
    ) -> Self {
        Self {
            class: class.into(),
            retriable,
            not_before: None,
            snooze: None,
            chain: error_chain(error),
        }
    }

    /// Builds from a message alone.
    pub fn message(class: impl Into<String>, retriable: bool, message: impl Into<String>) -> Self {
        Self {
            class: class.into(),
            retriable,
            not_before: None,
            snooze: None,
            chain: vec![message.into()],
        }
    }

    /// Waits at least `delay` before the next attempt, even when the job's backoff would retry
    /// sooner (a full disk needs a person; a 429's `Retry-After`).
    pub fn not_before(mut self, delay: Option<std::time::Duration>) -> Self {
        self.not_before = delay;
        self
    }

    /// The job could not do its work yet because something it needs is busy (a lock another
    /// holder has): run it again after `delay` *without spending an attempt* (Sidekiq's and
    /// BullMQ's "snooze"). Bounded per job type by [`WorkerOptions::max_snooze`]: a job whose
    /// snoozes would add up to more than that is failed instead (an ordinary, retriable failed
    /// attempt whose message says so).
    ///
    /// [`WorkerOptions::max_snooze`]: crate::WorkerOptions::max_snooze
    pub fn snooze(
        class: impl Into<String>,
        message: impl Into<String>,
        delay: std::time::Duration,
    ) -> Self {
        Self {
            snooze: Some(delay),
            ..Self::message(class, true, message)
        }
    }

    /// How long the job asked to snooze, if it is a snooze rather than a failure.
    pub fn snooze_for(&self) -> Option<std::time::Duration> {
        self.snooze
    }

    /// This snooze turned into an ordinary (retriable) failure: the job has been busy for
    /// longer than its limit.
    pub(crate) fn snooze_limit_reached(
        &self,
        snoozed: std::time::Duration,
        limit: std::time::Duration,
    ) -> Self {
        let mut chain = self.chain.clone();
        let first = chain.first().cloned().unwrap_or_default();
        let text = format!(
            "{first} (busy for longer than the snooze limit: snoozed {snoozed:?} in total, the limit is {limit:?}; counted as a failed attempt)"
        );
        match chain.first_mut() {
            Some(c) => *c = text,
            None => chain.push(text),
        }
        Self {
            class: self.class.clone(),
            retriable: true,
            not_before: self.not_before,
            snooze: None,
            chain,
        }
    }

    /// The shortest wait before another attempt, if the error asks for one.
    pub fn retry_not_before(&self) -> Option<std::time::Duration> {
        self.not_before
    }

    /// The error class (`sts.unavailable`, `target.rejected`, `job.undecodable`, ...).
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Whether another attempt may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }

    /// The error chain, outermost first.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// The outermost message.
    pub fn summary(&self) -> &str {
        self.chain.first().map(String::as_str).unwrap_or("")
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.chain.join(": "))
    }
}

impl StdError for JobError {}

/// The Display strings of an error and its sources, outermost first.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> Vec<String> {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        source = e.source();
    }
    chain
}

/// Classifies whatever a handler (or a tower layer around it) returned.
pub(crate) fn classify(error: &BoxDynError) -> JobError {
    if let Some(job_error) = error.downcast_ref::<JobError>() {
        return job_error.clone();
    }
    if error
        .downcast_ref::<apalis::prelude::AbortError>()
        .is_some()
    {
        return JobError::from_error(class::ABORTED, false, error.as_ref());
    }
    JobError::from_error(class::UNCLASSIFIED, true, error.as_ref())
}

fn is_secret_parameter(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "pass" | "password")
}

/// Masks the password (and a lone username used as a password) in a Redis URL.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            // redis-rs also takes the password as a query parameter (`redis+unix:///s?pass=…`).
            if parsed.query_pairs().any(|(k, _)| is_secret_parameter(&k)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_parameter(&k) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        Err(_) => match url.find('@') {
            Some(at) => {
                let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
                format!("{}***{}", &url[..scheme_end], &url[at..])
            }
            None => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_a_url_hides_a_password_given_as_a_query_parameter() {
        let masked = mask_url("redis+unix:///run/redis.sock?db=2&pass=hunter2");
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(masked.contains("db=2"), "{masked}");
    }

    #[test]
    fn masking_a_url_hides_the_password_but_keeps_host_and_user() {
        assert_eq!(
            mask_url("redis://admin:s3cret@db.example:6380/2"),
            "redis://admin:***@db.example:6380/2"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(!mask_url("redis://:pw@host").contains("pw"));
    }

    #[test]
    fn a_job_error_keeps_the_whole_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("calling STS failed")]
        struct Outer(#[source] std::io::Error);
        let err = JobError::retriable(
            "transport",
            Outer(std::io::Error::other("connection reset")),
        );
        assert_eq!(err.chain(), ["calling STS failed", "connection reset"]);
        assert_eq!(
            err.to_string(),
            "transport: calling STS failed: connection reset"
        );
    }

    #[test]
    fn errors_that_are_not_job_errors_are_unclassified_and_retried() {
        let boxed: BoxDynError = Box::new(std::io::Error::other("boom"));
        let classified = classify(&boxed);
        assert_eq!(classified.class(), class::UNCLASSIFIED);
        assert!(classified.is_retriable());
        let job: BoxDynError = Box::new(JobError::permanent("fault", "no agreement"));
        let classified = classify(&job);
        assert_eq!(classified.class(), "fault");
        assert!(!classified.is_retriable());
    }
}
