//! Redis key names. Private to this crate: nothing else may know them.
//!
//! Layout (`P` = the configured prefix, `T` = a job type, `ID` = a job id):
//! `P:job:ID` hash (the job), `P:log:ID` list (failed attempts, JSON),
//! `P:stream:T` stream + consumer group `workers` (ready jobs), `P:delayed:T` zset
//! (scheduled and retrying jobs by due time), `P:succeeded:T` zset (history),
//! `P:counters:T` hash, `P:types` set, `P:dead` zset (dead letters by time),
//! `P:errors` capped stream (error log), `P:audit` stream (replays and deletes),
//! `P:idem:KEY` string (idempotency), `P:workers` zset (heartbeats), `P:worker:NAME` hash,
//! `P:batch:B` hash, `P:batch-pending:B` set, `P:batch-dead:B` list, `P:batch-children:B`
//! list (batches; the Lua scripts build these names too), and the run-state store under
//! `P:state:` (`lock:NAME`, `lock-holders:NAME` (a shared lock's holders), `pacer:NAME`, `value:NAME`, `map:NAME`, `rec:COLLECTION:{doc:ID,all,by:INDEX}`).
//! The dead-letter index: `P:dead-by:KIND:VALUE` zsets (KIND `type`, `customer`, `class`,
//! `run`; dead-letter ids by time of death; and `word`, one per word of the error text, class
//! and customer, at most 32 words a dead letter; a word of more than 5,000 dead letters goes to
//! the set `P:dead-words-common` instead and is checked per candidate), `P:dead-facets:KIND`
//! hashes (value → count),
//! `P:dead-indexed:2` (set once older dead letters were indexed, words included); `P:hourly:DAY` hashes
//! (`succeeded:HOUR`, `failed:HOUR`, `dead:HOUR` → count; 8 days), all written by the scripts.
//! Caller-given names come last in a key, after a fixed kind, so two kinds never collide.
//!
//! In a Redis Cluster `P` is the configured prefix in braces (`{orgsync}`): Redis hashes only
//! the part in braces (the hash tag), so every key of one installation lands in one slot and
//! on one node, which the Lua scripts (they touch many keys, some built inside Lua from `P`)
//! and the `MULTI` pipelines need. Every script call declares at least one key
//! ([`Keys::types`] when it builds the rest from `P`) so the cluster routes it to that node.

/// The consumer group every worker of a job type joins.
pub(crate) const GROUP: &str = "workers";

#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`; with `hash_tag` (a cluster) the prefix is wrapped in braces.
    pub(crate) fn new(prefix: &str, hash_tag: bool) -> Self {
        let prefix = prefix.trim_end_matches(':');
        Self {
            prefix: if hash_tag {
                format!("{{{prefix}}}")
            } else {
                prefix.to_owned()
            },
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

    pub(crate) fn batch(&self, id: &str) -> String {
        format!("{}:batch:{id}", self.prefix)
    }

    pub(crate) fn batch_pending(&self, id: &str) -> String {
        format!("{}:batch-pending:{id}", self.prefix)
    }

    pub(crate) fn batch_dead(&self, id: &str) -> String {
        format!("{}:batch-dead:{id}", self.prefix)
    }

    pub(crate) fn lock(&self, name: &str) -> String {
        format!("{}:state:lock:{name}", self.prefix)
    }

    /// The holders of shared lock `name` (a zset: holder → its expiry, ms).
    pub(crate) fn lock_holders(&self, name: &str) -> String {
        format!("{}:state:lock-holders:{name}", self.prefix)
    }

    pub(crate) fn pacer(&self, name: &str) -> String {
        format!("{}:state:pacer:{name}", self.prefix)
    }

    pub(crate) fn value(&self, name: &str) -> String {
        format!("{}:state:value:{name}", self.prefix)
    }

    pub(crate) fn map(&self, name: &str) -> String {
        format!("{}:state:map:{name}", self.prefix)
    }

    /// Records live under `P:state:rec:COLLECTION:`; the collection name is validated (no
    /// `:`), the Lua script adds `doc:ID`, `all` and `by:INDEX`.
    pub(crate) fn records(&self, collection: &str) -> String {
        format!("{}:state:rec:{collection}", self.prefix)
    }

    pub(crate) fn record(&self, collection: &str, id: &str) -> String {
        format!("{}:doc:{id}", self.records(collection))
    }

    /// An object log (`object_log.rs` adds `:idx` and `:alias`); the log name is validated.
    pub(crate) fn object_log(&self, log: &str) -> String {
        format!("{}:state:olog:{log}", self.prefix)
    }

    /// Dead-letter ids with `value` for `kind` (`type`, `customer`, `class`, `run`), by time.
    pub(crate) fn dead_by(&self, kind: &str, value: &str) -> String {
        format!("{}:dead-by:{kind}:{value}", self.prefix)
    }

    /// The dead-letter index's facet counts of one kind (`type`, `customer`, `class`, `run`).
    pub(crate) fn dead_facets(&self, kind: &str) -> String {
        format!("{}:dead-facets:{kind}", self.prefix)
    }

    /// Set once the dead-letter index covers every dead letter (version 2: with the words of
    /// the free-text search; an older installation indexes its dead letters once more).
    pub(crate) fn dead_indexed(&self) -> String {
        format!("{}:dead-indexed:2", self.prefix)
    }

    /// The dashboard's hourly counts of one UTC day (days since the epoch).
    pub(crate) fn hourly(&self, day: i64) -> String {
        format!("{}:hourly:{day}", self.prefix)
    }

    /// Pattern matching every key of this prefix (for cleanup in tests and tools).
    pub(crate) fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn in_a_cluster_every_key_hashes_to_the_slot_of_the_prefix() {
        let keys = Keys::new("orgsync:", true);
        let slot = redis::cluster_routing::Slot::for_key(keys.types());
        for key in [
            keys.job("0190-abc"),
            keys.stream("sync_customer"),
            keys.lock("run:29189846"),
            keys.record("runs", "r1"),
            keys.dead_by("customer", "29189846"),
            format!("{}:batch-children:b1", keys.prefix()),
        ] {
            assert!(key.starts_with("{orgsync}:"), "{key}");
            assert_eq!(redis::cluster_routing::Slot::for_key(&key), slot, "{key}");
        }
    }

    #[test]
    fn outside_a_cluster_the_prefix_is_kept_as_configured() {
        let keys = Keys::new("orgsync", false);
        assert_eq!(keys.job("1"), "orgsync:job:1");
    }
}
