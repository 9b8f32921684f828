//! `QueueHandle`: the connection and every non-worker operation (enqueue, dead letters,
//! replay, delete, error log, audit, stats).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::Utc;
use redis::AsyncCommands;
use redis::streams::{StreamInfoGroupsReply, StreamPendingReply, StreamRangeReply};
use serde::Serialize;

use crate::backend::QueueBackend;
use crate::config::{QueueConfig, RedisTopology, WorkerOptions};
use crate::connection::RedisConnection;
use crate::error::{QueueError, mask_url};
use crate::keys::{GROUP, Keys};
use crate::model::{
    AttemptRecord, AuditEntry, DeadLetterFilter, Enqueued, ErrorLogEntry, ErrorLogQuery, Job,
    JobId, JobRecord, JobTypeStats, NewJob, QueueStats, Replayed, WorkerInfo, now_ms, parse_ms,
};
use crate::scripts;

/// The queue: cheap to clone, shares one multiplexed connection that reconnects by itself.
#[derive(Clone)]
pub struct QueueHandle {
    pub(crate) conn: RedisConnection,
    pub(crate) config: Arc<QueueConfig>,
    pub(crate) keys: Keys,
    masked_url: String,
    /// Set once older dead letters were added to the dead-letter index.
    pub(crate) dead_indexed: Arc<std::sync::atomic::AtomicBool>,
}

impl fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueHandle")
            .field("redis_url", &self.masked_url)
            .field("key_prefix", &self.keys.prefix())
            .finish()
    }
}

/// A job as the Lua `enqueue_job` helper reads it.
#[derive(Serialize)]
pub(crate) struct ScriptJob<'a> {
    id: String,
    #[serde(rename = "type")]
    job_type: &'a str,
    payload: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idem: Option<&'a str>,
    delay_ms: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    notify_dead: bool,
}

impl<'a> ScriptJob<'a> {
    /// With a fresh id.
    pub(crate) fn new(j: &'a NewJob) -> Self {
        Self {
            id: JobId::generate().to_string(),
            job_type: &j.job_type,
            payload: &j.payload,
            customer: j.customer.as_deref(),
            run: j.run.as_deref(),
            idem: j.idempotency_key.as_deref(),
            delay_ms: j
                .run_after
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            notify_dead: j.notify_on_death,
        }
    }
}

