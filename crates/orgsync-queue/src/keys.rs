//! Redis key names. Private to this crate: nothing else may know them.
//!
//! Layout (`P` = the configured prefix, `T` = a job type, `ID` = a job id):
//! `P:job:ID` hash (the job), `P:log:ID` list (failed attempts, JSON),
//! `P:stream:T` stream + consumer group `workers` (ready jobs), `P:delayed:T` zset
//! (scheduled and retrying jobs by due time), `P:succeeded:T` zset (history),
//! `P:counters:T` hash, `P:types` set, `P:dead` zset (dead letters by time),
//! `P:errors` capped stream (error log), `P:audit` stream (replays and deletes),
//! `P:idem:KEY` string (idempotency), `P:workers` zset (heartbeats), `P:worker:NAME` hash.

/// The consumer group every worker of a job type joins.
pub(crate) const GROUP: &str = "workers";

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches(':').to_owned(),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}:job:{id}", self.prefix)
    }

    pub(crate) fn log(&self, id: &str) -> String {
        format!("{}:log:{id}", self.prefix)
    }

    pub(crate) fn stream(&self, job_type: &str) -> String {
        format!("{}:stream:{job_type}", self.prefix)
    }

    pub(crate) fn delayed(&self, job_type: &str) -> String {
        format!("{}:delayed:{job_type}", self.prefix)
    }

    pub(crate) fn succeeded(&self, job_type: &str) -> String {
        format!("{}:succeeded:{job_type}", self.prefix)
    }

    pub(crate) fn counters(&self, job_type: &str) -> String {
        format!("{}:counters:{job_type}", self.prefix)
    }

    pub(crate) fn types(&self) -> String {
        format!("{}:types", self.prefix)
    }

    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    pub(crate) fn errors(&self) -> String {
        format!("{}:errors", self.prefix)
    }

    pub(crate) fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    pub(crate) fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }

    /// Pattern matching every key of this prefix (for cleanup in tests and tools).
    pub(crate) fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}