impl QueueHandle {
    /// Connects and checks that Redis answers. The error names the URL, password masked.
    pub async fn connect(config: QueueConfig) -> Result<Self, QueueError> {
        // rustls picks its crypto provider from crate features; with more than one compiled in
        // (aws-lc-rs arrives with other dependencies) it cannot, and a rediss:// connection
        // would panic. orgsync uses ring everywhere; a provider installed earlier stays.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let masked_url = match &config.topology {
            RedisTopology::Standalone => mask_url(&config.redis_url),
            RedisTopology::Sentinel {
                sentinels,
                master_name,
            } => format!(
                "{} (primary {master_name:?} named by the sentinels {})",
                mask_url(&config.redis_url),
                sentinels.join(", ")
            ),
            RedisTopology::Cluster => format!("{} (cluster)", mask_url(&config.redis_url)),
        };
        let keys = Keys::new(
            &config.key_prefix,
            config.topology == RedisTopology::Cluster,
        );
        let failed = |source: redis::RedisError| {
            if source.kind() == redis::ErrorKind::InvalidClientConfig {
                QueueError::InvalidUrl {
                    url: masked_url.clone(),
                    source,
                }
            } else {
                QueueError::Unreachable {
                    url: masked_url.clone(),
                    source,
                }
            }
        };
        let mut conn = RedisConnection::open(&config, keys.types())
            .await
            .map_err(failed)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok(Self {
            conn,
            keys,
            config: Arc::new(config),
            masked_url,
            dead_indexed: Arc::default(),
        })
    }

    /// Whether Redis answers now (a `PING` within the response timeout): readiness probes.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// The settings this handle was opened with.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The Redis URL with its password masked.
    pub fn redis_url_masked(&self) -> &str {
        &self.masked_url
    }

    /// A worker backend for job type `J`; give it to `apalis::WorkerBuilder`.
    pub fn backend<J: Job>(&self, options: WorkerOptions) -> QueueBackend<J> {
        QueueBackend::new(self.clone(), options)
    }

    /// Enqueues a typed job with default options.
    pub async fn push<J: Job>(&self, job: &J) -> Result<Enqueued, QueueError> {
        self.enqueue(NewJob::new(job)?).await
    }

    /// Enqueues one job.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        let mut out = self.enqueue_many(vec![job]).await?;
        out.pop()
            .ok_or_else(|| QueueError::Protocol("enqueue returned nothing".into()))
    }

    /// Enqueues many jobs, in chunks of `enqueue_chunk` per atomic script call. The result
    /// has one entry per job, in order.
    pub async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
        let mut conn = self.conn.clone();
        let mut results = Vec::with_capacity(jobs.len());
        let chunk = self.config.enqueue_chunk.max(1);
        let ttl = self.idempotency_ttl_ms();
        for part in jobs.chunks(chunk) {
            let rows: Vec<ScriptJob<'_>> = part.iter().map(ScriptJob::new).collect();
            let json = serde_json::to_string(&rows)
                .map_err(|e| QueueError::Protocol(format!("encoding jobs: {e}")))?;
            let replies: Vec<String> = scripts::ENQUEUE
                .key(self.keys.types())
                .arg(self.keys.prefix())
                .arg(ttl)
                .arg(json)
                .invoke_async(&mut conn)
                .await?;
            for reply in replies {
                results.push(match reply.split_once(':') {
                    Some(("new", id)) => Enqueued::Created {
                        job_id: JobId::new(id),
                    },
                    Some(("dup", id)) => Enqueued::Duplicate {
                        existing: JobId::new(id),
                    },
                    _ => return Err(QueueError::Protocol(format!("enqueue replied {reply}"))),
                });
            }
        }
        Ok(results)
    }

    /// The idempotency TTL in milliseconds, at least 1.
    pub(crate) fn idempotency_ttl_ms(&self) -> u64 {
        u64::try_from(self.config.idempotency_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Any job still stored (waiting, running, dead, or succeeded within the retention).
    pub async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let (hash, log): (HashMap<String, String>, Vec<String>) = redis::pipe()
            .hgetall(self.keys.job(id.as_str()))
            .lrange(self.keys.log(id.as_str()), 0, -1)
            .query_async(&mut conn)
            .await?;
        if hash.is_empty() {
            return Ok(None);
        }
        Ok(JobRecord::from_hash(id.as_str(), hash, parse_log(&log)))
    }

    /// One dead letter, with every attempt.
    pub async fn dead_letter(&self, id: &JobId) -> Result<JobRecord, QueueError> {
        let record = self
            .job(id)
            .await?
            .ok_or_else(|| QueueError::NotFound(id.to_string()))?;
        if record.state != crate::model::JobState::Dead {
            return Err(QueueError::NotDead {
                id: id.to_string(),
                state: record.state.as_str().to_owned(),
            });
        }
        Ok(record)
    }

    /// Dead letters matching the filter, oldest first (through the dead-letter index).
    pub async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let mut ids = self.dead_letter_ids(filter).await?;
        ids.reverse();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            out.extend(self.jobs(chunk).await?.into_iter().flatten());
        }
        // Replayed or deleted between the index scan and the read: no longer dead letters.
        out.retain(|r| r.state == crate::model::JobState::Dead && filter.matches(r));
        Ok(out)
    }

    /// Replays one dead letter as a new job with fresh attempts that remembers `replay_of`,
    /// who replayed it and when. Audited.
    pub async fn replay(&self, id: &JobId, by: &str) -> Result<Replayed, QueueError> {
        let mut conn = self.conn.clone();
        let new_job = JobId::generate();
        let retention =
            u64::try_from(self.config.succeeded_retention.as_millis()).unwrap_or(u64::MAX);
        let reply: String = scripts::REPLAY
            .key(self.keys.types())
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .arg(new_job.as_str())
            .arg(by)
            .arg(retention.max(1))
            .invoke_async(&mut conn)
            .await?;
        match reply.as_str() {
            "ok" => Ok(Replayed {
                dead_letter: id.clone(),
                new_job,
            }),
            "missing" => Err(QueueError::NotFound(id.to_string())),
            state => Err(QueueError::NotDead {
                id: id.to_string(),
                state: state.to_owned(),
            }),
        }
    }

    /// Replays every dead letter matching the filter, newest first.
    pub async fn replay_matching(
        &self,
        filter: &DeadLetterFilter,
        by: &str,
    ) -> Result<Vec<Replayed>, QueueError> {
        let mut out = Vec::new();
        for id in self.dead_letter_ids(filter).await? {
            match self.replay(&id, by).await {
                Ok(r) => out.push(r),
                // Replayed or deleted meanwhile by someone else: not ours to report.
                Err(QueueError::NotFound(_) | QueueError::NotDead { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Deletes one dead letter for good. Audited.
    pub async fn delete_dead_letter(&self, id: &JobId, by: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let reply: String = scripts::DELETE
            .key(self.keys.types())
            .arg(self.keys.prefix())
            .arg(id.as_str())
            .arg(by)
            .invoke_async(&mut conn)
            .await?;
        match reply.as_str() {
            "ok" => Ok(()),
            "missing" => Err(QueueError::NotFound(id.to_string())),
            state => Err(QueueError::NotDead {
                id: id.to_string(),
                state: state.to_owned(),
            }),
        }
    }

    /// Deletes every dead letter matching the filter; returns their ids.
    pub async fn delete_matching(
        &self,
        filter: &DeadLetterFilter,
        by: &str,
    ) -> Result<Vec<JobId>, QueueError> {
        let mut out = Vec::new();
        for id in self.dead_letter_ids(filter).await? {
            match self.delete_dead_letter(&id, by).await {
                Ok(()) => out.push(id),
                Err(QueueError::NotFound(_) | QueueError::NotDead { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Error-log lines (every failed attempt), oldest first, filtered.
    pub async fn error_log(&self, query: &ErrorLogQuery) -> Result<Vec<ErrorLogEntry>, QueueError> {
        let mut conn = self.conn.clone();
        let limit = query.limit.unwrap_or(100);
        let mut start = query
            .since
            .map(|t| t.timestamp_millis().to_string())
            .unwrap_or_else(|| "-".into());
        let end = query
            .until
            .map(|t| t.timestamp_millis().to_string())
            .unwrap_or_else(|| "+".into());
        let mut out = Vec::new();
        loop {
            let page: StreamRangeReply = conn
                .xrange_count(self.keys.errors(), &start, &end, 500)
                .await?;
            let n = page.ids.len();
            for entry in &page.ids {
                let field = |k: &str| -> Option<String> { entry.get(k) };
                let line = ErrorLogEntry {
                    entry_id: entry.id.clone(),
                    // The entry id's time: when the failure was recorded, which is what
                    // `since`/`until` select on.
                    time: entry
                        .id
                        .split('-')
                        .next()
                        .and_then(parse_ms)
                        .unwrap_or_else(Utc::now),
                    job_id: JobId::new(field("job_id").unwrap_or_default()),
                    job_type: field("job_type").unwrap_or_default(),
                    customer: field("customer").filter(|c| !c.is_empty()),
                    attempt: field("attempt").and_then(|a| a.parse().ok()).unwrap_or(0),
                    class: field("class").unwrap_or_default(),
                    message: field("message").unwrap_or_default(),
                };
                let keep = query
                    .customer
                    .as_ref()
                    .is_none_or(|c| line.customer.as_ref() == Some(c))
                    && query.job_type.as_ref().is_none_or(|t| *t == line.job_type);
                if keep {
                    out.push(line);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            match page.ids.last() {
                Some(last) if n == 500 => start = format!("({}", last.id),
                _ => return Ok(out),
            }
        }
    }

    /// The newest audit lines (replays and deletes), oldest first.
    pub async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, QueueError> {
        let mut conn = self.conn.clone();
        let page: StreamRangeReply = conn
            .xrevrange_count(self.keys.audit(), "+", "-", limit)
            .await?;
        let mut out: Vec<AuditEntry> = page.ids.iter().map(parse_audit).collect();
        out.reverse();
        Ok(out)
    }

    /// Counts per job type and state, oldest waiting job, live workers.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut conn = self.conn.clone();
        let mut types: Vec<String> = conn.smembers(self.keys.types()).await?;
        types.sort();
        let now = now_ms();
        let workers = self.live_workers(now).await?;
        let mut out = QueueStats {
            job_types: Vec::new(),
            workers: workers.clone(),
        };
        for job_type in types {
            let stream = self.keys.stream(&job_type);
            let retention =
                i64::try_from(self.config.succeeded_retention.as_millis()).unwrap_or(i64::MAX);
            let (len, scheduled, succeeded, counters): (u64, u64, u64, HashMap<String, i64>) =
                redis::pipe()
                    .xlen(&stream)
                    .zcard(self.keys.delayed(&job_type))
                    .zcount(
                        self.keys.succeeded(&job_type),
                        now.saturating_sub(retention),
                        "+inf",
                    )
                    .hgetall(self.keys.counters(&job_type))
                    .query_async(&mut conn)
                    .await?;
            let (running, last_delivered) = if len == 0 {
                (0, None)
            } else {
                let groups: StreamInfoGroupsReply = conn.xinfo_groups(&stream).await?;
                match groups.groups.into_iter().find(|g| g.name == GROUP) {
                    Some(group) => {
                        let pending: StreamPendingReply = conn.xpending(&stream, GROUP).await?;
                        (pending.count() as u64, Some(group.last_delivered_id))
                    }
                    None => (0, None),
                }
            };
            let waiting = len.saturating_sub(running);
            let oldest_waiting_ms = if waiting == 0 {
                None
            } else {
                let start = last_delivered
                    .map(|id| format!("({id}"))
                    .unwrap_or_else(|| "-".into());
                let first: StreamRangeReply = conn.xrange_count(&stream, start, "+", 1).await?;
                first.ids.first().and_then(|e| {
                    let ms: i64 = e.id.split('-').next()?.parse().ok()?;
                    u64::try_from(now.saturating_sub(ms)).ok()
                })
            };
            let counter = |k: &str| u64::try_from(*counters.get(k).unwrap_or(&0)).unwrap_or(0);
            out.job_types.push(JobTypeStats {
                live_workers: workers.iter().filter(|w| w.job_type == job_type).count() as u64,
                job_type,
                waiting,
                scheduled,
                running,
                succeeded,
                failed_attempts: counter("failed_attempts"),
                snoozes: counter("snoozed"),
                dead: counter("dead"),
                oldest_waiting_ms,
                attempt_durations: crate::model::DurationHistogram::from_counters(&counters),
            });
        }
        Ok(out)
    }

    async fn live_workers(&self, now: i64) -> Result<Vec<WorkerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        let beats: Vec<(String, i64)> = conn
            .zrangebyscore_withscores(self.keys.workers(), now - 3_600_000, "+inf")
            .await?;
        let mut out = Vec::new();
        for (name, beat) in beats {
            let (job_type, interval): (Option<String>, Option<i64>) = conn
                .hmget(self.keys.worker(&name), &["type", "heartbeat_ms"])
                .await?;
            let window = interval.unwrap_or(5_000).saturating_mul(3).max(1_000);
            if beat >= now - window
                && let (Some(job_type), Some(last)) = (job_type, parse_ms(&beat.to_string()))
            {
                out.push(WorkerInfo {
                    name,
                    job_type,
                    last_heartbeat: last,
                });
            }
        }
        Ok(out)
    }

    /// Deletes every key under this handle's prefix. For tests and for tearing down a
    /// scratch queue; never called by workers.
    pub async fn purge_all_keys(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let mut deleted = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.keys.pattern())
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let n: u64 = conn.del(&keys).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

pub(crate) fn parse_audit(e: &redis::streams::StreamId) -> AuditEntry {
    let f = |k: &str| -> Option<String> { e.get::<String>(k).filter(|v| !v.is_empty()) };
    AuditEntry {
        entry_id: e.id.clone(),
        action: f("action").unwrap_or_default(),
        job_id: JobId::new(f("job_id").unwrap_or_default()),
        new_job_id: f("new_job_id").map(JobId::new),
        by: f("by").unwrap_or_default(),
        time: f("time")
            .and_then(|t| parse_ms(&t))
            .unwrap_or_else(Utc::now),
        job_type: f("job_type").unwrap_or_default(),
        customer: f("customer"),
        error_class: f("error_class"),
    }
}

pub(crate) fn parse_log(lines: &[String]) -> Vec<AttemptRecord> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The name to record as "who" when none is given: `$USER`, `$LOGNAME`, `$USERNAME`, else
/// the numeric uid (`uid 1000`), else `unknown`.
pub fn current_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            // Containers and cron often set no user variable: the numeric uid still says who.
            std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|ids| {
                            ids.split_whitespace()
                                .next()
                                .map(|uid| format!("uid {uid}"))
                        })
                })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
